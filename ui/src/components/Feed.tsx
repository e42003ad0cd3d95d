import { useFeedScroll } from "../hooks/useFeedScroll";
import { useNow } from "../hooks/useNow";
import type { Message } from "../lib/types";
import { MessageItem } from "./MessageItem";

export interface FeedProps {
  messages: Message[];
  loaded: boolean;
  loadError: string | null;
  hasOlder: boolean;
  loadingOlder: boolean;
  olderError: string | null;
  onLoadOlder(): void;
  onRetry(): void;
}

export function Feed({
  messages,
  loaded,
  loadError,
  hasOlder,
  loadingOlder,
  olderError,
  onLoadOlder,
  onRetry,
}: FeedProps) {
  const now = useNow();
  const { containerRef, onScroll, atBottom, scrollToBottom } = useFeedScroll(
    messages,
    onLoadOlder,
  );

  return (
    <section className="feed" aria-labelledby="feed-heading">
      <h2 id="feed-heading" className="visually-hidden">
        Messages
      </h2>
      <div
        ref={containerRef}
        className="feed-scroll"
        role="log"
        aria-live="polite"
        aria-label="Messages"
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
              Could not load messages: {loadError}
            </p>
            <button type="button" onClick={onRetry}>
              Try again
            </button>
          </div>
        )}
        {!loaded && !loadError && <p className="feed-notice">Loading messages…</p>}
        {loaded && messages.length === 0 && (
          <p className="feed-notice">No messages yet. Say hello!</p>
        )}
        <ol className="message-list">
          {messages.map((message) => (
            <MessageItem key={message.id} message={message} now={now} />
          ))}
        </ol>
      </div>
      {!atBottom && (
        <button type="button" className="jump-to-latest" onClick={scrollToBottom}>
          Jump to latest ↓
        </button>
      )}
    </section>
  );
}
