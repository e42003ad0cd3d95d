import { memo } from "react";
import { formatExactTime, formatRelativeTime } from "../lib/format";
import type { DirectMessage } from "../lib/types";

export const DirectMessageItem = memo(function DirectMessageItem({
  message,
  mine,
  seen,
  now,
}: {
  message: DirectMessage;
  mine: boolean;
  /** Show "Seen" under it: the newest of mine the other person has read. */
  seen: boolean;
  now: number;
}) {
  return (
    <li
      className={mine ? "dm dm-mine" : "dm dm-theirs"}
      data-direct-message-id={message.id}
    >
      <span className="visually-hidden">{mine ? "You" : message.sender.name}: </span>
      {/* Plain text child: React escapes it, so markup in a message stays visible text. */}
      <p className="dm-content">{message.content}</p>
      <p className="dm-meta">
        <time dateTime={message.created_at} title={formatExactTime(message.created_at)}>
          {formatRelativeTime(message.created_at, now)}
        </time>
        {seen && message.read_at && (
          <span className="dm-seen" title={`Seen ${formatExactTime(message.read_at)}`}>
            {" · Seen"}
          </span>
        )}
      </p>
    </li>
  );
});
