import { useCallback, useEffect, useRef, useState } from "react";
import {
  listNotifications,
  markAllNotificationsRead,
  markNotificationRead,
} from "../lib/api";
import {
  appendOlderNotifications,
  applyNotificationEvent,
  EMPTY_NOTIFICATIONS,
  isNewNotification,
  markedAllRead,
  markedRead,
  replaceNotifications,
  withServerCount,
} from "../lib/notifications";
import type { Notification, NotificationEvent, NotificationPage } from "../lib/types";
import { describeError, isSignedOut } from "./errors";
import { useLatest } from "./useLatest";
import { useRealtimeEvents, type RealtimeControls } from "./useRealtime";
import { useSnapshot } from "./useSnapshot";
import { useStore } from "./useStore";

export const NOTIFICATION_PAGE_SIZE = 20;
/** How long a toast stays up unless dismissed. */
export const TOAST_MS = 8000;
/** Toasts shown at once; older ones give way (they are all in the list). */
export const MAX_TOASTS = 3;
/** Count refreshes that events keep overtaking before the last answer is taken as it is. */
const COUNT_ATTEMPTS = 3;

export interface NotificationsControls {
  /** Newest first. */
  notifications: Notification[];
  unreadCount: number;
  loaded: boolean;
  loadError: string | null;
  hasOlder: boolean;
  loadingOlder: boolean;
  /** The last mark-read or load-older failure, in words. */
  actionError: string | null;
  /** Notifications that arrived live, newest last, until dismissed or timed out. */
  toasts: Notification[];
  dismissToast(id: string): void;
  markRead(id: string): void;
  markAllRead(): void;
  loadOlder(): void;
  reload(): void;
}

/**
 * The user's notifications: a first page and the unread count on a fresh socket, then the
 * events of the user's channel. A notification that arrives live also shows as a toast,
 * once: a replay after a reconnect, or one already listed, is not new.
 */
export function useNotifications({
  realtime,
  onSignedOut,
  toastMs = TOAST_MS,
}: {
  realtime: RealtimeControls;
  onSignedOut(): void;
  toastMs?: number;
}): NotificationsControls {
  const [state, update, current] = useStore(EMPTY_NOTIFICATIONS);
  const [loadError, setLoadError] = useState<string | null>(null);
  const [actionError, setActionError] = useState<string | null>(null);
  const [loadingOlder, setLoadingOlder] = useState(false);
  const [toasts, setToasts] = useState<Notification[]>([]);
  const onSignedOutRef = useLatest(onSignedOut);
  const loadingOlderRef = useRef(false);
  // Bumped by every event, so a count fetched meanwhile is known to be out of date.
  const eventCount = useRef(0);
  const countInFlight = useRef(false);
  const toastTimers = useRef(new Map<string, ReturnType<typeof setTimeout>>());

  const handleFailure = useCallback(
    (error: unknown, show: (message: string) => void) => {
      if (isSignedOut(error)) onSignedOutRef.current();
      else show(describeError(error));
    },
    [onSignedOutRef],
  );

  const snapshot = useSnapshot<NotificationPage, NotificationEvent>({
    fetch: (signal) => listNotifications({ limit: NOTIFICATION_PAGE_SIZE, signal }),
    loaded: (page, eventsDuringFetch) => {
      update(() => replaceNotifications(page, eventsDuringFetch));
      setLoadError(null);
    },
    failed: (error) => handleFailure(error, setLoadError),
  });

  const dismissToast = useCallback((id: string) => {
    const timer = toastTimers.current.get(id);
    if (timer !== undefined) clearTimeout(timer);
    toastTimers.current.delete(id);
    setToasts((shown) => shown.filter((toast) => toast.id !== id));
  }, []);

  const showToast = useCallback(
    (notification: Notification) => {
      setToasts((shown) =>
        [...shown.filter((t) => t.id !== notification.id), notification].slice(-MAX_TOASTS),
      );
      toastTimers.current.set(
        notification.id,
        setTimeout(() => dismissToast(notification.id), toastMs),
      );
    },
    [dismissToast, toastMs],
  );

  useEffect(() => {
    const timers = toastTimers.current;
    return () => {
      for (const timer of timers.values()) clearTimeout(timer);
      timers.clear();
    };
  }, []);

  useRealtimeEvents(realtime, {
    onEvent: (event) => {
      if (event.kind !== "notification") return;
      eventCount.current += 1;
      snapshot.record(event.event);
      // A replay brings only what this tab has not seen; one already listed is not new.
      const fresh = isNewNotification(current(), event.event);
      update((state) => applyNotificationEvent(state, event.event));
      if (fresh && event.event.type === "created") showToast(event.event.notification);
      else if (event.event.type === "updated" && event.event.notification.read_at !== null) {
        // Read elsewhere (another tab, the list): the toast has done its job.
        dismissToast(event.event.notification.id);
      } else if (event.event.type === "deleted") dismissToast(event.event.id);
    },
    onFresh: () => void snapshot.load(),
  });

  const refreshCount = useCallback(async () => {
    if (countInFlight.current) return;
    countInFlight.current = true;
    try {
      for (let attempt = 1; attempt <= COUNT_ATTEMPTS; attempt += 1) {
        const seen = eventCount.current;
        const page = await listNotifications({ limit: 1 });
        if (seen === eventCount.current || attempt === COUNT_ATTEMPTS) {
          update((state) => withServerCount(state, page.unread_count));
          return;
        }
      }
    } catch (error) {
      handleFailure(error, setActionError);
    } finally {
      countInFlight.current = false;
    }
  }, [handleFailure, update]);

  const { countStale } = state;
  useEffect(() => {
    if (countStale) void refreshCount();
  }, [countStale, refreshCount]);

  const markRead = useCallback(
    async (id: string) => {
      setActionError(null);
      dismissToast(id);
      try {
        const notification = await markNotificationRead(id);
        update((state) => markedRead(state, notification));
      } catch (error) {
        handleFailure(error, setActionError);
      }
    },
    [dismissToast, handleFailure, update],
  );

  const markAllRead = useCallback(async () => {
    setActionError(null);
    try {
      await markAllNotificationsRead();
      update((state) => markedAllRead(state, new Date().toISOString()));
      for (const id of [...toastTimers.current.keys()]) dismissToast(id);
    } catch (error) {
      handleFailure(error, setActionError);
    }
  }, [dismissToast, handleFailure, update]);

  const loadOlder = useCallback(async () => {
    const before = current().nextBefore;
    if (loadingOlderRef.current || before === null) return;
    const generation = snapshot.generation();
    loadingOlderRef.current = true;
    setLoadingOlder(true);
    setActionError(null);
    try {
      const page = await listNotifications({ before, limit: NOTIFICATION_PAGE_SIZE });
      if (generation === snapshot.generation()) {
        update((state) => appendOlderNotifications(state, page, before));
      }
    } catch (error) {
      if (generation === snapshot.generation()) handleFailure(error, setActionError);
    } finally {
      loadingOlderRef.current = false;
      setLoadingOlder(false);
    }
  }, [current, handleFailure, snapshot, update]);

  return {
    notifications: state.notifications,
    unreadCount: state.unreadCount,
    loaded: state.loaded,
    loadError,
    hasOlder: state.nextBefore !== null,
    loadingOlder,
    actionError,
    toasts,
    dismissToast,
    markRead: (id) => void markRead(id),
    markAllRead: () => void markAllRead(),
    loadOlder: () => void loadOlder(),
    reload: () => void snapshot.load(),
  };
}
