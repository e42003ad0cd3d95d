import { appendNew, prependOlder, removeById, replaceExisting } from "./lists";
import type { FeedEvent, Message, MessagePage } from "./types";

/**
 * The feed as pure data. Every change goes through here, so the rule "a message id
 * appears at most once" holds no matter which path (socket, POST reply, history page,
 * replay after a reconnect) delivered the message.
 */
export interface FeedState {
  /** Display order: history pages oldest first, then live messages in arrival order. */
  messages: Message[];
  /** `before` for the next older page; null when the oldest message is loaded. */
  nextBefore: number | null;
  /** False until the first page has arrived. */
  loaded: boolean;
}

export const EMPTY_FEED: FeedState = { messages: [], nextBefore: null, loaded: false };

export function applyEvent(messages: Message[], event: FeedEvent): Message[] {
  switch (event.type) {
    case "created":
      // A replayed or echoed message is already on screen: keep it where it is.
      return appendNew(messages, event.message);
    case "updated":
      // An edit of a message older than the loaded history has nothing to change.
      return replaceExisting(messages, event.message);
    case "deleted":
      return removeById(messages, event.id);
  }
}

/**
 * Start over from a fresh first page, then re-apply the events that arrived while it
 * was being fetched: the page may predate any of them, and each is idempotent.
 */
export function replaceWithPage(page: MessagePage, eventsDuringFetch: FeedEvent[]): FeedState {
  const unique = prependOlder([], page.messages);
  return {
    messages: eventsDuringFetch.reduce(applyEvent, unique),
    nextBefore: page.next_before,
    loaded: true,
  };
}

/**
 * Put an older page above the list it was fetched for. `requestedBefore` is the
 * `nextBefore` the page was asked with: if the list has since been replaced (a history
 * reload after close 4400) its oldest message is elsewhere, and prepending would leave
 * a gap between the two, so the page is dropped and can be asked for again.
 */
export function prependOlderPage(
  state: FeedState,
  page: MessagePage,
  requestedBefore: number,
): FeedState {
  if (state.nextBefore !== requestedBefore) return state;
  return {
    ...state,
    messages: prependOlder(state.messages, page.messages),
    nextBefore: page.next_before,
  };
}
