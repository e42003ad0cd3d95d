import type { Conversation, DirectMessage, DirectMessageEvent, User } from "./types";

/**
 * The conversations panel as pure data: one entry per person, most recent first, with the
 * number of their messages not read yet.
 *
 * The unread counts come from the server and then follow the events. An event must never
 * count a message twice, though the same message reaches us from the loaded list, the
 * socket, a replay and our own POST reply. `GET /api/conversations` counted every message
 * up to each entry's last one, so an event for a message with an id at or below that is
 * already counted; a newer one is counted once, by id. Where an event cannot be applied
 * exactly (a message read or deleted that the loaded counts include), the state is marked
 * `stale` and the list is fetched again, so the server's count replaces the guess.
 */
export interface ConversationsState {
  conversations: Conversation[];
  loaded: boolean;
  /** Per person, the id of the newest message the loaded list had counted. */
  baseLastIds: ReadonlyMap<number, number>;
  /** Unread messages counted from events since the load: message id -> sender id. */
  countedUnread: ReadonlyMap<number, number>;
  stale: boolean;
}

export const EMPTY_CONVERSATIONS: ConversationsState = {
  conversations: [],
  loaded: false,
  baseLastIds: new Map(),
  countedUnread: new Map(),
  stale: false,
};

/** The person on the other side of `message`, as the message names them. */
export function otherPerson(message: DirectMessage, me: number): User {
  return message.sender_id === me ? message.recipient : message.sender;
}

function byRecency(conversations: Conversation[]): Conversation[] {
  // Ids ascend with time, and the server orders its list the same way.
  return conversations.slice().sort((a, b) => b.last_message.id - a.last_message.id);
}

function withEntry(conversations: Conversation[], entry: Conversation): Conversation[] {
  return byRecency([entry, ...conversations.filter((c) => c.user.id !== entry.user.id)]);
}

function created(
  state: ConversationsState,
  message: DirectMessage,
  me: number,
): ConversationsState {
  const other = otherPerson(message, me);
  const existing = state.conversations.find((c) => c.user.id === other.id);
  const counted = message.id <= (state.baseLastIds.get(other.id) ?? 0);
  const countIt =
    message.recipient_id === me &&
    message.read_at === null &&
    !counted &&
    !state.countedUnread.has(message.id);
  const newer = existing === undefined || message.id > existing.last_message.id;
  if (!countIt && !newer) return state;
  const entry: Conversation = {
    // The message carries the person as they are now (a renamed user, a new avatar).
    user: newer ? other : (existing?.user ?? other),
    last_message: newer || existing === undefined ? message : existing.last_message,
    unread_count: (existing?.unread_count ?? 0) + (countIt ? 1 : 0),
  };
  return {
    ...state,
    conversations: withEntry(state.conversations, entry),
    countedUnread: countIt
      ? new Map(state.countedUnread).set(message.id, other.id)
      : state.countedUnread,
  };
}

function updated(
  state: ConversationsState,
  message: DirectMessage,
  me: number,
): ConversationsState {
  const other = otherPerson(message, me);
  const existing = state.conversations.find((c) => c.user.id === other.id);
  if (existing === undefined) return state;
  let entry = existing;
  if (existing.last_message.id === message.id) entry = { ...entry, last_message: message };
  let { countedUnread, stale } = state;
  if (message.recipient_id === me) {
    const countedHere = countedUnread.has(message.id);
    if (message.read_at !== null && countedHere) {
      const remaining = new Map(countedUnread);
      remaining.delete(message.id);
      countedUnread = remaining;
      entry = { ...entry, unread_count: Math.max(0, entry.unread_count - 1) };
    } else if (message.read_at !== null && entry.unread_count > 0 && !countedHere) {
      // Read now, but was it among the unread the server counted? Only the server knows.
      stale = stale || message.id <= (state.baseLastIds.get(other.id) ?? 0);
    } else if (message.read_at === null && !countedHere) {
      // Marked unread again, or edited while unread: the count may or may not include it.
      stale = true;
    }
  }
  if (entry === existing && countedUnread === state.countedUnread && stale === state.stale) {
    return state;
  }
  return {
    ...state,
    conversations: state.conversations.map((c) => (c === existing ? entry : c)),
    countedUnread,
    stale,
  };
}

function deleted(state: ConversationsState, id: number): ConversationsState {
  const sender = state.countedUnread.get(id);
  const wasLast = state.conversations.some((c) => c.last_message.id === id);
  if (sender === undefined) {
    // Only the id is known: whose it was, and whether it was unread, is not.
    return state.conversations.length === 0 ? state : { ...state, stale: true };
  }
  const countedUnread = new Map(state.countedUnread);
  countedUnread.delete(id);
  return {
    ...state,
    conversations: state.conversations.map((c) =>
      c.user.id === sender ? { ...c, unread_count: Math.max(0, c.unread_count - 1) } : c,
    ),
    countedUnread,
    // The entry's last message is gone; the one before it is on the server only.
    stale: state.stale || wasLast,
  };
}

export function applyConversationEvent(
  state: ConversationsState,
  event: DirectMessageEvent,
  me: number,
): ConversationsState {
  switch (event.type) {
    case "created":
      return created(state, event.directMessage, me);
    case "updated":
      return updated(state, event.directMessage, me);
    case "deleted":
      return deleted(state, event.id);
  }
}

/** A freshly fetched list, with the events that arrived during the fetch on top. */
export function replaceConversations(
  conversations: Conversation[],
  eventsDuringFetch: DirectMessageEvent[],
  me: number,
): ConversationsState {
  const base: ConversationsState = {
    conversations: byRecency(conversations),
    loaded: true,
    baseLastIds: new Map(conversations.map((c) => [c.user.id, c.last_message.id])),
    countedUnread: new Map(),
    stale: false,
  };
  return eventsDuringFetch.reduce((state, event) => applyConversationEvent(state, event, me), base);
}

/** After `POST /api/direct-messages/read` for `userId`: nothing from them is unread. */
export function markedRead(state: ConversationsState, userId: number): ConversationsState {
  const existing = state.conversations.find((c) => c.user.id === userId);
  const countedHere = [...state.countedUnread].some(([, sender]) => sender === userId);
  if ((existing === undefined || existing.unread_count === 0) && !countedHere) return state;
  return {
    ...state,
    conversations: state.conversations.map((c) =>
      c === existing ? { ...c, unread_count: 0 } : c,
    ),
    countedUnread: new Map([...state.countedUnread].filter(([, sender]) => sender !== userId)),
  };
}

export function totalUnread(
  conversations: Conversation[],
  exceptUserId: number | null = null,
): number {
  return conversations.reduce(
    (sum, c) => (c.user.id === exceptUserId ? sum : sum + c.unread_count),
    0,
  );
}
