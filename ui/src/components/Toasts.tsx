import { describeNotification } from "../lib/notifications";
import type { Notification } from "../lib/types";

/** Notifications as they arrive, stacked in a corner until dismissed or timed out. */
export function Toasts({
  toasts,
  onOpen,
  onDismiss,
}: {
  toasts: Notification[];
  onOpen(): void;
  onDismiss(id: string): void;
}) {
  return (
    // Always in the page, so screen readers announce what is added to it.
    <section className="toasts" aria-label="New notifications" aria-live="polite">
      {toasts.map((notification) => {
        const { title, body } = describeNotification(notification);
        return (
          <div key={notification.id} className="toast" data-notification-id={notification.id}>
            <button type="button" className="toast-main" onClick={onOpen}>
              <span className="toast-title">{title}</span>
              {body && <span className="toast-text">{body}</span>}
            </button>
            <button
              type="button"
              className="icon-button toast-dismiss"
              aria-label={`Dismiss “${title}”`}
              onClick={() => onDismiss(notification.id)}
            >
              ×
            </button>
          </div>
        );
      })}
    </section>
  );
}
