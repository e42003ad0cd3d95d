import { memo } from "react";
import { formatExactTime, formatRelativeTime } from "../lib/format";
import type { Message } from "../lib/types";
import { Avatar } from "./Avatar";

const EDIT_THRESHOLD_MS = 1000;

function wasEdited(message: Message): boolean {
  return Date.parse(message.updated_at) - Date.parse(message.created_at) > EDIT_THRESHOLD_MS;
}

export const MessageItem = memo(function MessageItem({
  message,
  now,
}: {
  message: Message;
  now: number;
}) {
  const author = message.user?.name ?? "deleted user";
  return (
    <li className="message" data-message-id={message.id}>
      <Avatar user={message.user} />
      <div className="message-body">
        <div className="message-meta">
          <span className={message.user ? "message-author" : "message-author message-author-deleted"}>
            {author}
          </span>
          <time dateTime={message.created_at} title={formatExactTime(message.created_at)}>
            {formatRelativeTime(message.created_at, now)}
          </time>
          {wasEdited(message) && (
            <span className="message-edited" title={`Edited ${formatExactTime(message.updated_at)}`}>
              (edited)
            </span>
          )}
        </div>
        {/* Plain text child: React escapes it, so markup in a message stays visible text. */}
        <p className="message-content">{message.content}</p>
      </div>
    </li>
  );
});
