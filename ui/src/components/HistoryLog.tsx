import type { ReactNode } from "react";
import { useFeedScroll } from "../hooks/useFeedScroll";
import type { HistoryControls } from "../hooks/useLiveHistory";

export interface HistoryLogProps {
  history: HistoryControls<{ id: number }>;
  /** The log's accessible name. */
  label: string;
  /** What is loading, as in "Loading messages…" and "Could not load messages". */
  what: string;
  empty: string;
  listClassName: string;
  /** The list's items, rendered in `history.messages` order. */
  children: ReactNode;
}

/**
 * A chat log (the feed, a conversation): older pages on demand, the load and error states,
 * and the scroll that follows new items and can jump back to the latest.
 */
export function HistoryLog({
  history,
  label,
  what,
  empty,
  listClassName,
  children,
}: HistoryLogProps) {
  const { messages, loaded, loadError, hasOlder, loadingOlder, olderError } = history;
  const { loadOlder: onLoadOlder, reload: onRetry } = history;
  const { containerRef, onScroll, atBottom, scrollToBottom } = useFeedScroll(
    messages,
    onLoadOlder,
  );
  return (
    <>
      <div
        ref={containerRef}
        className="feed-scroll"
        role="log"
        aria-live="polite"
        aria-label={label}
        aria-busy={!loaded || loadingOlder}
        // Focusable so keyboard users can scroll it with the arrow keys.
        tabIndex={0}
        onScroll={onScroll}
      >
        {hasOlder && (
          <div className="feed-older">
            <button type="button" onClick={onLoadOlder} disabled={loadingOlder}>
              {loadingOlder ? "Loading older messages…" : "Load older messages"}
            </button>
            {olderError && (
              <p className="error" role="alert">
                {olderError}
              </p>
            )}
          </div>
        )}
        {loadError && (
          <div className="feed-notice">
            <p className="error" role="alert">
              Could not load {what}: {loadError}
            </p>
            <button type="button" onClick={onRetry}>
              Try again
            </button>
          </div>
        )}
        {!loaded && !loadError && <p className="feed-notice">Loading {what}…</p>}
        {loaded && messages.length === 0 && <p className="feed-notice">{empty}</p>}
        <ol className={listClassName}>{children}</ol>
      </div>
      {!atBottom && (
        <button type="button" className="jump-to-latest" onClick={scrollToBottom}>
          Jump to latest ↓
        </button>
      )}
    </>
  );
}
