import { act, render, screen, waitFor, within } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { App } from "./App";
import { ALICE, BOB, makeMessage, newMessageFrame } from "./test/factories";
import { error, FakeServer } from "./test/fakeServer";
import { FakeWebSocket } from "./test/fakeWebSocket";

let server: FakeServer;

beforeEach(() => {
  server = new FakeServer();
  server.install();
  FakeWebSocket.reset();
  vi.stubGlobal("WebSocket", FakeWebSocket);
  // No backoff wait, so reconnects happen on the next tick instead of after a sleep.
  vi.spyOn(Math, "random").mockReturnValue(0);
});

afterEach(() => {
  vi.unstubAllGlobals();
});

function feed() {
  return within(screen.getByRole("log", { name: "Messages" }));
}

function feedContents(): string[] {
  return feed()
    .queryAllByRole("listitem")
    .map((item) => item.querySelector(".message-content")?.textContent ?? "");
}

/** Renders the app signed in, with history loaded and the socket live. */
async function renderLive(socketId = "sock-1", cursor = "c-1") {
  server.user ??= ALICE;
  const user = userEvent.setup();
  render(<App />);
  await screen.findByText("Connecting…");
  const socket = FakeWebSocket.latest();
  act(() => socket.connect(socketId, cursor));
  await screen.findByText("Live");
  await waitFor(() => expect(server.requestsTo("GET", "/api/messages")).toHaveLength(2));
  await waitFor(() => expect(screen.getByRole("log")).toHaveAttribute("aria-busy", "false"));
  return { user, socket };
}

describe("signing in", () => {
  it("signs in with the dev-login form and shows the live feed", async () => {
    server.messages = [makeMessage(1, { content: "welcome" })];
    const user = userEvent.setup();
    render(<App />);

    await user.type(await screen.findByLabelText("Email"), "ada@example.com");
    await user.type(screen.getByLabelText("Name"), "Ada Lovelace");
    await user.click(screen.getByRole("button", { name: "Sign in" }));

    expect(await screen.findByText("Ada Lovelace")).toBeInTheDocument();
    expect(await feed().findByText("welcome")).toBeInTheDocument();
    const [login] = server.requestsTo("POST", "/auth/dev-login");
    expect(login?.body).toEqual({ email: "ada@example.com", name: "Ada Lovelace" });
    expect(login?.headers.get("Content-Type")).toBe("application/json");
    expect(screen.queryByRole("link", { name: "Sign in with WorkOS" })).toBeNull();
  });

  it("offers WorkOS sign-in when the server has it, and no dev form when it is off", async () => {
    server.config = { auth: { workos: true, dev_login: false }, max_message_chars: 10_000 };
    render(<App />);

    const link = await screen.findByRole("link", { name: "Sign in with WorkOS" });
    expect(link).toHaveAttribute("href", "/auth/login");
    expect(screen.queryByLabelText("Email")).toBeNull();
  });

  it("signs out with a POST to /auth/logout", async () => {
    await renderLive();
    const form = screen.getByRole("button", { name: "Sign out" }).closest("form");
    expect(form).toHaveAttribute("method", "post");
    expect(form).toHaveAttribute("action", "/auth/logout");
  });
});

describe("the live feed", () => {
  it("shows the latest history, then live messages at the bottom, edits in place and deletions", async () => {
    server.messages = [makeMessage(1), makeMessage(2), makeMessage(3)];
    const { socket } = await renderLive();
    expect(feedContents()).toEqual(["message 1", "message 2", "message 3"]);

    act(() => socket.send(newMessageFrame(makeMessage(4, { user: BOB, content: "from bob" }), "c-2")));
    const last = feed().getAllByRole("listitem").at(-1);
    expect(last).toHaveTextContent("Bob Builder");
    expect(last).toHaveTextContent("from bob");

    act(() =>
      socket.send({
        event: "message-updated",
        channel: "messages",
        data: { message: makeMessage(1, { content: "edited first" }) },
        cursor: "c-3",
      }),
    );
    act(() =>
      socket.send({ event: "message-deleted", channel: "messages", data: { id: 2 }, cursor: "c-4" }),
    );
    expect(feedContents()).toEqual(["edited first", "message 3", "from bob"]);
  });

  it("shows a posted message once, though the socket and a replay deliver it again", async () => {
    const { user, socket } = await renderLive("sock-A", "c-1");

    await user.type(screen.getByLabelText("Message"), "hello from me{Enter}");
    expect(await feed().findByText("hello from me")).toBeInTheDocument();

    const [post] = server.requestsTo("POST", "/api/messages");
    expect(post?.body).toEqual({ content: "hello from me" });
    expect(post?.headers.get("Content-Type")).toBe("application/json");
    expect(post?.headers.get("X-Socket-ID")).toBe("sock-A");

    const posted = server.messages.at(-1)!;
    act(() => socket.send(newMessageFrame(posted, "c-2")));
    expect(feed().getAllByText("hello from me")).toHaveLength(1);

    act(() => socket.drop(1006));
    expect(screen.getByText("Reconnecting…")).toBeInTheDocument();
    await waitFor(() => expect(FakeWebSocket.instances).toHaveLength(2));
    const resumed = FakeWebSocket.latest();
    expect(resumed.after).toBe("c-2");

    act(() => resumed.connect("sock-B", "c-9"));
    act(() => resumed.send(newMessageFrame(posted, "c-2")));
    expect(await screen.findByText("Live")).toBeInTheDocument();
    expect(feed().getAllByText("hello from me")).toHaveLength(1);
  });

  it("prepends older pages on request and stops when history is exhausted", async () => {
    server.messages = Array.from({ length: 60 }, (_, index) => makeMessage(index + 1));
    const { user } = await renderLive();
    expect(feedContents()).toHaveLength(50);
    expect(feedContents()[0]).toBe("message 11");

    await user.click(feed().getByRole("button", { name: "Load older messages" }));

    await waitFor(() => expect(feedContents()).toHaveLength(60));
    expect(server.requestsTo("GET", "/api/messages?before=11")).toHaveLength(1);
    expect(feedContents().slice(0, 2)).toEqual(["message 1", "message 2"]);
    expect(feedContents().at(-1)).toBe("message 60");
    expect(feed().queryByRole("button", { name: "Load older messages" })).toBeNull();
  });

  it("reloads history when the server cannot resume its cursor (4400)", async () => {
    server.messages = [makeMessage(1), makeMessage(2, { content: "soon deleted" })];
    const { socket } = await renderLive("sock-1", "c-1");
    expect(feedContents()).toEqual(["message 1", "soon deleted"]);

    // While the socket was away: one message deleted, one written.
    server.messages = [makeMessage(1), makeMessage(3, { content: "written while away" })];
    act(() => socket.drop(4400, "cursor too old"));
    await waitFor(() => expect(FakeWebSocket.instances).toHaveLength(2));
    const fresh = FakeWebSocket.latest();
    expect(fresh.after).toBeNull();

    act(() => fresh.connect("sock-2", "c-50"));
    await waitFor(() => expect(feedContents()).toEqual(["message 1", "written while away"]));
  });

  it("returns to sign-in when the socket is refused for an ended session (4401)", async () => {
    const { socket } = await renderLive();
    server.user = null;
    act(() => socket.drop(4401, "session ended"));
    expect(await screen.findByLabelText("Email")).toBeInTheDocument();
  });
});

describe("posting", () => {
  it("keeps the draft and shows the reason when the server refuses it", async () => {
    const { user } = await renderLive();
    server.nextPostReply = error(422, "content_empty", "A message needs some text.");

    await user.type(screen.getByLabelText("Message"), "  x  {Enter}");

    expect(await screen.findByRole("alert")).toHaveTextContent("A message needs some text.");
    expect(screen.getByLabelText("Message")).toHaveValue("  x  ");
    expect(feed().queryByText(/x/)).toBeNull();
  });

  it("returns to sign-in when posting finds the session gone (401)", async () => {
    const { user } = await renderLive();
    server.nextPostReply = error(401, "unauthenticated", "Sign in first.");

    await user.type(screen.getByLabelText("Message"), "anyone there?{Enter}");

    expect(await screen.findByLabelText("Email")).toBeInTheDocument();
    expect(screen.queryByLabelText("Message")).toBeNull();
  });
});
