import { describe, expect, it } from "vitest";
import { makeMessage } from "../test/factories";
import { applyEvent, EMPTY_FEED, prependOlderPage, replaceWithPage } from "./feed";
import type { Message } from "./types";

const ids = (messages: Message[]) => messages.map((message) => message.id);

describe("applyEvent", () => {
  it("appends new messages in arrival order, not id order", () => {
    let messages = [makeMessage(1)];
    messages = applyEvent(messages, { type: "created", message: makeMessage(5) });
    messages = applyEvent(messages, { type: "created", message: makeMessage(3) });
    expect(ids(messages)).toEqual([1, 5, 3]);
  });

  it("shows a message delivered twice (POST reply, then replay) only once, where it first appeared", () => {
    let messages = [makeMessage(1), makeMessage(2)];
    messages = applyEvent(messages, { type: "created", message: makeMessage(1) });
    messages = applyEvent(messages, { type: "created", message: makeMessage(3) });
    messages = applyEvent(messages, { type: "created", message: makeMessage(2) });
    expect(ids(messages)).toEqual([1, 2, 3]);
  });

  it("replaces an updated message in place", () => {
    const messages = [makeMessage(1), makeMessage(2), makeMessage(3)];
    const next = applyEvent(messages, {
      type: "updated",
      message: makeMessage(2, { content: "fixed typo" }),
    });
    expect(ids(next)).toEqual([1, 2, 3]);
    expect(next[1]?.content).toBe("fixed typo");
  });

  it("ignores an update to a message that is not loaded", () => {
    const messages = [makeMessage(5)];
    expect(applyEvent(messages, { type: "updated", message: makeMessage(1) })).toBe(messages);
  });

  it("removes a deleted message", () => {
    const messages = [makeMessage(1), makeMessage(2), makeMessage(3)];
    expect(ids(applyEvent(messages, { type: "deleted", id: 2 }))).toEqual([1, 3]);
  });
});

describe("prependOlderPage", () => {
  it("puts the older page above, skipping messages already shown", () => {
    const state = { ...EMPTY_FEED, loaded: true, messages: [makeMessage(4), makeMessage(5)], nextBefore: 4 };
    const next = prependOlderPage(
      state,
      { messages: [makeMessage(2), makeMessage(3), makeMessage(4)], next_before: 2 },
      4,
    );
    expect(ids(next.messages)).toEqual([2, 3, 4, 5]);
    expect(next.nextBefore).toBe(2);
  });

  it("drops a page asked for a list that has since been replaced, which would leave a gap", () => {
    // Asked with before=4; meanwhile a reload replaced the list with one starting at 8.
    const state = { ...EMPTY_FEED, loaded: true, messages: [makeMessage(8), makeMessage(9)], nextBefore: 8 };
    const page = { messages: [makeMessage(2), makeMessage(3)], next_before: null };
    expect(prependOlderPage(state, page, 4)).toBe(state);
  });
});

describe("replaceWithPage", () => {
  it("re-applies what arrived during the fetch on top of the fresh page", () => {
    const page = { messages: [makeMessage(10), makeMessage(11), makeMessage(12)], next_before: 10 };
    const state = replaceWithPage(page, [
      { type: "created", message: makeMessage(12) },
      { type: "created", message: makeMessage(13) },
      { type: "deleted", id: 11 },
      { type: "updated", message: makeMessage(10, { content: "edited" }) },
    ]);
    expect(ids(state.messages)).toEqual([10, 12, 13]);
    expect(state.messages[0]?.content).toBe("edited");
    expect(state.nextBefore).toBe(10);
    expect(state.loaded).toBe(true);
  });
});
