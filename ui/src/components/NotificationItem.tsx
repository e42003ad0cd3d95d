import { memo } from "react";
import { formatExactTime, formatRelativeTime } from "../lib/format";
import { describeNotification } from "../lib/notifications";
import type { Notification } from "../lib/types";

export const NotificationItem = memo(function NotificationItem({
  notification,
  now,
  onMarkRead,
}: {
  notification: Notification;
  now: number;
  onMarkRead(id: string): void;
}) {
  const { title, body } = describeNotification(notification);
  const unread = notification.read_at === null;
  return (
    <li
      className={unread ? "notification notification-unread" : "notification"}
      data-notification-id={notification.id}
    >
      <span className="notification-dot" aria-hidden="true" />
      <div className="notification-body">
        {/* Plain text children: the data is whatever its sender wrote, never markup. */}
        <p className="notification-title">
          {title}
          {unread && <span className="visually-hidden"> (unread)</span>}
        </p>
        {body && <p className="notification-text">{body}</p>}
        <time dateTime={notification.created_at} title={formatExactTime(notification.created_at)}>
          {formatRelativeTime(notification.created_at, now)}
        </time>
      </div>
      {unread && (
        <button
          type="button"
          className="button-small button-secondary"
          onClick={() => onMarkRead(notification.id)}
          aria-label={`Mark “${title}” read`}
        >
          Mark read
        </button>
      )}
    </li>
  );
});
