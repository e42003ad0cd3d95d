import { useFocusOnMount } from "../hooks/useFocusOnMount";
import type { HistoryControls } from "../hooks/useLiveHistory";
import { useNow } from "../hooks/useNow";
import type { DirectMessage, User } from "../lib/types";
import { Avatar } from "./Avatar";
import { Composer } from "./Composer";
import { DirectMessageItem } from "./DirectMessageItem";
import { HistoryLog } from "./HistoryLog";

export interface ConversationViewProps {
  me: number;
  user: User;
  thread: HistoryControls<DirectMessage>;
  maxChars: number;
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
  thread,
  maxChars,
  onSend,
  onBack,
}: ConversationViewProps) {
  const now = useNow();
  // Opening a conversation moves focus to it, so a screen reader says whose it is.
  const heading = useFocusOnMount<HTMLHeadingElement>(user.id);
  const seen = newestSeenOfMine(thread.messages, me);

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
        <HistoryLog
          history={thread}
          label={`Conversation with ${user.name}`}
          what="the conversation"
          empty={`No messages yet. Only you and ${user.name} will see them.`}
          listClassName="dm-list"
        >
          {thread.messages.map((message) => (
            <DirectMessageItem
              key={message.id}
              message={message}
              mine={message.sender_id === me}
              seen={message.id === seen}
              now={now}
            />
          ))}
        </HistoryLog>
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
