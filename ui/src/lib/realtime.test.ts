import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { FakeWebSocket } from "../test/fakeWebSocket";
import {
  ALICE,
  BOB,
  makeDirectMessage,
  makeMessage,
  makeNotification,
  newMessageFrame,
} from "../test/factories";
import {
  backoffDelay,
  NOTIFICATION_CREATED,
  PRESENCE_CHANNEL,
  RealtimeConnection,
  realtimeUrl,
  routeFrame,
  userChannel,
  type Environment,
  type RealtimeHandlers,
} from "./realtime";
import type { ConnectionState, RealtimeEvent } from "./types";

const URL_BASE = "ws://pgcast.test/ws";

interface Harness {
  connection: RealtimeConnection;
  states: ConnectionState[];
  events: RealtimeEvent[];
  forbidden: string[];
  connects: { socketId: string; resumed: boolean }[];
  signedOut: ReturnType<typeof vi.fn>;
  checkSignedIn: ReturnType<typeof vi.fn<() => Promise<boolean>>>;
  network: { online: boolean };
  page: { visibilityState: DocumentVisibilityState };
  window: EventTarget;
  document: EventTarget;
}

function setup(
  options: { random?: () => number; signedIn?: boolean; channels?: string[] } = {},
): Harness {
  const states: ConnectionState[] = [];
  const events: RealtimeEvent[] = [];
  const forbidden: string[] = [];
  const connects: { socketId: string; resumed: boolean }[] = [];
  const signedOut = vi.fn();
  const checkSignedIn = vi.fn(() => Promise.resolve(options.signedIn ?? true));
  const network = { online: true };
  const page = { visibilityState: "visible" as DocumentVisibilityState };
  const win = new EventTarget();
  const doc = new EventTarget();
  const environment: Environment = {
    window: win,
    document: Object.assign(doc, {
      get visibilityState() {
        return page.visibilityState;
      },
    }),
    isOnline: () => network.online,
  };
  const handlers: RealtimeHandlers = {
    onStateChange: (state) => states.push(state),
    onEvent: (event) => events.push(event),
    onConnected: (info) => connects.push(info),
    onSignedOut: signedOut,
    onForbidden: (reason) => forbidden.push(reason),
  };
  const connection = new RealtimeConnection({
    url: URL_BASE,
    ...(options.channels ? { channels: options.channels } : {}),
    handlers,
    createSocket: (url) => new FakeWebSocket(url),
    // The top of each backoff window, so the delays are predictable.
    random: options.random ?? (() => 1),
    checkSignedIn,
    environment,
  });
  return {
    connection,
    states,
    events,
    forbidden,
    connects,
    signedOut,
    checkSignedIn,
    network,
    page,
    window: win,
    document: doc,
  };
}

/** Lets fake time pass, running due timers and the promises they settle. */
async function advance(ms: number): Promise<void> {
  await vi.advanceTimersByTimeAsync(ms);
}

beforeEach(() => {
  vi.useFakeTimers();
  FakeWebSocket.reset();
});

afterEach(() => {
  vi.useRealTimers();
});

describe("realtimeUrl", () => {
  it("uses ws:// for http pages and wss:// for https pages", () => {
    expect(realtimeUrl({ protocol: "http:", host: "localhost:8080" })).toBe("ws://localhost:8080/ws");
    expect(realtimeUrl({ protocol: "https:", host: "chat.example" })).toBe("wss://chat.example/ws");
  });
});

describe("backoffDelay", () => {
  it("is a random share (full jitter) of a doubling ceiling capped at the maximum", () => {
    expect(backoffDelay(0, () => 0, 500, 30_000)).toBe(0);
    expect(backoffDelay(0, () => 0.5, 500, 30_000)).toBe(250);
    expect(backoffDelay(3, () => 0.5, 500, 30_000)).toBe(2000);
    expect(backoffDelay(20, () => 0.5, 500, 30_000)).toBe(15_000);
  });
});

describe("RealtimeConnection", () => {
  it("goes live on the server's connected frame and exposes its socket id", () => {
    const h = setup();
    h.connection.start();

    expect(FakeWebSocket.instances).toHaveLength(1);
    expect(FakeWebSocket.latest().url).toBe(URL_BASE);
    expect(h.connection.state).toBe("connecting");
    expect(h.connection.socketId).toBeNull();

    FakeWebSocket.latest().connect("sock-1", "c-10");

    expect(h.connection.state).toBe("live");
    expect(h.connection.socketId).toBe("sock-1");
    expect(h.connection.cursor).toBe("c-10");
    expect(h.connects).toEqual([{ socketId: "sock-1", resumed: false }]);
    expect(h.states).toEqual(["connecting", "live"]);
  });

  it("turns broadcast frames into feed events and ignores frames it cannot read", () => {
    const h = setup();
    h.connection.start();
    const socket = FakeWebSocket.latest();
    socket.connect("sock-1", "c-0");
    const created = makeMessage(7);
    const edited = makeMessage(7, { content: "edited" });

    socket.send("not json");
    socket.send({ event: "new-message", channel: "messages", data: {}, cursor: "c-0b" });
    socket.send(newMessageFrame(created, "c-1"));
    socket.send({ event: "message-updated", channel: "messages", data: { message: edited }, cursor: "c-2" });
    socket.send({ event: "message-deleted", channel: "messages", data: { id: 7 }, cursor: "c-3" });

    expect(h.events).toEqual([
      { kind: "message", event: { type: "created", message: created } },
      { kind: "message", event: { type: "updated", message: edited } },
      { kind: "message", event: { type: "deleted", id: 7 } },
    ]);
    expect(h.connection.cursor).toBe("c-3");
  });

  it("reconnects after a close with growing delays, capped at 30 seconds", async () => {
    const h = setup();
    h.connection.start();
    FakeWebSocket.latest().connect("sock-1", "c-1");

    const expectedDelays = [500, 1000, 2000, 4000, 8000, 16_000, 30_000, 30_000];
    for (const delay of expectedDelays) {
      const socketsBefore = FakeWebSocket.instances.length;
      FakeWebSocket.latest().open();
      FakeWebSocket.latest().drop(1006);
      expect(h.connection.state).toBe("reconnecting");

      await advance(delay - 1);
      expect(FakeWebSocket.instances).toHaveLength(socketsBefore);
      await advance(1);
      expect(FakeWebSocket.instances).toHaveLength(socketsBefore + 1);
    }
  });

  it("resumes from the last cursor it saw, so the server replays what was missed", async () => {
    const h = setup();
    h.connection.start();
    const first = FakeWebSocket.latest();
    first.connect("sock-1", "c-10");
    first.send(newMessageFrame(makeMessage(1), "c-11"));
    first.send(newMessageFrame(makeMessage(2), "c 12/+&"));

    first.drop(1006);
    await advance(500);

    const second = FakeWebSocket.latest();
    expect(second).not.toBe(first);
    expect(second.after).toBe("c 12/+&");
    expect(second.url).toBe(`${URL_BASE}?after=${encodeURIComponent("c 12/+&")}`);

    second.connect("sock-2", "c-99");
    expect(h.connects.at(-1)).toEqual({ socketId: "sock-2", resumed: true });
    expect(h.connection.socketId).toBe("sock-2");
  });

  it("keeps its own cursor on a resumed socket until replayed frames move it on", async () => {
    const h = setup();
    h.connection.start();
    FakeWebSocket.latest().connect("sock-1", "c-10");
    FakeWebSocket.latest().drop(1006);
    await advance(500);

    // The server's head cursor must not skip broadcasts the replay has not delivered yet.
    FakeWebSocket.latest().connect("sock-2", "c-head");
    expect(h.connection.cursor).toBe("c-10");
    FakeWebSocket.latest().send(newMessageFrame(makeMessage(3), "c-11"));
    expect(h.connection.cursor).toBe("c-11");
  });

  it.each([
    [1013, "too slow"],
    [1001, "server going away"],
    [1006, "connection lost"],
  ])("reconnects with its cursor after close %i (%s)", async (code) => {
    const h = setup();
    h.connection.start();
    FakeWebSocket.latest().connect("sock-1", "c-5");

    FakeWebSocket.latest().drop(code);
    expect(h.connection.state).toBe("reconnecting");
    expect(h.connection.socketId).toBeNull();
    await advance(500);

    expect(FakeWebSocket.instances).toHaveLength(2);
    expect(FakeWebSocket.latest().after).toBe("c-5");
    expect(h.signedOut).not.toHaveBeenCalled();
  });

  it("drops its cursor on close 4400, reconnects fresh and asks for a history reload", async () => {
    const h = setup();
    h.connection.start();
    FakeWebSocket.latest().connect("sock-1", "c-old");
    FakeWebSocket.latest().drop(4400, "cursor expired");

    expect(h.connection.cursor).toBeNull();
    await advance(500);
    const fresh = FakeWebSocket.latest();
    expect(FakeWebSocket.instances).toHaveLength(2);
    expect(fresh.url).toBe(URL_BASE);

    fresh.connect("sock-2", "c-new");
    expect(h.connects.at(-1)).toEqual({ socketId: "sock-2", resumed: false });
    expect(h.connection.cursor).toBe("c-new");
  });

  it("signs out and stops on close 4401", async () => {
    const h = setup();
    h.connection.start();
    FakeWebSocket.latest().connect("sock-1", "c-1");
    FakeWebSocket.latest().drop(4401, "session expired");

    expect(h.signedOut).toHaveBeenCalledTimes(1);
    expect(h.connection.state).toBe("offline");
    await advance(120_000);
    expect(FakeWebSocket.instances).toHaveLength(1);
  });

  it("signs out when an upgrade is refused and /api/me says the session is gone", async () => {
    const h = setup({ signedIn: false });
    h.connection.start();
    FakeWebSocket.latest().refuseUpgrade();
    await advance(0);

    expect(h.checkSignedIn).toHaveBeenCalledTimes(1);
    expect(h.signedOut).toHaveBeenCalledTimes(1);
    await advance(120_000);
    expect(FakeWebSocket.instances).toHaveLength(1);
  });

  it("keeps retrying a refused upgrade while the session is still valid", async () => {
    const h = setup({ signedIn: true });
    h.connection.start();
    FakeWebSocket.latest().refuseUpgrade();
    await advance(0);
    expect(h.connection.state).toBe("reconnecting");

    await advance(500);
    expect(FakeWebSocket.instances).toHaveLength(2);
    expect(h.signedOut).not.toHaveBeenCalled();
    expect(h.checkSignedIn).toHaveBeenCalledTimes(1);
  });

  it("reports connecting, live, reconnecting, then live again", async () => {
    const h = setup();
    h.connection.start();
    FakeWebSocket.latest().connect("sock-1", "c-1");
    FakeWebSocket.latest().drop(1006);
    await advance(500);
    expect(h.connection.state).toBe("reconnecting");
    FakeWebSocket.latest().connect("sock-2", "c-1");

    expect(h.states).toEqual(["connecting", "live", "reconnecting", "live"]);
  });

  it("starts the backoff over after a socket stayed live, but not after one that flapped", async () => {
    const h = setup();
    h.connection.start();
    FakeWebSocket.latest().connect("sock-1", "c-1");
    FakeWebSocket.latest().drop(1006);
    await advance(500);

    // Live for a moment only: the next wait keeps growing.
    FakeWebSocket.latest().connect("sock-2", "c-1");
    FakeWebSocket.latest().drop(1013);
    await advance(999);
    expect(FakeWebSocket.instances).toHaveLength(2);
    await advance(1);
    expect(FakeWebSocket.instances).toHaveLength(3);

    // Live for a minute: the next wait is back at the base delay.
    FakeWebSocket.latest().connect("sock-3", "c-1");
    await advance(60_000);
    FakeWebSocket.latest().drop(1001);
    await advance(500);
    expect(FakeWebSocket.instances).toHaveLength(4);
  });

  it("reconnects at once when the network comes back or the tab becomes visible", async () => {
    const h = setup();
    h.connection.start();
    FakeWebSocket.latest().connect("sock-1", "c-1");
    // Several failures push the next wait far out.
    for (let i = 0; i < 5; i += 1) {
      FakeWebSocket.latest().drop(1006);
      await vi.runOnlyPendingTimersAsync();
    }
    FakeWebSocket.latest().drop(1006);
    const socketsBefore = FakeWebSocket.instances.length;

    h.window.dispatchEvent(new Event("online"));
    expect(FakeWebSocket.instances).toHaveLength(socketsBefore + 1);
    expect(FakeWebSocket.latest().after).toBe("c-1");

    FakeWebSocket.latest().drop(1006);
    h.page.visibilityState = "visible";
    h.document.dispatchEvent(new Event("visibilitychange"));
    expect(FakeWebSocket.instances).toHaveLength(socketsBefore + 2);
  });

  it("opens no second socket on visibility or online events while one is live", () => {
    const h = setup();
    h.connection.start();
    FakeWebSocket.latest().connect("sock-1", "c-1");

    h.window.dispatchEvent(new Event("online"));
    h.document.dispatchEvent(new Event("visibilitychange"));
    expect(FakeWebSocket.instances).toHaveLength(1);
  });

  it("waits for the network instead of retrying while the browser is offline", async () => {
    const h = setup();
    h.connection.start();
    FakeWebSocket.latest().connect("sock-1", "c-1");

    h.network.online = false;
    FakeWebSocket.latest().drop(1006);
    expect(h.connection.state).toBe("offline");
    await advance(120_000);
    expect(FakeWebSocket.instances).toHaveLength(1);

    h.network.online = true;
    h.window.dispatchEvent(new Event("online"));
    expect(FakeWebSocket.instances).toHaveLength(2);
    expect(FakeWebSocket.latest().after).toBe("c-1");
  });

  it("closes its socket on stop and never reconnects afterwards", async () => {
    const h = setup();
    h.connection.start();
    const socket = FakeWebSocket.latest();
    socket.connect("sock-1", "c-1");

    h.connection.stop();
    expect(socket.closedByClient).toEqual({ code: 1000, reason: undefined });
    expect(h.connection.state).toBe("offline");
    h.window.dispatchEvent(new Event("online"));
    await advance(120_000);
    expect(FakeWebSocket.instances).toHaveLength(1);
  });

  it("ignores events from a socket it has already replaced", async () => {
    const h = setup();
    h.connection.start();
    const first = FakeWebSocket.latest();
    first.connect("sock-1", "c-1");
    first.drop(1006);
    await advance(500);
    FakeWebSocket.latest().connect("sock-2", "c-1");

    first.send(newMessageFrame(makeMessage(9), "c-stale"));
    first.drop(1006);
    expect(h.events).toEqual([]);
    expect(h.connection.state).toBe("live");
    expect(h.connection.cursor).toBe("c-1");
  });

  it("asks for its channels in one socket, and resumes all of them from one cursor", async () => {
    const h = setup({ channels: ["messages", "private-user.42"] });
    h.connection.start();
    const first = FakeWebSocket.latest();
    expect(new URL(first.url).searchParams.get("channels")).toBe("messages,private-user.42");
    expect(first.after).toBeNull();
    first.connect("sock-1", "c-1");
    first.send(newMessageFrame(makeMessage(1), "c-2"));
    first.send({
      event: "new-direct-message",
      channel: "private-user.42",
      data: { direct_message: makeDirectMessage(5) },
      cursor: "c-3",
    });

    first.drop(1006);
    await advance(500);
    const second = FakeWebSocket.latest();
    expect(new URL(second.url).searchParams.get("channels")).toBe("messages,private-user.42");
    expect(second.after).toBe("c-3");
  });

  it("resumes a presence channel with the one cursor; the list frame itself moves no cursor", async () => {
    const h = setup({ channels: ["messages", "private-user.42", PRESENCE_CHANNEL] });
    h.connection.start();
    const first = FakeWebSocket.latest();
    expect(new URL(first.url).searchParams.get("channels")).toBe(
      `messages,private-user.42,${PRESENCE_CHANNEL}`,
    );
    first.connect("sock-1", "c-1");
    const ada = { user_id: "42", user_info: { name: "Ada", avatar_url: null } };
    const bob = { user_id: "7", user_info: { name: "Bob", avatar_url: null } };
    first.send({ event: "presence", channel: PRESENCE_CHANNEL, data: { members: [ada] } });
    expect(h.connection.cursor).toBe("c-1");
    first.send({ event: "member_added", channel: PRESENCE_CHANNEL, data: bob, cursor: "c-2" });
    expect(h.connection.cursor).toBe("c-2");

    first.drop(1006);
    await advance(500);
    const second = FakeWebSocket.latest();
    expect(new URL(second.url).searchParams.get("channels")).toBe(
      `messages,private-user.42,${PRESENCE_CHANNEL}`,
    );
    expect(second.after).toBe("c-2");
    second.connect("sock-2", "c-9");
    // Replayed before the list: a leave, then the list that replaces everything.
    second.send({ event: "member_removed", channel: PRESENCE_CHANNEL, data: { user_id: "7" }, cursor: "c-3" });
    second.send({ event: "presence", channel: PRESENCE_CHANNEL, data: { members: [ada] } });
    expect(h.connection.cursor).toBe("c-3");
    const member = { id: "42", name: "Ada", avatar_url: null };
    expect(h.events).toEqual([
      { kind: "presence", channel: PRESENCE_CHANNEL, event: { type: "members", members: [member] } },
      {
        kind: "presence",
        channel: PRESENCE_CHANNEL,
        event: { type: "added", member: { id: "7", name: "Bob", avatar_url: null } },
      },
      { kind: "presence", channel: PRESENCE_CHANNEL, event: { type: "removed", id: "7" } },
      { kind: "presence", channel: PRESENCE_CHANNEL, event: { type: "members", members: [member] } },
    ]);
  });

  it("stops on close 4403 and says which channel was refused, instead of retrying", async () => {
    const h = setup({ channels: ["messages", "private-user.42"] });
    h.connection.start();
    FakeWebSocket.latest().connect("sock-1", "c-1");
    FakeWebSocket.latest().drop(4403, "not allowed to listen to private-user.42");

    expect(h.forbidden).toEqual(["not allowed to listen to private-user.42"]);
    expect(h.connection.state).toBe("offline");
    expect(h.signedOut).not.toHaveBeenCalled();
    await advance(120_000);
    expect(FakeWebSocket.instances).toHaveLength(1);
  });
});

describe("routeFrame", () => {
  const at = "2025-01-01T12:00:00.000Z";
  const me = userChannel(ALICE.id);

  it("routes the user's channel: direct messages and Laravel's notification events", () => {
    const dm = makeDirectMessage(3, { sender: BOB, recipient: ALICE });
    expect(
      routeFrame({ event: "new-direct-message", channel: me, data: { direct_message: dm } }, at),
    ).toEqual({ kind: "direct-message", event: { type: "created", directMessage: dm } });
    expect(
      routeFrame({ event: "direct-message-updated", channel: me, data: { direct_message: dm } }, at),
    ).toEqual({ kind: "direct-message", event: { type: "updated", directMessage: dm } });
    expect(routeFrame({ event: "direct-message-deleted", channel: me, data: { id: 3 } }, at)).toEqual(
      { kind: "direct-message", event: { type: "deleted", id: 3 } },
    );

    const id = "0b6a7c1e-94a8-4f3c-9d2e-3c1f2a4b5d6e";
    expect(
      routeFrame(
        {
          event: NOTIFICATION_CREATED,
          channel: me,
          data: { title: "Invoice paid", amount: 12, id, type: "invoice-paid" },
        },
        at,
      ),
    ).toEqual({
      kind: "notification",
      event: {
        type: "created",
        notification: {
          id,
          type: "invoice-paid",
          data: { title: "Invoice paid", amount: 12 },
          read_at: null,
          created_at: at,
        },
      },
    });
    const read = makeNotification("n-1", { read_at: at });
    expect(
      routeFrame({ event: "notification-updated", channel: me, data: { notification: read } }, at),
    ).toEqual({ kind: "notification", event: { type: "updated", notification: read } });
    expect(routeFrame({ event: "notification-deleted", channel: me, data: { id } }, at)).toEqual({
      kind: "notification",
      event: { type: "deleted", id },
    });
  });

  it("ignores events on the wrong channel, unknown events and malformed data", () => {
    const dm = makeDirectMessage(3);
    expect(
      routeFrame({ event: "new-direct-message", channel: "messages", data: { direct_message: dm } }, at),
    ).toBeNull();
    expect(
      routeFrame({ event: "new-message", channel: me, data: { message: makeMessage(1) } }, at),
    ).toBeNull();
    expect(routeFrame({ event: "order-shipped", channel: "orders.1", data: {} }, at)).toBeNull();
    expect(routeFrame({ event: "new-direct-message", channel: me, data: { direct_message: { id: 1 } } }, at)).toBeNull();
    expect(routeFrame({ event: NOTIFICATION_CREATED, channel: me, data: { id: 7, type: "x" } }, at)).toBeNull();
  });

  it("routes a presence channel's list, joins and leaves", () => {
    const lobby = "presence-lobby";
    const ada = { user_id: "7", user_info: { name: "Ada", avatar_url: "https://example.com/a.png" } };
    const bob = { user_id: "8", user_info: { name: "Bob", avatar_url: null } };
    expect(routeFrame({ event: "presence", channel: lobby, data: { members: [ada, bob] } }, at)).toEqual({
      kind: "presence",
      channel: lobby,
      event: {
        type: "members",
        members: [
          { id: "7", name: "Ada", avatar_url: "https://example.com/a.png" },
          { id: "8", name: "Bob", avatar_url: null },
        ],
      },
    });
    expect(routeFrame({ event: "member_added", channel: lobby, data: bob }, at)).toEqual({
      kind: "presence",
      channel: lobby,
      event: { type: "added", member: { id: "8", name: "Bob", avatar_url: null } },
    });
    expect(routeFrame({ event: "member_removed", channel: lobby, data: { user_id: "8" } }, at)).toEqual({
      kind: "presence",
      channel: lobby,
      event: { type: "removed", id: "8" },
    });
  });

  it("reads a presence member leniently: a numeric id, missing info, a bad avatar", () => {
    const lobby = "presence-lobby";
    const route = (data: Record<string, unknown>) => routeFrame({ event: "member_added", channel: lobby, data }, at);
    expect(route({ user_id: 9 })).toEqual({
      kind: "presence",
      channel: lobby,
      event: { type: "added", member: { id: "9", name: "User 9", avatar_url: null } },
    });
    expect(route({ user_id: "9", user_info: { name: "  ", avatar_url: 12 } })).toEqual({
      kind: "presence",
      channel: lobby,
      event: { type: "added", member: { id: "9", name: "User 9", avatar_url: null } },
    });
  });

  it("ignores presence frames it cannot read, and presence events on other channels", () => {
    const lobby = "presence-lobby";
    const ada = { user_id: "7", user_info: { name: "Ada", avatar_url: null } };
    expect(routeFrame({ event: "member_added", channel: lobby, data: { user_info: {} } }, at)).toBeNull();
    expect(routeFrame({ event: "member_added", channel: lobby, data: { user_id: "" } }, at)).toBeNull();
    expect(routeFrame({ event: "member_removed", channel: lobby, data: {} }, at)).toBeNull();
    expect(routeFrame({ event: "presence", channel: lobby, data: { members: "all" } }, at)).toBeNull();
    // One unreadable member spoils the list: replacing it with a partial one would drop people.
    expect(routeFrame({ event: "presence", channel: lobby, data: { members: [ada, { name: "x" }] } }, at)).toBeNull();
    expect(routeFrame({ event: "member_added", channel: "messages", data: ada }, at)).toBeNull();
    expect(routeFrame({ event: "member_added", channel: "orders.1", data: ada }, at)).toBeNull();
    // Anything else written to a presence channel (from SQL, say) is no change of members.
    expect(routeFrame({ event: "order-shipped", channel: lobby, data: ada }, at)).toBeNull();
  });

  it("gives a notification that arrives live the time it arrived", () => {
    const h = setup({ channels: ["messages", me] });
    h.connection.start();
    const socket = FakeWebSocket.latest();
    socket.connect("sock-1", "c-1");
    vi.setSystemTime(Date.parse("2025-03-04T05:06:07Z"));
    socket.send({
      event: NOTIFICATION_CREATED,
      channel: me,
      data: { id: "n-9", type: "ping" },
      cursor: "c-2",
    });
    expect(h.events).toEqual([
      {
        kind: "notification",
        event: {
          type: "created",
          notification: {
            id: "n-9",
            type: "ping",
            data: {},
            read_at: null,
            created_at: "2025-03-04T05:06:07.000Z",
          },
        },
      },
    ]);
  });
});
