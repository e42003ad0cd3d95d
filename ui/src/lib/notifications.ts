import { appendOlder, replaceExisting } from "./lists";
import type { Notification, NotificationEvent, NotificationPage } from "./types";

/**
 * The notification list as pure data: newest first, each id once, and the unread count.
 *
 * The count comes from the server and follows the events of loaded notifications exactly.
 * An event about one that is not loaded (an older page, read in another tab) may or may
 * not change the count; `countStale` then asks for the server's count again.
 */
export interface NotificationsState {
  notifications: Notification[];
  nextBefore: string | null;
  loaded: boolean;
  unreadCount: number;
  countStale: boolean;
}

export const EMPTY_NOTIFICATIONS: NotificationsState = {
  notifications: [],
  nextBefore: null,
  loaded: false,
  unreadCount: 0,
  countStale: false,
};

const unread = (notification: Notification) => notification.read_at === null;

export function applyNotificationEvent(
  state: NotificationsState,
  event: NotificationEvent,
): NotificationsState {
  switch (event.type) {
    case "created": {
      if (state.notifications.some((n) => n.id === event.notification.id)) return state;
      return {
        ...state,
        notifications: [event.notification, ...state.notifications],
        unreadCount: state.unreadCount + (unread(event.notification) ? 1 : 0),
      };
    }
    case "updated": {
      const before = state.notifications.find((n) => n.id === event.notification.id);
      if (before === undefined) {
        // Not loaded: it may have been unread, unless nothing is (then reading it changes nothing).
        const nothingToChange = state.unreadCount === 0 && !unread(event.notification);
        return nothingToChange ? state : { ...state, countStale: true };
      }
      const delta = Number(unread(event.notification)) - Number(unread(before));
      return {
        ...state,
        notifications: replaceExisting(state.notifications, event.notification),
        unreadCount: Math.max(0, state.unreadCount + delta),
      };
    }
    case "deleted": {
      const before = state.notifications.find((n) => n.id === event.id);
      if (before === undefined) {
        return state.unreadCount === 0 ? state : { ...state, countStale: true };
      }
      return {
        ...state,
        notifications: state.notifications.filter((n) => n.id !== event.id),
        unreadCount: Math.max(0, state.unreadCount - (unread(before) ? 1 : 0)),
      };
    }
  }
}

/** Whether applying `event` to `state` shows a notification that was not there before. */
export function isNewNotification(state: NotificationsState, event: NotificationEvent): boolean {
  return (
    event.type === "created" && !state.notifications.some((n) => n.id === event.notification.id)
  );
}

export function replaceNotifications(
  page: NotificationPage,
  eventsDuringFetch: NotificationEvent[],
): NotificationsState {
  const base: NotificationsState = {
    notifications: appendOlder([], page.notifications),
    nextBefore: page.next_before,
    loaded: true,
    unreadCount: page.unread_count,
    countStale: false,
  };
  const state = eventsDuringFetch.reduce(applyNotificationEvent, base);
  // The server reads the page and the count apart, so an event during the fetch may be in
  // the count and not the page: if the events moved the count, the server settles it.
  return state.unreadCount === page.unread_count ? state : { ...state, countStale: true };
}

/** An older page goes below, unless the list was replaced since it was asked for. */
export function appendOlderNotifications(
  state: NotificationsState,
  page: NotificationPage,
  requestedBefore: string,
): NotificationsState {
  if (state.nextBefore !== requestedBefore) return state;
  return {
    ...state,
    notifications: appendOlder(state.notifications, page.notifications),
    nextBefore: page.next_before,
  };
}

/** The server's count, asked for because `countStale` was set. */
export function withServerCount(
  state: NotificationsState,
  unreadCount: number,
): NotificationsState {
  return { ...state, unreadCount, countStale: false };
}

/** After marking one read (the POST's answer): as its notification-updated event would. */
export function markedRead(
  state: NotificationsState,
  notification: Notification,
): NotificationsState {
  return applyNotificationEvent(state, { type: "updated", notification });
}

/** After `read-all`: every loaded one is read, and so is every other. */
export function markedAllRead(state: NotificationsState, readAt: string): NotificationsState {
  return {
    ...state,
    notifications: state.notifications.map((n) => (unread(n) ? { ...n, read_at: readAt } : n)),
    unreadCount: 0,
  };
}

function text(value: unknown): string | null {
  return typeof value === "string" && value.trim() !== "" ? value.trim() : null;
}

/**
 * "App\Notifications\InvoicePaid" -> "Invoice paid"; "invoice-paid" -> "Invoice paid".
 * A notification's type is often a class name; its last part reads best.
 */
export function humanizeType(type: string): string {
  const last = type.split(/[\\/.]/).filter(Boolean).at(-1) ?? type;
  const words = last
    .replace(/([a-z0-9])([A-Z])/g, "$1 $2")
    .replace(/[-_]+/g, " ")
    .trim()
    .toLowerCase();
  return words ? words.charAt(0).toUpperCase() + words.slice(1) : type;
}

/**
 * What to show for a notification. Its data is whatever the sender chose; these are the
 * keys Laravel apps commonly use for a headline and a sentence.
 */
export function describeNotification(notification: Notification): {
  title: string;
  body: string | null;
} {
  const data = notification.data;
  const title = text(data.title) ?? text(data.subject) ?? humanizeType(notification.type);
  const body = text(data.message) ?? text(data.body) ?? text(data.text) ?? text(data.description);
  return { title, body: body === title ? null : body };
}
