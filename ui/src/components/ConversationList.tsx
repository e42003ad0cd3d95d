import { memo } from "react";
import { formatExactTime, formatRelativeTime } from "../lib/format";
import type { Conversation, User } from "../lib/types";
import { Avatar } from "./Avatar";

export interface ConversationListProps {
  conversations: Conversation[];
  me: number;
  /** The conversation on screen: its messages are being read, so no badge. */
  activeUserId: number | null;
  loaded: boolean;
  loadError: string | null;
  now: number;
  onOpen(user: User): void;
  onRetry(): void;
}

export function ConversationList({
  conversations,
  me,
  activeUserId,
  loaded,
  loadError,
  now,
  onOpen,
  onRetry,
}: ConversationListProps) {
  return (
    <section className="conversations" aria-labelledby="conversations-heading">
      <h2 id="conversations-heading" className="sidebar-heading">
        Conversations
      </h2>
      {loadError && (
        <div className="feed-notice">
          <p className="error" role="alert">
            Could not load conversations: {loadError}
          </p>
          <button type="button" onClick={onRetry}>
            Try again
          </button>
        </div>
      )}
      {!loaded && !loadError && <p className="sidebar-note">Loading conversations…</p>}
      {loaded && conversations.length === 0 && (
        <p className="sidebar-note">No conversations yet. Find someone above to write to.</p>
      )}
      <ul className="conversation-list">
        {conversations.map((conversation) => (
          <ConversationEntry
            key={conversation.user.id}
            conversation={conversation}
            mine={conversation.last_message.sender_id === me}
            active={conversation.user.id === activeUserId}
            now={now}
            onOpen={onOpen}
          />
        ))}
      </ul>
    </section>
  );
}

const ConversationEntry = memo(function ConversationEntry({
  conversation,
  mine,
  active,
  now,
  onOpen,
}: {
  conversation: Conversation;
  mine: boolean;
  active: boolean;
  now: number;
  onOpen(user: User): void;
}) {
  const { user, last_message: last } = conversation;
  const unread = active ? 0 : conversation.unread_count;
  return (
    <li data-conversation-with={user.id}>
      <button
        type="button"
        className={active ? "conversation conversation-active" : "conversation"}
        aria-current={active ? "true" : undefined}
        onClick={() => onOpen(user)}
      >
        <Avatar user={user} />
        <span className="conversation-text">
          <span className="conversation-top">
            <span className="conversation-name">{user.name}</span>
            <time dateTime={last.created_at} title={formatExactTime(last.created_at)}>
              {formatRelativeTime(last.created_at, now)}
            </time>
          </span>
          <span className="conversation-preview">
            {mine ? "You: " : ""}
            {last.content}
          </span>
        </span>
        {unread > 0 && (
          // An image with a name, so the count is part of the button's name.
          <span className="badge" role="img" aria-label={`${unread} unread`}>
            {unread > 99 ? "99+" : unread}
          </span>
        )}
      </button>
    </li>
  );
});
