import { act, render, screen, waitFor } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { afterEach, beforeEach, expect, vi } from "vitest";
import { App } from "../App";
import { FakeServer } from "./fakeServer";
import { FakeWebSocket } from "./fakeWebSocket";

/**
 * Gives each test of the calling file a fresh FakeServer (handed to `setUp`) and the fake
 * WebSocket in place of the browser's.
 */
export function fakeBackend(setUp: (server: FakeServer) => void): void {
  beforeEach(() => {
    const server = new FakeServer();
    server.install();
    setUp(server);
    FakeWebSocket.reset();
    vi.stubGlobal("WebSocket", FakeWebSocket);
    // No backoff wait, so a reconnect happens on the next tick instead of after a sleep.
    vi.spyOn(Math, "random").mockReturnValue(0);
  });
  afterEach(() => {
    vi.unstubAllGlobals();
  });
}

/** Renders the app and connects its socket; resolves once the header says "Live". */
export async function renderLive(socketId = "sock-1", cursor = "c-1") {
  const user = userEvent.setup();
  render(<App />);
  await waitFor(() => expect(FakeWebSocket.instances).not.toHaveLength(0));
  const socket = FakeWebSocket.latest();
  act(() => socket.connect(socketId, cursor));
  await screen.findByText("Live");
  return { user, socket };
}
