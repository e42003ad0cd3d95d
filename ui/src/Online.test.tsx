import { act, screen, waitFor, within } from "@testing-library/react";
import { describe, expect, it } from "vitest";
import {
  ALICE,
  BOB,
  CAROL,
  memberAddedFrame,
  memberRemovedFrame,
  presenceFrame,
} from "./test/factories";
import { FakeWebSocket } from "./test/fakeWebSocket";
import { fakeBackend, renderLive } from "./test/liveApp";

fakeBackend((fresh) => {
  fresh.user = ALICE;
  fresh.people = [ALICE, BOB, CAROL];
});

function online() {
  return within(screen.getByRole("region", { name: "Online" }));
}

/** The online list as a screen reader reads it, top first: names, "(you)", no initials. */
function onlineNames(): string[] {
  return online()
    .queryAllByRole("listitem")
    .map((item) => {
      const copy = item.cloneNode(true) as HTMLElement;
      for (const hidden of copy.querySelectorAll("[aria-hidden='true']")) hidden.remove();
      return (copy.textContent ?? "").replace(/\s+/g, " ").trim();
    });
}

describe("who is online", () => {
  it("joins the presence channel on the one socket, beside the feed and the user's channel", async () => {
    await renderLive();
    const url = new URL(FakeWebSocket.latest().url);
    expect(url.searchParams.get("channels")).toBe("messages,private-user.1,presence-lobby");
    expect(FakeWebSocket.instances).toHaveLength(1);
  });

  it("shows the server's list, then who joins and leaves, live, with the count in the header", async () => {
    const { socket } = await renderLive();
    expect(online().getByText("Finding who is online…")).toBeInTheDocument();
    expect(screen.queryByRole("button", { name: /online$/ })).toBeNull();

    act(() => socket.send(presenceFrame([BOB, ALICE])));
    await waitFor(() => expect(onlineNames()).toEqual(["Alice Liddell (you)", "Bob Builder"]));
    expect(screen.getByRole("button", { name: "2 online" })).toBeInTheDocument();

    act(() => socket.send(memberAddedFrame(CAROL, "c-2")));
    await waitFor(() =>
      expect(onlineNames()).toEqual(["Alice Liddell (you)", "Bob Builder", "Carol Danvers"]),
    );
    expect(screen.getByRole("button", { name: "3 online" })).toBeInTheDocument();

    act(() => socket.send(memberRemovedFrame(BOB, "c-3")));
    // Someone the list never had: nothing to remove, nothing breaks.
    act(() => socket.send(memberRemovedFrame({ id: 99, name: "Nobody", avatar_url: null }, "c-4")));
    // A repeated join shows nobody twice.
    act(() => socket.send(memberAddedFrame(CAROL, "c-5")));
    await waitFor(() => expect(onlineNames()).toEqual(["Alice Liddell (you)", "Carol Danvers"]));
    expect(screen.getByRole("button", { name: "2 online" })).toBeInTheDocument();
  });

  it("resumes with its cursor after a drop and takes the new socket's list as the truth", async () => {
    const { socket } = await renderLive();
    act(() => socket.send(presenceFrame([ALICE, BOB])));
    act(() => socket.send(memberAddedFrame(CAROL, "c-2")));
    await waitFor(() => expect(onlineNames()).toHaveLength(3));

    act(() => socket.drop(1006));
    await screen.findByText("Reconnecting…");
    // The old list stays, marked as possibly out of date.
    expect(online().getByText("Reconnecting: this list may be out of date.")).toBeInTheDocument();
    expect(onlineNames()).toHaveLength(3);

    await waitFor(() => expect(FakeWebSocket.instances).toHaveLength(2));
    const next = FakeWebSocket.latest();
    expect(next.after).toBe("c-2");
    expect(new URL(next.url).searchParams.get("channels")).toBe(
      "messages,private-user.1,presence-lobby",
    );
    act(() => next.connect("sock-2", "c-head"));
    await screen.findByText("Live");
    // Replayed first (Bob left while we were away), then the new socket's whole list.
    act(() => next.send(memberRemovedFrame(BOB, "c-3")));
    act(() => next.send(presenceFrame([ALICE, CAROL, { id: 4, name: "Dan Brown", avatar_url: null }])));
    await waitFor(() =>
      expect(onlineNames()).toEqual(["Alice Liddell (you)", "Carol Danvers", "Dan Brown"]),
    );
    expect(online().queryByText(/may be out of date/)).toBeNull();
    expect(screen.getByRole("region", { name: "Online" })).toHaveAttribute("aria-busy", "false");
  });

  it("opens a conversation with someone online, and the header count leads to the list", async () => {
    const { user, socket } = await renderLive();
    act(() => socket.send(presenceFrame([ALICE, BOB])));

    await user.click(await screen.findByRole("button", { name: "2 online" }));
    expect(online().getByRole("heading", { name: "Online, 2 people" })).toHaveFocus();
    await user.tab();
    expect(online().getByRole("button", { name: "Bob Builder" })).toHaveFocus();
    await user.keyboard("{Enter}");
    expect(await screen.findByRole("log", { name: "Conversation with Bob Builder" })).toBeInTheDocument();
  });
});
