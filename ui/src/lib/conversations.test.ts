import { describe, expect, it } from "vitest";
import { ALICE, BOB, CAROL, makeDirectMessage } from "../test/factories";
import {
  applyConversationEvent,
  EMPTY_CONVERSATIONS,
  markedRead,
  replaceConversations,
  totalUnread,
  type ConversationsState,
} from "./conversations";
import type { Conversation, DirectMessage, DirectMessageEvent } from "./types";

const me = ALICE.id;
const fromBob = (id: number, overrides: Partial<DirectMessage> = {}) =>
  makeDirectMessage(id, { sender: BOB, recipient: ALICE, ...overrides });
const toBob = (id: number) => makeDirectMessage(id, { sender: ALICE, recipient: BOB });
const fromCarol = (id: number) => makeDirectMessage(id, { sender: CAROL, recipient: ALICE });
const created = (directMessage: DirectMessage): DirectMessageEvent => ({ type: "created", directMessage });
const updated = (directMessage: DirectMessage): DirectMessageEvent => ({ type: "updated", directMessage });

function apply(state: ConversationsState, ...events: DirectMessageEvent[]): ConversationsState {
  return events.reduce((current, event) => applyConversationEvent(current, event, me), state);
}

const summary = (state: ConversationsState) =>
  state.conversations.map((c) => [c.user.name, c.last_message.id, c.unread_count]);

function loaded(conversations: Conversation[]): ConversationsState {
  return replaceConversations(conversations, [], me);
}

describe("conversations", () => {
  it("puts a new message's conversation on top and counts it unread once, however often it arrives", () => {
    let state = loaded([
      { user: CAROL, last_message: fromCarol(5), unread_count: 1 },
      { user: BOB, last_message: fromBob(3), unread_count: 0 },
    ]);
    state = apply(state, created(fromBob(7)), created(fromBob(7)));
    // A replay after a reconnect delivers it once more.
    state = apply(state, created(fromBob(7)));
    expect(summary(state)).toEqual([
      ["Bob Builder", 7, 1],
      ["Carol Danvers", 5, 1],
    ]);
  });

  it("does not count a message the loaded list already counted", () => {
    // Fetched after message 4 was committed, but its event arrives after the answer.
    const state = apply(
      loaded([{ user: BOB, last_message: fromBob(4), unread_count: 2 }]),
      created(fromBob(3)),
      created(fromBob(4)),
    );
    expect(summary(state)).toEqual([["Bob Builder", 4, 2]]);
    expect(state.stale).toBe(false);
  });

  it("starts a conversation with someone new, and never counts my own messages", () => {
    let state = apply(loaded([]), created(fromCarol(1)));
    state = apply(state, created(toBob(2)));
    expect(summary(state)).toEqual([
      ["Bob Builder", 2, 0],
      ["Carol Danvers", 1, 1],
    ]);
    expect(totalUnread(state.conversations)).toBe(1);
    expect(totalUnread(state.conversations, CAROL.id)).toBe(0);
  });

  it("uncounts a message it counted once it is read, but only once", () => {
    const readAt = "2025-01-01T13:00:00.000Z";
    let state = apply(loaded([]), created(fromBob(8)), created(fromBob(9)));
    state = apply(state, updated(fromBob(8, { read_at: readAt })), updated(fromBob(8, { read_at: readAt })));
    expect(summary(state)).toEqual([["Bob Builder", 9, 1]]);
    expect(state.stale).toBe(false);
  });

  it("asks the server again when a message the server counted is read", () => {
    const state = apply(
      loaded([{ user: BOB, last_message: fromBob(4), unread_count: 2 }]),
      updated(fromBob(3, { read_at: "2025-01-01T13:00:00.000Z" })),
    );
    expect(state.stale).toBe(true);
    // The server's answer replaces the guess.
    expect(replaceConversations([{ user: BOB, last_message: fromBob(4), unread_count: 1 }], [], me).stale).toBe(
      false,
    );
  });

  it("shows an edit of the last message, and someone reading mine changes no count", () => {
    let state = apply(loaded([]), created(toBob(2)));
    const read = { ...toBob(2), content: "edited", read_at: "2025-01-01T13:00:00.000Z" };
    state = apply(state, updated(read));
    expect(state.conversations[0]?.last_message).toEqual(read);
    expect(state.conversations[0]?.unread_count).toBe(0);
    expect(state.stale).toBe(false);
  });

  it("after marking a conversation read, its broadcasts change nothing more", () => {
    const readAt = "2025-01-01T13:00:00.000Z";
    let state = loaded([{ user: BOB, last_message: fromBob(4), unread_count: 2 }]);
    state = apply(state, created(fromBob(5)));
    expect(summary(state)).toEqual([["Bob Builder", 5, 3]]);
    state = markedRead(state, BOB.id);
    state = apply(
      state,
      updated(fromBob(3, { read_at: readAt })),
      updated(fromBob(4, { read_at: readAt })),
      updated(fromBob(5, { read_at: readAt })),
    );
    expect(summary(state)).toEqual([["Bob Builder", 5, 0]]);
    expect(state.stale).toBe(false);
  });

  it("re-applies what arrived during the fetch without counting twice", () => {
    const state = replaceConversations(
      [{ user: BOB, last_message: fromBob(6), unread_count: 1 }],
      [created(fromBob(6)), created(fromBob(7))],
      me,
    );
    expect(summary(state)).toEqual([["Bob Builder", 7, 2]]);
  });

  it("asks the server again after a deletion, which names only the id", () => {
    const state = apply(
      loaded([{ user: BOB, last_message: fromBob(4), unread_count: 1 }]),
      { type: "deleted", id: 4 },
    );
    expect(state.stale).toBe(true);
    expect(apply(EMPTY_CONVERSATIONS, { type: "deleted", id: 4 })).toBe(EMPTY_CONVERSATIONS);
  });
});
