import { useFocusOnMount } from "../hooks/useFocusOnMount";
import { useNow } from "../hooks/useNow";
import type { Notification } from "../lib/types";
import { NotificationItem } from "./NotificationItem";

export interface NotificationPanelProps {
  notifications: Notification[];
  unreadCount: number;
  loaded: boolean;
  loadError: string | null;
  actionError: string | null;
  hasOlder: boolean;
  loadingOlder: boolean;
  onMarkRead(id: string): void;
  onMarkAllRead(): void;
  onLoadOlder(): void;
  onRetry(): void;
  onClose(): void;
}

export function NotificationPanel({
  notifications,
  unreadCount,
  loaded,
  loadError,
  actionError,
  hasOlder,
  loadingOlder,
  onMarkRead,
  onMarkAllRead,
  onLoadOlder,
  onRetry,
  onClose,
}: NotificationPanelProps) {
  const now = useNow();
  const heading = useFocusOnMount<HTMLHeadingElement>();
  return (
    <section
      id="notification-panel"
      className="notification-panel"
      aria-labelledby="notification-panel-heading"
      onKeyDown={(event) => {
        if (event.key === "Escape") onClose();
      }}
    >
      <div className="panel-header">
        <h2 id="notification-panel-heading" ref={heading} tabIndex={-1}>
          Notifications
        </h2>
        <p className="panel-count">{unreadCount === 0 ? "All read" : `${unreadCount} unread`}</p>
        <button
          type="button"
          className="button-small button-secondary"
          onClick={onMarkAllRead}
          disabled={unreadCount === 0}
        >
          Mark all read
        </button>
        <button
          type="button"
          className="icon-button"
          aria-label="Close notifications"
          onClick={onClose}
        >
          ×
        </button>
      </div>
      <div className="panel-scroll" aria-busy={!loaded || loadingOlder}>
        {actionError && (
          <p className="error" role="alert">
            {actionError}
          </p>
        )}
        {loadError && (
          <div className="feed-notice">
            <p className="error" role="alert">
              Could not load notifications: {loadError}
            </p>
            <button type="button" onClick={onRetry}>
              Try again
            </button>
          </div>
        )}
        {!loaded && !loadError && <p className="feed-notice">Loading notifications…</p>}
        {loaded && notifications.length === 0 && (
          <p className="feed-notice">Nothing yet. Notifications for you appear here.</p>
        )}
        <ol className="notification-list" aria-label="Your notifications">
          {notifications.map((notification) => (
            <NotificationItem
              key={notification.id}
              notification={notification}
              now={now}
              onMarkRead={onMarkRead}
            />
          ))}
        </ol>
        {hasOlder && (
          <div className="feed-older">
            <button type="button" onClick={onLoadOlder} disabled={loadingOlder}>
              {loadingOlder ? "Loading older notifications…" : "Load older notifications"}
            </button>
          </div>
        )}
      </div>
    </section>
  );
}
