import { act, screen, waitFor, within } from "@testing-library/react";
import { describe, expect, it } from "vitest";
import {
  ALICE,
  BOB,
  CAROL,
  directMessageFrame,
  makeDirectMessage,
  makeNotification,
  notificationCreatedFrame,
  notificationUpdatedFrame,
} from "./test/factories";
import { FakeServer } from "./test/fakeServer";
import { FakeWebSocket } from "./test/fakeWebSocket";
import { fakeBackend, renderLive as renderLiveApp } from "./test/liveApp";
import type { DirectMessage } from "./lib/types";

let server: FakeServer;

fakeBackend((fresh) => {
  server = fresh;
  fresh.user = ALICE;
  fresh.people = [ALICE, BOB, CAROL];
});

const READ_AT = "2025-01-01T13:00:00.000Z";
const fromBob = (id: number, overrides: Partial<DirectMessage> = {}) =>
  makeDirectMessage(id, { sender: BOB, recipient: ALICE, ...overrides });
const toBob = (id: number, overrides: Partial<DirectMessage> = {}) =>
  makeDirectMessage(id, { sender: ALICE, recipient: BOB, ...overrides });
const fromCarol = (id: number) => makeDirectMessage(id, { sender: CAROL, recipient: ALICE });

async function renderLive(socketId = "sock-1", cursor = "c-1") {
  const live = await renderLiveApp(socketId, cursor);
  await screen.findByRole("heading", { name: "Conversations" });
  await waitFor(() => expect(screen.queryByText("Loading conversations…")).toBeNull());
  return live;
}

/** Drops the socket and lets the client resume; returns the new one, connected. */
async function reconnect(socket: FakeWebSocket, code = 1006, socketId = "sock-2") {
  const before = FakeWebSocket.instances.length;
  act(() => socket.drop(code));
  await waitFor(() => expect(FakeWebSocket.instances).toHaveLength(before + 1));
  const next = FakeWebSocket.latest();
  act(() => next.connect(socketId, "c-head"));
  await screen.findByText("Live");
  return next;
}

function conversationList() {
  return within(screen.getByRole("region", { name: "Conversations" }));
}

/** [name, unread badge or ""] per conversation, top first. */
function conversationSummary(): [string, string][] {
  return conversationList()
    .queryAllByRole("listitem")
    .map((item) => [
      item.querySelector(".conversation-name")?.textContent ?? "",
      item.querySelector(".badge")?.getAttribute("aria-label") ?? "",
    ]);
}

function thread(name: string) {
  return within(screen.getByRole("log", { name: `Conversation with ${name}` }));
}

function threadContents(name: string): string[] {
  return thread(name)
    .queryAllByRole("listitem")
    .map((item) => item.querySelector(".dm-content")?.textContent ?? "");
}

describe("one socket for everything", () => {
  it("listens to the feed, the user's own channel and who is online on one socket, and opens no other", async () => {
    server.directMessages = [fromBob(1)];
    const { user } = await renderLive();

    const url = new URL(FakeWebSocket.latest().url);
    expect(url.searchParams.get("channels")).toBe("messages,private-user.1,presence-lobby");
    await user.click(conversationList().getByRole("button", { name: /Bob Builder/ }));
    await thread("Bob Builder").findByText("dm 1");
    await user.click(screen.getByRole("button", { name: /Notifications/ }));
    expect(FakeWebSocket.instances).toHaveLength(1);
  });

  it("asks /api/session who is signed in, never /api/me", async () => {
    await renderLive();
    const paths = server.requests.map((request) => request.path);
    expect(paths.filter((path) => path === "/api/session")).toHaveLength(1);
    expect(paths.filter((path) => path === "/api/me")).toHaveLength(0);
  });

  it("says live updates stopped when the server refuses a channel (4403), and offers a reload", async () => {
    const { user, socket } = await renderLive();
    act(() => socket.drop(4403, "not allowed to listen to private-user.1"));

    expect(await screen.findByRole("alert")).toHaveTextContent(
      "Live updates stopped: not allowed to listen to private-user.1.",
    );
    expect(screen.getByText("Offline")).toBeInTheDocument();
    await user.click(screen.getByRole("button", { name: "Reload" }));
    await waitFor(() => expect(server.requestsTo("GET", "/api/session")).toHaveLength(2));
  });

  it("reloads conversations, notifications and the open conversation after a refused cursor (4400)", async () => {
    server.directMessages = [fromBob(1)];
    server.notifications = [makeNotification("n-1")];
    const { user, socket } = await renderLive();
    await user.click(conversationList().getByRole("button", { name: /Bob Builder/ }));
    await thread("Bob Builder").findByText("dm 1");

    // While away, beyond what the server keeps: Bob wrote again, Carol wrote, one more notification.
    server.directMessages.push(fromBob(2, { content: "written while away" }), fromCarol(3));
    server.notifications.push(makeNotification("n-2", { created_at: "2025-01-02T00:00:00.000Z" }));
    await reconnect(socket, 4400);

    await thread("Bob Builder").findByText("written while away");
    await waitFor(() =>
      expect(conversationSummary()).toEqual([
        ["Carol Danvers", "1 unread"],
        ["Bob Builder", ""],
      ]),
    );
    expect(screen.getByRole("button", { name: "Notifications, 2 unread" })).toBeInTheDocument();
    expect(FakeWebSocket.latest().after).toBeNull();
  });
});

describe("conversations", () => {
  it("lists people most recent first with unread badges, live, counting a replayed message once", async () => {
    server.directMessages = [fromBob(1), fromCarol(2)];
    const { socket } = await renderLive();
    expect(conversationSummary()).toEqual([
      ["Carol Danvers", "1 unread"],
      ["Bob Builder", "1 unread"],
    ]);

    const question = fromBob(10, { content: "are you there?" });
    act(() => socket.send(directMessageFrame("new-direct-message", question, "c-2")));
    expect(conversationSummary()).toEqual([
      ["Bob Builder", "2 unread"],
      ["Carol Danvers", "1 unread"],
    ]);
    expect(conversationList().getByText("are you there?")).toBeInTheDocument();
    // The count is part of what a screen reader says for the entry.
    expect(conversationList().getByRole("button", { name: /^Bob Builder.*2 unread$/ })).toBeVisible();
    expect(screen.getByRole("button", { name: "Chats, 3 unread" })).toBeInTheDocument();

    // The socket drops; the resumed one replays from its cursor, which this message precedes
    // only if the client lost its place. It must not count twice either way.
    const resumed = await reconnect(socket);
    expect(resumed.after).toBe("c-2");
    act(() => resumed.send(directMessageFrame("new-direct-message", question, "c-2")));
    expect(conversationSummary()).toEqual([
      ["Bob Builder", "2 unread"],
      ["Carol Danvers", "1 unread"],
    ]);
    expect(server.requestsTo("GET", "/api/conversations")).toHaveLength(1);
  });

  it("shows my own last message as mine and never counts it", async () => {
    server.directMessages = [fromBob(1, { read_at: READ_AT }), toBob(2, { content: "see you" })];
    await renderLive();
    expect(conversationSummary()).toEqual([["Bob Builder", ""]]);
    expect(conversationList().getByText(/You: see you/)).toBeInTheDocument();
  });

  it("asks the server again when another tab read messages it had counted", async () => {
    server.directMessages = [fromBob(1), fromBob(2)];
    const { socket } = await renderLive();
    expect(conversationSummary()).toEqual([["Bob Builder", "2 unread"]]);

    // Another tab of Alice's opened the conversation.
    server.directMessages = [fromBob(1, { read_at: READ_AT }), fromBob(2, { read_at: READ_AT })];
    act(() => socket.send(directMessageFrame("direct-message-updated", server.directMessages[0]!, "c-2")));
    act(() => socket.send(directMessageFrame("direct-message-updated", server.directMessages[1]!, "c-3")));

    await waitFor(() => expect(conversationSummary()).toEqual([["Bob Builder", ""]]));
    expect(server.requestsTo("GET", "/api/conversations").length).toBeGreaterThanOrEqual(2);
  });

  it("finds people by name and opens a new conversation with them", async () => {
    const { user } = await renderLive();
    await user.type(screen.getByLabelText("Find people"), "car");

    const found = within(await screen.findByRole("list", { name: "People found" }));
    expect(found.getAllByRole("listitem")).toHaveLength(1);
    expect(server.requestsTo("GET", "/api/users?query=car")).toHaveLength(1);
    await user.click(found.getByRole("button", { name: /Carol Danvers/ }));

    expect(await screen.findByRole("heading", { name: "Carol Danvers" })).toBeInTheDocument();
    expect(await thread("Carol Danvers").findByText(/No messages yet/)).toBeInTheDocument();
    expect(screen.getByLabelText("Find people")).toHaveValue("");
  });

  it("says so when nobody has that name", async () => {
    const { user } = await renderLive();
    await user.type(screen.getByLabelText("Find people"), "zed");
    expect(await screen.findByText("Nobody called “zed”.")).toBeInTheDocument();
  });
});

describe("a conversation", () => {
  it("shows the history, marks it read while viewed, and shows live messages once", async () => {
    server.directMessages = [fromBob(1), toBob(2), fromBob(3)];
    const { user, socket } = await renderLive();
    await user.click(conversationList().getByRole("button", { name: /Bob Builder/ }));

    await waitFor(() => expect(threadContents("Bob Builder")).toEqual(["dm 1", "dm 2", "dm 3"]));
    await waitFor(() => expect(server.requestsTo("POST", "/api/direct-messages/read")).toHaveLength(1));
    expect(server.requestsTo("POST", "/api/direct-messages/read")[0]?.body).toEqual({ with: BOB.id });
    // The open conversation has no badge; the read marks come back as broadcasts.
    expect(conversationSummary()).toEqual([["Bob Builder", ""]]);
    for (const [index, dm] of server.directMessages.entries()) {
      act(() => socket.send(directMessageFrame("direct-message-updated", dm, `c-${index + 2}`)));
    }
    expect(server.requestsTo("POST", "/api/direct-messages/read")).toHaveLength(1);

    const live = fromBob(4, { content: "new one" });
    act(() => socket.send(directMessageFrame("new-direct-message", live, "c-10")));
    act(() => socket.send(directMessageFrame("new-direct-message", live, "c-10")));
    expect(threadContents("Bob Builder")).toEqual(["dm 1", "dm 2", "dm 3", "new one"]);
    await waitFor(() => expect(server.requestsTo("POST", "/api/direct-messages/read")).toHaveLength(2));
    expect(conversationSummary()).toEqual([["Bob Builder", ""]]);
  });

  it("keeps another conversation's messages out, and counts them there", async () => {
    server.directMessages = [fromBob(1)];
    const { user, socket } = await renderLive();
    await user.click(conversationList().getByRole("button", { name: /Bob Builder/ }));
    await thread("Bob Builder").findByText("dm 1");

    act(() => socket.send(directMessageFrame("new-direct-message", fromCarol(5), "c-2")));
    expect(threadContents("Bob Builder")).toEqual(["dm 1"]);
    expect(conversationSummary()).toEqual([
      ["Carol Danvers", "1 unread"],
      ["Bob Builder", ""],
    ]);
  });

  it("sends with this socket's id, and shows the message once in the thread and the list", async () => {
    server.directMessages = [fromBob(1, { read_at: READ_AT })];
    const { user, socket } = await renderLive("sock-A");
    await user.click(conversationList().getByRole("button", { name: /Bob Builder/ }));
    await thread("Bob Builder").findByText("dm 1");

    await user.type(screen.getByLabelText("Message to Bob Builder"), "hello Bob{Enter}");
    await thread("Bob Builder").findByText("hello Bob");
    const [post] = server.requestsTo("POST", "/api/direct-messages");
    expect(post?.body).toEqual({ recipient_id: BOB.id, content: "hello Bob" });
    expect(post?.headers.get("X-Socket-ID")).toBe("sock-A");
    expect(conversationList().getByText(/You: hello Bob/)).toBeInTheDocument();

    // A replay, or a frame meant for another of Alice's tabs, must not show it twice.
    const sent = server.directMessages.at(-1)!;
    act(() => socket.send(directMessageFrame("new-direct-message", sent, "c-2")));
    expect(thread("Bob Builder").getAllByText("hello Bob")).toHaveLength(1);
    expect(screen.getByLabelText("Message to Bob Builder")).toHaveValue("");
  });

  it("keeps the draft and says why when the server refuses it", async () => {
    const { user } = await renderLive();
    await user.type(screen.getByLabelText("Find people"), "bob");
    await user.click(await screen.findByRole("button", { name: /Bob Builder/ }));
    server.nextDirectPostReply = {
      status: 422,
      body: { error: { code: "invalid_recipient", message: "There is no such user to write to." } },
    };
    await user.type(screen.getByLabelText("Message to Bob Builder"), "anyone?{Enter}");
    expect(await screen.findByRole("alert")).toHaveTextContent("There is no such user to write to.");
    expect(screen.getByLabelText("Message to Bob Builder")).toHaveValue("anyone?");
  });

  it("goes back to the list and to the public feed", async () => {
    server.directMessages = [fromBob(1)];
    const { user } = await renderLive();
    await user.click(conversationList().getByRole("button", { name: /Bob Builder/ }));
    await thread("Bob Builder").findByText("dm 1");
    await user.click(screen.getByRole("button", { name: "← Chats" }));
    expect(screen.queryByRole("log", { name: "Conversation with Bob Builder" })).toBeNull();
    await user.click(screen.getByRole("button", { name: "Public feed" }));
    expect(screen.getByRole("log", { name: "Messages" })).toBeInTheDocument();
    expect(screen.getByLabelText("Message")).toBeInTheDocument();
  });
});

describe("notifications", () => {
  function bell() {
    return screen.getByRole("button", { name: /^Notifications/ });
  }

  function toasts() {
    return within(screen.getByRole("region", { name: "New notifications" }));
  }

  it("shows the unread count, and a toast for each new notification, once", async () => {
    server.notifications = [
      makeNotification("n-1", { read_at: READ_AT }),
      makeNotification("n-2", { created_at: "2025-01-01T12:30:00.000Z" }),
    ];
    const { socket } = await renderLive();
    await waitFor(() => expect(bell()).toHaveAccessibleName("Notifications, 1 unread"));
    expect(toasts().queryAllByRole("button")).toHaveLength(0);

    const invoice = makeNotification("n-3", {
      type: "App\\Notifications\\InvoicePaid",
      data: { title: "Invoice paid", message: "Invoice #42: <b>€12</b>" },
    });
    act(() => socket.send(notificationCreatedFrame(invoice, "c-2")));
    expect(toasts().getByText("Invoice paid")).toBeInTheDocument();
    expect(toasts().getByText("Invoice #42: <b>€12</b>")).toBeInTheDocument();
    expect(bell()).toHaveAccessibleName("Notifications, 2 unread");

    const resumed = await reconnect(socket);
    act(() => resumed.send(notificationCreatedFrame(invoice, "c-2")));
    expect(toasts().getAllByText("Invoice paid")).toHaveLength(1);
    expect(bell()).toHaveAccessibleName("Notifications, 2 unread");
  });

  it("dismisses a toast on request", async () => {
    const { user, socket } = await renderLive();
    const deploy = makeNotification("n-1", { data: { title: "Deploy done" } });
    act(() => socket.send(notificationCreatedFrame(deploy, "c-2")));
    await user.click(toasts().getByRole("button", { name: "Dismiss “Deploy done”" }));
    expect(toasts().queryByText("Deploy done")).toBeNull();
    expect(bell()).toHaveAccessibleName("Notifications, 1 unread");
  });

  it("lists them newest first, marks one read, then all, and the bell follows", async () => {
    server.notifications = [
      makeNotification("n-1", { data: { title: "Older" }, created_at: "2025-01-01T10:00:00.000Z" }),
      makeNotification("n-2", { data: { title: "Newer" }, created_at: "2025-01-01T11:00:00.000Z" }),
      makeNotification("n-3", { data: { title: "Newest" }, created_at: "2025-01-01T12:00:00.000Z" }),
    ];
    const { user } = await renderLive();
    await waitFor(() => expect(bell()).toHaveAccessibleName("Notifications, 3 unread"));
    await user.click(bell());
    const panel = within(screen.getByRole("region", { name: "Notifications" }));
    const list = within(panel.getByRole("list", { name: "Your notifications" }));
    const titles = list
      .getAllByRole("listitem")
      .map((item) => item.querySelector(".notification-title")?.firstChild?.textContent);
    expect(titles).toEqual(["Newest", "Newer", "Older"]);

    await user.click(panel.getByRole("button", { name: "Mark “Newer” read" }));
    await waitFor(() => expect(bell()).toHaveAccessibleName("Notifications, 2 unread"));
    expect(server.requestsTo("POST", "/api/notifications/n-2/read")).toHaveLength(1);
    expect(panel.queryByRole("button", { name: "Mark “Newer” read" })).toBeNull();

    await user.click(panel.getByRole("button", { name: "Mark all read" }));
    await waitFor(() => expect(bell()).toHaveAccessibleName("Notifications"));
    expect(server.requestsTo("POST", "/api/notifications/read-all")).toHaveLength(1);
    expect(panel.getByText("All read")).toBeInTheDocument();
    expect(panel.getByRole("button", { name: "Mark all read" })).toBeDisabled();
  });

  it("follows a notification read in another tab, and asks for the count when it is not loaded", async () => {
    server.notifications = [makeNotification("n-1"), makeNotification("n-2")];
    const { socket } = await renderLive();
    await waitFor(() => expect(bell()).toHaveAccessibleName("Notifications, 2 unread"));

    act(() => socket.send(notificationUpdatedFrame(makeNotification("n-1", { read_at: READ_AT }), "c-2")));
    expect(bell()).toHaveAccessibleName("Notifications, 1 unread");

    // One beyond the loaded page, read elsewhere: only the server knows the count now.
    server.notifications = [makeNotification("n-1", { read_at: READ_AT }), makeNotification("n-2")];
    const old = makeNotification("n-old", { read_at: READ_AT });
    act(() => socket.send(notificationUpdatedFrame(old, "c-3")));
    await waitFor(() => expect(server.requestsTo("GET", "/api/notifications?limit=1")).toHaveLength(1));
    expect(bell()).toHaveAccessibleName("Notifications, 1 unread");
  });

  it("pages older notifications below the first page", async () => {
    server.notifications = Array.from({ length: 25 }, (_, index) =>
      makeNotification(`n-${String(index).padStart(2, "0")}`, {
        created_at: new Date(Date.UTC(2025, 0, 1, 0, index)).toISOString(),
      }),
    );
    const { user } = await renderLive();
    await user.click(bell());
    const panel = within(screen.getByRole("region", { name: "Notifications" }));
    expect(panel.getAllByRole("listitem")).toHaveLength(20);
    await user.click(panel.getByRole("button", { name: "Load older notifications" }));
    await waitFor(() => expect(panel.getAllByRole("listitem")).toHaveLength(25));
    expect(server.requestsTo("GET", "/api/notifications?before=n-05")).toHaveLength(1);
    expect(panel.queryByRole("button", { name: "Load older notifications" })).toBeNull();
  });

  it("closes the panel with Escape", async () => {
    const { user } = await renderLive();
    await user.click(bell());
    expect(bell()).toHaveAttribute("aria-expanded", "true");
    // Opening it moved focus into it.
    expect(screen.getByRole("heading", { name: "Notifications" })).toHaveFocus();
    await user.keyboard("{Escape}");
    expect(screen.queryByRole("region", { name: "Notifications" })).toBeNull();
    expect(bell()).toHaveAttribute("aria-expanded", "false");
    expect(bell()).toHaveFocus();
  });
});
