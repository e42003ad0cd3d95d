import { act, renderHook } from "@testing-library/react";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { FakeRealtime } from "../test/fakeRealtime";
import { ALICE, BOB, makeDirectMessage } from "../test/factories";
import { FakeServer } from "../test/fakeServer";
import { useDirectMessages } from "./useDirectMessages";

let server: FakeServer;

beforeEach(() => {
  server = new FakeServer();
  server.install();
  server.user = ALICE;
  server.people = [ALICE, BOB];
  server.directMessages = [makeDirectMessage(1), makeDirectMessage(2)];
});

afterEach(() => {
  vi.unstubAllGlobals();
});

async function flush() {
  for (let round = 0; round < 3; round += 1) {
    await act(() => new Promise((resolve) => setTimeout(resolve, 0)));
  }
}

function setup(viewed: boolean) {
  const realtime = new FakeRealtime();
  realtime.subscribed = true;
  const onMarkedRead = vi.fn();
  const rendered = renderHook(
    ({ viewed }) =>
      useDirectMessages({ realtime, me: ALICE.id, other: BOB.id, viewed, onSignedOut: () => {}, onMarkedRead }),
    { initialProps: { viewed } },
  );
  return { realtime, onMarkedRead, ...rendered };
}

describe("useDirectMessages", () => {
  it("loads at once when the socket is already subscribed", async () => {
    const { result } = setup(true);
    await flush();
    expect(result.current.messages.map((m) => m.id)).toEqual([1, 2]);
    expect(server.requestsTo("GET", "/api/direct-messages?with=2")).toHaveLength(1);
  });

  it("marks read only while viewed, once per newest unread message", async () => {
    const { result, rerender, onMarkedRead, realtime } = setup(false);
    await flush();
    expect(result.current.loaded).toBe(true);
    expect(server.requestsTo("POST", "/api/direct-messages/read")).toHaveLength(0);

    rerender({ viewed: true });
    await flush();
    expect(server.requestsTo("POST", "/api/direct-messages/read")).toHaveLength(1);
    expect(onMarkedRead).toHaveBeenCalledWith(BOB.id);

    rerender({ viewed: false });
    act(() =>
      realtime.emit({ kind: "direct-message", event: { type: "created", directMessage: makeDirectMessage(3) } }),
    );
    await flush();
    expect(server.requestsTo("POST", "/api/direct-messages/read")).toHaveLength(1);
    rerender({ viewed: true });
    await flush();
    expect(server.requestsTo("POST", "/api/direct-messages/read")).toHaveLength(2);
  });
});
