import { describe, expect, it } from "vitest";
import { ALICE, BOB, CAROL, makeDirectMessage } from "../test/factories";
import { applyThreadEvent, newestUnreadFrom, prependOlderThreadPage, replaceThread } from "./thread";
import type { DirectMessage } from "./types";

const me = ALICE.id;
const ids = (messages: DirectMessage[]) => messages.map((m) => m.id);

describe("a conversation", () => {
  it("takes only the messages between its two people, each once", () => {
    let messages: DirectMessage[] = [];
    for (const message of [
      makeDirectMessage(1, { sender: BOB, recipient: ALICE }),
      makeDirectMessage(2, { sender: ALICE, recipient: BOB }),
      makeDirectMessage(3, { sender: CAROL, recipient: ALICE }),
      makeDirectMessage(1, { sender: BOB, recipient: ALICE }),
    ]) {
      messages = applyThreadEvent(messages, { type: "created", directMessage: message }, me, BOB.id);
    }
    expect(ids(messages)).toEqual([1, 2]);
  });

  it("applies edits, read marks and deletions in place", () => {
    const first = makeDirectMessage(1);
    let messages = [first, makeDirectMessage(2)];
    const read = { ...first, read_at: "2025-01-01T13:00:00.000Z" };
    messages = applyThreadEvent(messages, { type: "updated", directMessage: read }, me, BOB.id);
    expect(messages[0]).toEqual(read);
    messages = applyThreadEvent(messages, { type: "deleted", id: 2 }, me, BOB.id);
    expect(ids(messages)).toEqual([1]);
  });

  it("re-applies events from during the fetch, and drops an older page asked for another list", () => {
    const state = replaceThread(
      { direct_messages: [makeDirectMessage(5), makeDirectMessage(6)], next_before: 5 },
      [
        { type: "created", directMessage: makeDirectMessage(6) },
        { type: "created", directMessage: makeDirectMessage(7) },
      ],
      me,
      BOB.id,
    );
    expect(ids(state.messages)).toEqual([5, 6, 7]);
    const older = prependOlderThreadPage(state, { direct_messages: [makeDirectMessage(4)], next_before: null }, 5);
    expect(ids(older.messages)).toEqual([4, 5, 6, 7]);
    expect(prependOlderThreadPage(state, { direct_messages: [], next_before: null }, 2)).toBe(state);
  });

  it("knows the newest message to me that is still unread", () => {
    expect(
      newestUnreadFrom(
        [
          makeDirectMessage(1),
          makeDirectMessage(2, { read_at: "2025-01-01T13:00:00.000Z" }),
          makeDirectMessage(3, { sender: ALICE, recipient: BOB }),
        ],
        me,
      ),
    ).toBe(1);
    expect(newestUnreadFrom([makeDirectMessage(3, { sender: ALICE, recipient: BOB })], me)).toBeNull();
  });
});
