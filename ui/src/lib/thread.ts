import { appendNew, prependOlder, removeById, replaceExisting } from "./lists";
import type { DirectMessage, DirectMessageEvent, DirectMessagePage } from "./types";

/**
 * One conversation (the signed-in user and one other person) as pure data: history pages
 * oldest first, then live messages in arrival order, each id once.
 */
export interface ThreadState {
  messages: DirectMessage[];
  nextBefore: number | null;
  loaded: boolean;
}

export const EMPTY_THREAD: ThreadState = { messages: [], nextBefore: null, loaded: false };

/** Whether `message` is between the signed-in user `me` and `other`. */
export function isBetween(message: DirectMessage, me: number, other: number): boolean {
  return (
    (message.sender_id === me && message.recipient_id === other) ||
    (message.sender_id === other && message.recipient_id === me)
  );
}

/** Applies an event to the thread with `other`; events of other conversations change nothing. */
export function applyThreadEvent(
  messages: DirectMessage[],
  event: DirectMessageEvent,
  me: number,
  other: number,
): DirectMessage[] {
  switch (event.type) {
    case "created":
      return isBetween(event.directMessage, me, other)
        ? appendNew(messages, event.directMessage)
        : messages;
    case "updated":
      return replaceExisting(messages, event.directMessage);
    case "deleted":
      return removeById(messages, event.id);
  }
}

export function replaceThread(
  page: DirectMessagePage,
  eventsDuringFetch: DirectMessageEvent[],
  me: number,
  other: number,
): ThreadState {
  return {
    messages: eventsDuringFetch.reduce(
      (messages, event) => applyThreadEvent(messages, event, me, other),
      prependOlder([], page.direct_messages),
    ),
    nextBefore: page.next_before,
    loaded: true,
  };
}

/** As the feed's: a page asked for a list that has since been replaced is dropped. */
export function prependOlderThreadPage(
  state: ThreadState,
  page: DirectMessagePage,
  requestedBefore: number,
): ThreadState {
  if (state.nextBefore !== requestedBefore) return state;
  return {
    ...state,
    messages: prependOlder(state.messages, page.direct_messages),
    nextBefore: page.next_before,
  };
}

/** The newest message from `other` that `me` has not read yet, or null. */
export function newestUnreadFrom(messages: DirectMessage[], me: number): number | null {
  let newest: number | null = null;
  for (const message of messages) {
    if (message.recipient_id === me && message.read_at === null) {
      newest = newest === null ? message.id : Math.max(newest, message.id);
    }
  }
  return newest;
}
