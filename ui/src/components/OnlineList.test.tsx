import { render, screen, within } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { describe, expect, it, vi } from "vitest";
import { onlineForDisplay } from "../lib/presence";
import type { PresenceMember } from "../lib/types";
import { OnlineList } from "./OnlineList";

const alice: PresenceMember = { id: "1", name: "Alice Liddell", avatar_url: null };
const bob: PresenceMember = { id: "2", name: "Bob Builder", avatar_url: null };
const carol: PresenceMember = { id: "3", name: "Carol Danvers", avatar_url: null };

function setup(
  members: PresenceMember[],
  { loaded = true, upToDate = true }: { loaded?: boolean; upToDate?: boolean } = {},
) {
  const onOpen = vi.fn();
  const view = render(
    <OnlineList
      online={onlineForDisplay(members, 1)}
      loaded={loaded}
      upToDate={upToDate}
      onOpen={onOpen}
    />,
  );
  const region = screen.getByRole("region", { name: "Online" });
  return { onOpen, region, view };
}

/** What a screen reader reads of an element: its text without what is aria-hidden. */
function spoken(element: HTMLElement): string {
  const copy = element.cloneNode(true) as HTMLElement;
  for (const hidden of copy.querySelectorAll("[aria-hidden='true']")) hidden.remove();
  return (copy.textContent ?? "").replace(/\s+/g, " ").trim();
}

function entries(region: HTMLElement): string[] {
  return within(within(region).getByRole("list", { name: "People online" }))
    .getAllByRole("listitem")
    .map(spoken);
}

describe("OnlineList", () => {
  it("lists who is online in a labelled region, you first and marked, with the count", () => {
    const { region } = setup([carol, bob, alice]);
    expect(within(region).getByRole("heading", { name: "Online, 3 people" })).toBeInTheDocument();
    expect(entries(region)).toEqual(["Alice Liddell (you)", "Bob Builder", "Carol Danvers"]);
    expect(region).toHaveAttribute("aria-busy", "false");
  });

  it("opens a conversation with someone from the list, by keyboard too", async () => {
    const user = userEvent.setup();
    const { onOpen, region } = setup([alice, bob]);
    // Only the others are buttons: there is nobody to write to in your own entry.
    const buttons = within(region).getAllByRole("button");
    expect(buttons.map(spoken)).toEqual(["Bob Builder"]);

    await user.tab();
    expect(within(region).getByRole("button", { name: /Bob Builder/ })).toHaveFocus();
    await user.keyboard("{Enter}");
    expect(onOpen).toHaveBeenCalledWith({ id: 2, name: "Bob Builder", avatar_url: null });
  });

  it("says so while it waits for the server's first list", () => {
    const { region } = setup([], { loaded: false, upToDate: false });
    expect(within(region).getByText("Finding who is online…")).toBeInTheDocument();
    expect(within(region).getByRole("heading", { name: "Online" })).toBeInTheDocument();
    expect(region).toHaveAttribute("aria-busy", "true");
  });

  it("keeps the last list, marked out of date, while reconnecting", () => {
    const { region } = setup([alice, bob], { upToDate: false });
    expect(entries(region)).toHaveLength(2);
    expect(within(region).getByText("Reconnecting: this list may be out of date.")).toBeInTheDocument();
    expect(region).toHaveAttribute("aria-busy", "true");
  });

  it("says when you are the only one here", () => {
    const { region } = setup([alice]);
    expect(within(region).getByRole("heading", { name: "Online, 1 person" })).toBeInTheDocument();
    expect(within(region).getByText("Nobody else is online.")).toBeInTheDocument();
  });

  it("shows someone who is not a pgcast user, but offers no conversation with them", () => {
    const { region } = setup([alice, { id: "guest-7", name: "Guest", avatar_url: null }]);
    expect(entries(region)).toEqual(["Alice Liddell (you)", "Guest"]);
    expect(within(region).queryAllByRole("button")).toEqual([]);
  });
});
