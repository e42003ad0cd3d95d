import { useFeedScroll } from "../hooks/useFeedScroll";
import { useFocusOnMount } from "../hooks/useFocusOnMount";
import { useNow } from "../hooks/useNow";
import type { DirectMessage, User } from "../lib/types";
import { Avatar } from "./Avatar";
import { Composer } from "./Composer";
import { DirectMessageItem } from "./DirectMessageItem";

export interface ConversationViewProps {
  me: number;
  user: User;
  messages: DirectMessage[];
  loaded: boolean;
  loadError: string | null;
  hasOlder: boolean;
  loadingOlder: boolean;
  olderError: string | null;
  maxChars: number;
  onLoadOlder(): void;
  onRetry(): void;
  onSend(content: string): Promise<void>;
  /** Back to the list of conversations (the phone layout shows one view at a time). */
  onBack(): void;
}

function newestSeenOfMine(messages: DirectMessage[], me: number): number | null {
  let newest: number | null = null;
  for (const message of messages) {
    if (message.sender_id === me && message.read_at !== null) {
      newest = newest === null ? message.id : Math.max(newest, message.id);
    }
  }
  return newest;
}

export function ConversationView({
  me,
  user,
  messages,
  loaded,
  loadError,
  hasOlder,
  loadingOlder,
  olderError,
  maxChars,
  onLoadOlder,
  onRetry,
  onSend,
  onBack,
}: ConversationViewProps) {
  const now = useNow();
  const { containerRef, onScroll, atBottom, scrollToBottom } = useFeedScroll(messages, onLoadOlder);
  // Opening a conversation moves focus to it, so a screen reader says whose it is.
  const heading = useFocusOnMount<HTMLHeadingElement>(user.id);
  const seen = newestSeenOfMine(messages, me);

  return (
    <section className="conversation-view" aria-labelledby="conversation-heading">
      <div className="conversation-header">
        <button type="button" className="button-secondary back-button" onClick={onBack}>
          ← Chats
        </button>
        <Avatar user={user} />
        <h2 id="conversation-heading" ref={heading} tabIndex={-1} className="conversation-title">
          {user.name}
        </h2>
      </div>
      <div className="feed">
        <div
          ref={containerRef}
          className="feed-scroll"
          role="log"
          aria-live="polite"
          aria-label={`Conversation with ${user.name}`}
          aria-busy={!loaded || loadingOlder}
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
                Could not load the conversation: {loadError}
              </p>
              <button type="button" onClick={onRetry}>
                Try again
              </button>
            </div>
          )}
          {!loaded && !loadError && <p className="feed-notice">Loading the conversation…</p>}
          {loaded && messages.length === 0 && (
            <p className="feed-notice">No messages yet. Only you and {user.name} will see them.</p>
          )}
          <ol className="dm-list">
            {messages.map((message) => (
              <DirectMessageItem
                key={message.id}
                message={message}
                mine={message.sender_id === me}
                seen={message.id === seen}
                now={now}
              />
            ))}
          </ol>
        </div>
        {!atBottom && (
          <button type="button" className="jump-to-latest" onClick={scrollToBottom}>
            Jump to latest ↓
          </button>
        )}
      </div>
      <Composer
        maxChars={maxChars}
        onSend={onSend}
        label={`Message to ${user.name}`}
        placeholder={`Write to ${user.name}…`}
      />
    </section>
  );
}
