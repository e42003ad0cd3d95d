import { act, renderHook } from "@testing-library/react";
import { describe, expect, it } from "vitest";
import { PRESENCE_CHANNEL } from "../lib/realtime";
import type { PresenceEvent, PresenceMember } from "../lib/types";
import { FakeRealtime } from "../test/fakeRealtime";
import { usePresence } from "./usePresence";

const me: PresenceMember = { id: "1", name: "Alice Liddell", avatar_url: null };
const bob: PresenceMember = { id: "2", name: "Bob Builder", avatar_url: null };
const carol: PresenceMember = { id: "3", name: "Carol Danvers", avatar_url: null };

function presence(event: PresenceEvent, channel = PRESENCE_CHANNEL) {
  return { kind: "presence" as const, channel, event };
}

function setup() {
  const realtime = new FakeRealtime();
  const hook = renderHook(() => usePresence({ realtime, channel: PRESENCE_CHANNEL, me: 1 }));
  const names = () => hook.result.current.online.map(({ member }) => member.name);
  return { realtime, hook, names };
}

describe("usePresence", () => {
  it("shows nobody until the server's list arrives, then that list, me first", () => {
    const { realtime, hook, names } = setup();
    expect(hook.result.current.loaded).toBe(false);
    expect(names()).toEqual([]);

    act(() => realtime.connect());
    act(() => realtime.emit(presence({ type: "members", members: [carol, me, bob] })));
    expect(hook.result.current.loaded).toBe(true);
    expect(hook.result.current.upToDate).toBe(true);
    expect(names()).toEqual(["Alice Liddell", "Bob Builder", "Carol Danvers"]);
    expect(hook.result.current.online[0]?.isMe).toBe(true);
  });

  it("follows joins and leaves, ignoring a leave of someone not listed", () => {
    const { realtime, hook, names } = setup();
    act(() => realtime.connect());
    act(() => realtime.emit(presence({ type: "members", members: [me] })));
    act(() => realtime.emit(presence({ type: "added", member: carol })));
    act(() => realtime.emit(presence({ type: "added", member: bob })));
    act(() => realtime.emit(presence({ type: "removed", id: "3" })));
    expect(names()).toEqual(["Alice Liddell", "Bob Builder"]);

    const before = hook.result.current.online;
    act(() => realtime.emit(presence({ type: "removed", id: "99" })));
    expect(hook.result.current.online).toBe(before);
  });

  it("never shows someone twice, however often their join arrives", () => {
    const { realtime, names } = setup();
    act(() => realtime.connect());
    act(() => realtime.emit(presence({ type: "members", members: [me, bob] })));
    for (let n = 0; n < 3; n += 1) act(() => realtime.emit(presence({ type: "added", member: bob })));
    expect(names()).toEqual(["Alice Liddell", "Bob Builder"]);
  });

  it("after a reconnect shows the old list as out of date until the new list replaces it", () => {
    const { realtime, hook, names } = setup();
    act(() => realtime.connect());
    act(() => realtime.emit(presence({ type: "members", members: [me, bob] })));

    act(() => realtime.connect(true));
    expect(hook.result.current.upToDate).toBe(false);
    expect(names()).toEqual(["Alice Liddell", "Bob Builder"]);
    // The replay of what was missed, then the new socket's own list.
    act(() => realtime.emit(presence({ type: "added", member: carol })));
    act(() => realtime.emit(presence({ type: "members", members: [me, carol] })));
    expect(hook.result.current.upToDate).toBe(true);
    expect(names()).toEqual(["Alice Liddell", "Carol Danvers"]);
  });

  it("is out of date while the socket is not live", () => {
    const { realtime, hook } = setup();
    act(() => realtime.connect());
    act(() => realtime.emit(presence({ type: "members", members: [me] })));
    realtime.state = "reconnecting";
    hook.rerender();
    expect(hook.result.current.upToDate).toBe(false);
    expect(hook.result.current.online).toHaveLength(1);
  });

  it("listens to its own presence channel only", () => {
    const { realtime, names } = setup();
    act(() => realtime.connect());
    act(() => realtime.emit(presence({ type: "members", members: [me, bob] }, "presence-other")));
    act(() => realtime.emit(presence({ type: "added", member: carol }, "presence-other")));
    expect(names()).toEqual([]);
  });
});
