import { describe, expect, it } from "vitest";
import { makeNotification } from "../test/factories";
import {
  appendOlderNotifications,
  applyNotificationEvent,
  describeNotification,
  humanizeType,
  isNewNotification,
  markedAllRead,
  replaceNotifications,
  type NotificationsState,
} from "./notifications";
import type { NotificationEvent } from "./types";

const READ_AT = "2025-01-01T13:00:00.000Z";

function page(ids: string[], unreadCount: number, nextBefore: string | null = null) {
  return {
    notifications: ids.map((id) => makeNotification(id)),
    next_before: nextBefore,
    unread_count: unreadCount,
  };
}

function apply(state: NotificationsState, ...events: NotificationEvent[]) {
  return events.reduce(applyNotificationEvent, state);
}

describe("notifications", () => {
  it("puts a new one on top and counts it once, however often it arrives", () => {
    const created: NotificationEvent = { type: "created", notification: makeNotification("n-3") };
    let state = replaceNotifications(page(["n-2", "n-1"], 2), []);
    expect(isNewNotification(state, created)).toBe(true);
    state = apply(state, created, created);
    expect(isNewNotification(state, created)).toBe(false);
    expect(state.notifications.map((n) => n.id)).toEqual(["n-3", "n-2", "n-1"]);
    expect(state.unreadCount).toBe(3);
  });

  it("follows marking read exactly for loaded ones, and asks the server for the others", () => {
    const read = (id: string): NotificationEvent => ({
      type: "updated",
      notification: makeNotification(id, { read_at: READ_AT }),
    });
    let state = replaceNotifications(page(["n-2", "n-1"], 5), []);
    state = apply(state, read("n-2"), read("n-2"));
    expect(state.unreadCount).toBe(4);
    expect(state.countStale).toBe(false);
    state = apply(state, read("n-older"));
    expect(state.countStale).toBe(true);
    expect(state.unreadCount).toBe(4);
  });

  it("does not need the server once nothing is unread", () => {
    const state = markedAllRead(replaceNotifications(page(["n-1"], 7), []), READ_AT);
    expect(state.unreadCount).toBe(0);
    expect(state.notifications[0]?.read_at).toBe(READ_AT);
    const after = apply(state, {
      type: "updated",
      notification: makeNotification("n-older", { read_at: READ_AT }),
    });
    expect(after.countStale).toBe(false);
  });

  it("removes a deleted one and its unread mark", () => {
    const state = apply(replaceNotifications(page(["n-2", "n-1"], 2), []), { type: "deleted", id: "n-1" });
    expect(state.notifications.map((n) => n.id)).toEqual(["n-2"]);
    expect(state.unreadCount).toBe(1);
  });

  it("re-applies what arrived during the fetch on top of the page, once", () => {
    const state = replaceNotifications(page(["n-2", "n-1"], 2), [
      { type: "created", notification: makeNotification("n-2") },
      { type: "created", notification: makeNotification("n-3") },
    ]);
    expect(state.notifications.map((n) => n.id)).toEqual(["n-3", "n-2", "n-1"]);
    expect(state.unreadCount).toBe(3);
  });

  it("asks the server for the count when events during the fetch changed it", () => {
    // The page and the count are read apart: a notification committed in between is in the
    // count but not the page, and its event would count it a second time.
    const state = replaceNotifications(page(["n-1"], 2), [
      { type: "created", notification: makeNotification("n-2") },
    ]);
    expect(state.notifications.map((n) => n.id)).toEqual(["n-2", "n-1"]);
    expect(state.countStale).toBe(true);
    // Events that change nothing leave the count as the server gave it.
    expect(
      replaceNotifications(page(["n-1"], 1), [{ type: "created", notification: makeNotification("n-1") }])
        .countStale,
    ).toBe(false);
  });

  it("appends an older page below, unless the list was replaced since", () => {
    const state = replaceNotifications(page(["n-3", "n-2"], 0, "n-2"), []);
    const older = appendOlderNotifications(state, page(["n-2", "n-1"], 0), "n-2");
    expect(older.notifications.map((n) => n.id)).toEqual(["n-3", "n-2", "n-1"]);
    expect(older.nextBefore).toBeNull();
    expect(appendOlderNotifications(state, page(["n-1"], 0), "n-9")).toBe(state);
  });
});

describe("describeNotification", () => {
  it("uses the data's title and message, or else a readable type", () => {
    expect(
      describeNotification(
        makeNotification("a", { data: { title: "Invoice paid", message: "Invoice #42 was paid." } }),
      ),
    ).toEqual({ title: "Invoice paid", body: "Invoice #42 was paid." });
    expect(
      describeNotification(
        makeNotification("b", { type: "App\\Notifications\\InvoicePaid", data: { body: "€12" } }),
      ),
    ).toEqual({ title: "Invoice paid", body: "€12" });
    expect(describeNotification(makeNotification("c", { type: "x", data: { title: 5 } }))).toEqual({
      title: "X",
      body: null,
    });
  });

  it("reads class names and kebab names as words", () => {
    expect(humanizeType("App\\Notifications\\OrderShipped")).toBe("Order shipped");
    expect(humanizeType("deploy-finished")).toBe("Deploy finished");
    expect(humanizeType("backup_failed")).toBe("Backup failed");
  });
});
