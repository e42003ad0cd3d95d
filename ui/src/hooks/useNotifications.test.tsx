import { act, renderHook } from "@testing-library/react";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { FakeRealtime } from "../test/fakeRealtime";
import { makeNotification } from "../test/factories";
import { FakeServer } from "../test/fakeServer";
import { ALICE } from "../test/factories";
import { useNotifications } from "./useNotifications";

let server: FakeServer;

beforeEach(() => {
  vi.useFakeTimers();
  server = new FakeServer();
  server.install();
  server.user = ALICE;
});

afterEach(() => {
  vi.useRealTimers();
  vi.unstubAllGlobals();
});

async function flush() {
  await act(() => vi.advanceTimersByTimeAsync(0));
}

function created(id: string) {
  return { kind: "notification" as const, event: { type: "created" as const, notification: makeNotification(id) } };
}

describe("useNotifications", () => {
  it("waits for the socket before loading, then loads once per fresh connection", async () => {
    const realtime = new FakeRealtime();
    renderHook(() => useNotifications({ realtime, onSignedOut: () => {} }));
    await flush();
    expect(server.requestsTo("GET", "/api/notifications")).toHaveLength(0);

    act(() => realtime.connect(false));
    await flush();
    act(() => realtime.connect(true));
    await flush();
    expect(server.requestsTo("GET", "/api/notifications").map((r) => r.path)).toEqual([
      "/api/notifications?limit=20",
    ]);
  });

  it("lets a toast go after its time, and keeps at most three", async () => {
    const realtime = new FakeRealtime();
    const { result } = renderHook(() =>
      useNotifications({ realtime, onSignedOut: () => {}, toastMs: 5000 }),
    );
    act(() => realtime.connect());
    await flush();

    act(() => realtime.emit(created("n-1")));
    await act(() => vi.advanceTimersByTimeAsync(3000));
    for (const id of ["n-2", "n-3", "n-4"]) act(() => realtime.emit(created(id)));
    expect(result.current.toasts.map((t) => t.id)).toEqual(["n-2", "n-3", "n-4"]);
    expect(result.current.unreadCount).toBe(4);

    await act(() => vi.advanceTimersByTimeAsync(5000));
    expect(result.current.toasts).toEqual([]);
    expect(result.current.notifications.map((n) => n.id)).toEqual(["n-4", "n-3", "n-2", "n-1"]);
  });

  it("takes a toast down when its notification is read elsewhere", async () => {
    const realtime = new FakeRealtime();
    const { result } = renderHook(() => useNotifications({ realtime, onSignedOut: () => {} }));
    act(() => realtime.connect());
    await flush();
    act(() => realtime.emit(created("n-1")));
    expect(result.current.toasts).toHaveLength(1);
    act(() =>
      realtime.emit({
        kind: "notification",
        event: { type: "updated", notification: makeNotification("n-1", { read_at: "2025-01-01T13:00:00Z" }) },
      }),
    );
    expect(result.current.toasts).toEqual([]);
    expect(result.current.unreadCount).toBe(0);
  });

  it("counts a notification that arrives during the first load once", async () => {
    server.notifications = [makeNotification("n-1")];
    const hold = server.hold("GET", "/api/notifications", { count: 1 });
    const realtime = new FakeRealtime();
    const { result } = renderHook(() => useNotifications({ realtime, onSignedOut: () => {} }));
    act(() => realtime.connect());
    await flush();
    expect(hold.caught).toBe(1);

    // Committed before the page was read: it is in the page and on the socket.
    act(() => realtime.emit(created("n-1")));
    act(() => hold.release());
    await flush();
    expect(result.current.notifications.map((n) => n.id)).toEqual(["n-1"]);
    expect(result.current.unreadCount).toBe(1);
  });
});
