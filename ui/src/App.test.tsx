import { act, render, screen, waitFor, within } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { describe, expect, it } from "vitest";
import { App } from "./App";
import { ALICE, BOB, makeMessage, newMessageFrame } from "./test/factories";
import { error, FakeServer } from "./test/fakeServer";
import { FakeWebSocket } from "./test/fakeWebSocket";
import { fakeBackend } from "./test/liveApp";

let server: FakeServer;

fakeBackend((fresh) => {
  server = fresh;
});

function feed() {
  return within(screen.getByRole("log", { name: "Messages" }));
}

function feedContents(): string[] {
  return feed()
    .queryAllByRole("listitem")
    .map((item) => item.querySelector(".message-content")?.textContent ?? "");
}

/** Lets pending fetches, their `.json()` and the renders they cause run to completion. */
async function settle() {
  for (let round = 0; round < 3; round += 1) {
    await act(() => new Promise((resolve) => setTimeout(resolve, 0)));
  }
}

/** The socket the signed-in feed opens (its effect may run just after the first paint). */
async function openedSocket(): Promise<FakeWebSocket> {
  await waitFor(() => expect(FakeWebSocket.instances).not.toHaveLength(0));
  return FakeWebSocket.latest();
}

/** First-page history requests (no `before`), the ones that replace the feed. */
function firstPageRequests() {
  return server.requestsTo("GET", "/api/messages?limit=");
}

/** Renders the app signed in, with history loaded and the socket live. */
async function renderLive(socketId = "sock-1", cursor = "c-1") {
  server.user ??= ALICE;
  const user = userEvent.setup();
  render(<App />);
  await screen.findByText("Connecting…");
  const socket = await openedSocket();
  act(() => socket.connect(socketId, cursor));
  await screen.findByText("Live");
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
    const socket = await openedSocket();
    act(() => socket.connect("sock-1", "c-1"));
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

describe("history and the socket", () => {
  it("fetches the first page once per page load, after the socket is subscribed", async () => {
    server.user = ALICE;
    server.messages = [makeMessage(1, { content: "hello" })];
    render(<App />);
    await screen.findByText("Connecting…");
    const socket = await openedSocket();
    await settle();

    // Nothing committed before `connected` is guaranteed to reach the socket, so a page
    // fetched now would need a second fetch later, which would replace the feed.
    expect(server.requestsTo("GET", "/api/messages")).toHaveLength(0);
    expect(feed().getByText("Loading messages…")).toBeInTheDocument();
    expect(screen.getByRole("log")).toHaveAttribute("aria-busy", "true");

    act(() => socket.connect("sock-1", "c-1"));
    expect(await feed().findByText("hello")).toBeInTheDocument();
    await settle();
    expect(server.requestsTo("GET", "/api/messages").map((request) => request.path)).toEqual([
      "/api/messages?limit=50",
    ]);
  });

  it("keeps an older page the reader loaded: no later first-page answer replaces the feed", async () => {
    server.messages = Array.from({ length: 120 }, (_, index) => makeMessage(index + 1));
    // Any first-page request after the first one is answered late, after the older page.
    const late = server.hold("GET", "/api/messages?limit=", { skip: 1 });
    const { user, socket } = await renderLive();
    expect(feedContents()).toHaveLength(50);

    await user.click(feed().getByRole("button", { name: "Load older messages" }));
    await waitFor(() => expect(feedContents()).toHaveLength(100));
    act(() => socket.send(newMessageFrame(makeMessage(121, { content: "live one" }), "c-2")));

    act(() => late.release());
    await settle();
    expect(feedContents()).toHaveLength(101);
    expect(feedContents()[0]).toBe("message 21");
    expect(feedContents().at(-1)).toBe("live one");
    expect(late.caught).toBe(0);
    expect(firstPageRequests()).toHaveLength(1);

    // A resumed socket replays what it missed instead of reloading history.
    act(() => socket.drop(1006));
    await waitFor(() => expect(FakeWebSocket.instances).toHaveLength(2));
    act(() => FakeWebSocket.latest().connect("sock-2", "c-9"));
    await screen.findByText("Live");
    await settle();
    expect(firstPageRequests()).toHaveLength(1);
    expect(feedContents()).toHaveLength(101);
    expect(feedContents()[0]).toBe("message 21");
  });

  it("drops an older page that answers after a 4400 reload replaced the feed, instead of leaving a gap", async () => {
    server.messages = Array.from({ length: 60 }, (_, index) => makeMessage(index + 1));
    const { user, socket } = await renderLive("sock-1", "c-1");
    expect(feedContents()[0]).toBe("message 11");

    // While the socket was away, five messages were written; its cursor is refused.
    for (let id = 61; id <= 65; id += 1) server.messages.push(makeMessage(id));
    const reset = server.hold("GET", "/api/messages?limit=", { count: 1 });
    const older = server.hold("GET", "/api/messages?before=", { count: 1 });
    act(() => socket.drop(4400, "cursor too old"));
    await waitFor(() => expect(FakeWebSocket.instances).toHaveLength(2));
    const fresh = FakeWebSocket.latest();
    act(() => fresh.connect("sock-2", "c-50"));
    await waitFor(() => expect(reset.caught).toBe(1));

    // The reader asks for the page before message 11 while the reload is in flight.
    await user.click(feed().getByRole("button", { name: "Load older messages" }));
    await waitFor(() => expect(older.caught).toBe(1));
    // Socket events during the reload are applied on top of its page, once each.
    act(() => fresh.send(newMessageFrame(makeMessage(65), "c-51")));
    act(() => fresh.send(newMessageFrame(makeMessage(66, { content: "during reload" }), "c-52")));

    act(() => reset.release());
    await waitFor(() => expect(feedContents()[0]).toBe("message 16"));
    act(() => older.release());
    await settle();

    // Messages 1-10 would sit above 16 with 11-15 missing, and nothing left to load.
    const expected = [
      ...Array.from({ length: 50 }, (_, index) => `message ${index + 16}`),
      "during reload",
    ];
    expect(feedContents()).toEqual(expected);
    const loadOlder = feed().getByRole("button", { name: "Load older messages" });
    await user.click(loadOlder);
    await waitFor(() => expect(feedContents()).toHaveLength(66));
    expect(feedContents().slice(0, 16)).toEqual(
      Array.from({ length: 16 }, (_, index) => `message ${index + 1}`),
    );
    expect(server.requestsTo("GET", "/api/messages?before=16")).toHaveLength(1);
  });

  it("never lets a superseded reload overwrite the newer one", async () => {
    server.messages = [makeMessage(1), makeMessage(2, { content: "original" })];
    const { socket } = await renderLive("sock-1", "c-1");

    server.messages = [makeMessage(1), makeMessage(3, { content: "first reset" })];
    const stale = server.hold("GET", "/api/messages?limit=", { count: 1 });
    act(() => socket.drop(4400));
    await waitFor(() => expect(FakeWebSocket.instances).toHaveLength(2));
    const second = FakeWebSocket.latest();
    act(() => second.connect("sock-2", "c-10"));
    await waitFor(() => expect(stale.caught).toBe(1));

    server.messages = [makeMessage(1), makeMessage(4, { content: "second reset" })];
    act(() => second.drop(4400));
    await waitFor(() => expect(FakeWebSocket.instances).toHaveLength(3));
    act(() => FakeWebSocket.latest().connect("sock-3", "c-20"));
    await waitFor(() => expect(feedContents()).toEqual(["message 1", "second reset"]));

    act(() => stale.release());
    await settle();
    expect(feedContents()).toEqual(["message 1", "second reset"]);
    // The superseded request was cancelled, and its failure is not shown as an error.
    expect(firstPageRequests()[1]?.signal?.aborted).toBe(true);
    expect(feed().queryByRole("alert")).toBeNull();
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
