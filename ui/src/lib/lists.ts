/**
 * List rules shared by every live list (the feed, a conversation, notifications): an id
 * appears at most once, whichever path (socket, POST reply, history page, replay after a
 * reconnect) delivered it. Each returns the same array when nothing changed.
 */

interface Identified<K> {
  id: K;
}

/** Appends `item` unless its id is already shown (a replay or an echo of our own write). */
export function appendNew<K, T extends Identified<K>>(items: T[], item: T): T[] {
  if (items.some((existing) => existing.id === item.id)) return items;
  return [...items, item];
}

/** Replaces the item with `item`'s id in place; one that is not loaded has nothing to change. */
export function replaceExisting<K, T extends Identified<K>>(items: T[], item: T): T[] {
  const index = items.findIndex((existing) => existing.id === item.id);
  if (index === -1) return items;
  const next = items.slice();
  next[index] = item;
  return next;
}

export function removeById<K, T extends Identified<K>>(items: T[], id: K): T[] {
  if (!items.some((existing) => existing.id === id)) return items;
  return items.filter((existing) => existing.id !== id);
}

/** Puts `older` above `items`, skipping what is already shown (and repeats within `older`). */
export function prependOlder<K, T extends Identified<K>>(items: T[], older: T[]): T[] {
  const seen = new Set(items.map((item) => item.id));
  const fresh: T[] = [];
  for (const item of older) {
    if (seen.has(item.id)) continue;
    seen.add(item.id);
    fresh.push(item);
  }
  return fresh.length === 0 ? items : [...fresh, ...items];
}

/** Puts `older` below `items` (for lists shown newest first), skipping what is shown. */
export function appendOlder<K, T extends Identified<K>>(items: T[], older: T[]): T[] {
  const seen = new Set(items.map((item) => item.id));
  const fresh: T[] = [];
  for (const item of older) {
    if (seen.has(item.id)) continue;
    seen.add(item.id);
    fresh.push(item);
  }
  return fresh.length === 0 ? items : [...items, ...fresh];
}
