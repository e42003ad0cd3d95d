import { describe, expect, it } from "vitest";
import {
  applyPresenceEvent,
  EMPTY_PRESENCE,
  memberAsUser,
  onlineForDisplay,
  presenceReconnected,
  type PresenceState,
} from "./presence";
import type { PresenceEvent, PresenceMember } from "./types";

const alice: PresenceMember = { id: "1", name: "Alice Liddell", avatar_url: null };
const bob: PresenceMember = { id: "2", name: "Bob Builder", avatar_url: null };
const carol: PresenceMember = { id: "3", name: "Carol Danvers", avatar_url: null };

function apply(state: PresenceState, ...events: PresenceEvent[]): PresenceState {
  return events.reduce(applyPresenceEvent, state);
}

const ids = (state: PresenceState) => state.members.map((member) => member.id);

describe("applyPresenceEvent", () => {
  it("is not loaded until the server's list arrives, which it then shows", () => {
    expect(EMPTY_PRESENCE.loaded).toBe(false);
    const state = apply(EMPTY_PRESENCE, { type: "members", members: [alice, bob] });
    expect(state).toEqual({ members: [alice, bob], loaded: true, current: true });
  });

  it("keeps the list of the last socket, out of date, until a new socket sends its own", () => {
    const before = apply(EMPTY_PRESENCE, { type: "members", members: [alice, bob] });
    const reconnected = presenceReconnected(before);
    expect(reconnected).toEqual({ members: [alice, bob], loaded: true, current: false });
    expect(presenceReconnected(reconnected)).toBe(reconnected);
    // What the new socket replays applies to the old list; its own list then replaces it.
    const replayed = apply(reconnected, { type: "removed", id: "2" }, { type: "added", member: carol });
    expect(replayed.current).toBe(false);
    expect(apply(replayed, { type: "members", members: [carol] })).toEqual({
      members: [carol],
      loaded: true,
      current: true,
    });
  });

  it("replaces the whole list with each presence frame (as after a reconnect)", () => {
    const before = apply(
      EMPTY_PRESENCE,
      { type: "members", members: [alice, bob] },
      { type: "added", member: carol },
    );
    const after = apply(before, { type: "members", members: [alice, carol] });
    expect(ids(after)).toEqual(["1", "3"]);
    expect(apply(after, { type: "members", members: [] }).members).toEqual([]);
  });

  it("adds and removes members", () => {
    const state = apply(
      EMPTY_PRESENCE,
      { type: "members", members: [alice] },
      { type: "added", member: bob },
      { type: "added", member: carol },
      { type: "removed", id: "2" },
    );
    expect(ids(state)).toEqual(["1", "3"]);
  });

  it("ignores the removal of someone it does not list, changing nothing", () => {
    const state = apply(EMPTY_PRESENCE, { type: "members", members: [alice, bob] });
    expect(applyPresenceEvent(state, { type: "removed", id: "99" })).toBe(state);
  });

  it("never lists a user twice: a repeated join updates them in place", () => {
    const renamed = { ...bob, name: "Robert Builder" };
    const state = apply(
      EMPTY_PRESENCE,
      { type: "members", members: [alice, bob] },
      { type: "added", member: bob },
      { type: "added", member: renamed },
    );
    expect(state.members).toEqual([alice, renamed]);
    // The same join again (a replay) changes nothing at all.
    expect(applyPresenceEvent(state, { type: "added", member: renamed })).toBe(state);
  });

  it("keeps one entry per user when the list itself names someone twice", () => {
    const state = apply(EMPTY_PRESENCE, {
      type: "members",
      members: [alice, bob, { ...alice, name: "Alice L." }],
    });
    expect(state.members).toEqual([{ ...alice, name: "Alice L." }, bob]);
  });

  it("applies joins and leaves that come before the first list (a replay) too", () => {
    const state = apply(
      EMPTY_PRESENCE,
      { type: "added", member: bob },
      { type: "removed", id: "2" },
      { type: "added", member: carol },
    );
    expect(ids(state)).toEqual(["3"]);
    expect(state.loaded).toBe(false);
  });
});

describe("onlineForDisplay", () => {
  it("puts the signed-in user first, marked, then everyone else by name", () => {
    const zed = { id: "10", name: "zed", avatar_url: null };
    const shown = onlineForDisplay([carol, zed, bob, alice], 2);
    expect(shown.map(({ member, isMe }) => [member.name, isMe])).toEqual([
      ["Bob Builder", true],
      ["Alice Liddell", false],
      ["Carol Danvers", false],
      ["zed", false],
    ]);
  });

  it("orders people of the same name by id, so the order never flickers", () => {
    const twin = { id: "12", name: "Alice Liddell", avatar_url: null };
    const other = { id: "4", name: "Alice Liddell", avatar_url: null };
    const shown = onlineForDisplay([twin, other], 1);
    expect(shown.map(({ member }) => member.id)).toEqual(["4", "12"]);
  });
});

describe("memberAsUser", () => {
  it("gives a pgcast user id back as a number", () => {
    expect(memberAsUser({ id: "7", name: "Ada", avatar_url: "https://example.com/a.png" })).toEqual({
      id: 7,
      name: "Ada",
      avatar_url: "https://example.com/a.png",
    });
  });

  it("is null for an id that is not a pgcast user's", () => {
    expect(memberAsUser({ id: "guest-1", name: "Guest", avatar_url: null })).toBeNull();
    expect(memberAsUser({ id: "1.5", name: "Guest", avatar_url: null })).toBeNull();
  });
});
