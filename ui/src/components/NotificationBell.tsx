import type { Ref } from "react";

export function NotificationBell({
  unreadCount,
  expanded,
  onToggle,
  ref,
}: {
  unreadCount: number;
  expanded: boolean;
  onToggle(): void;
  ref?: Ref<HTMLButtonElement>;
}) {
  const label = unreadCount === 0 ? "Notifications" : `Notifications, ${unreadCount} unread`;
  return (
    <button
      ref={ref}
      type="button"
      className="icon-button bell"
      aria-label={label}
      aria-expanded={expanded}
      aria-controls="notification-panel"
      onClick={onToggle}
    >
      <svg viewBox="0 0 24 24" width="22" height="22" aria-hidden="true" focusable="false">
        <path
          d="M12 3a6 6 0 0 0-6 6v3.6L4.3 15.4A1 1 0 0 0 5.2 17h13.6a1 1 0 0 0 .9-1.6L18 12.6V9a6 6 0 0 0-6-6Zm-2.4 15.5a2.5 2.5 0 0 0 4.8 0"
          fill="none"
          stroke="currentColor"
          strokeWidth="1.8"
          strokeLinejoin="round"
        />
      </svg>
      {unreadCount > 0 && (
        <span className="badge bell-badge" aria-hidden="true">
          {unreadCount > 99 ? "99+" : unreadCount}
        </span>
      )}
    </button>
  );
}
