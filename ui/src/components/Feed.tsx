import type { HistoryControls } from "../hooks/useLiveHistory";
import { useNow } from "../hooks/useNow";
import type { Message } from "../lib/types";
import { HistoryLog } from "./HistoryLog";
import { MessageItem } from "./MessageItem";

export function Feed({ history }: { history: HistoryControls<Message> }) {
  const now = useNow();
  return (
    <section className="feed" aria-labelledby="feed-heading">
      <h2 id="feed-heading" className="visually-hidden">
        Messages
      </h2>
      <HistoryLog
        history={history}
        label="Messages"
        what="messages"
        empty="No messages yet. Say hello!"
        listClassName="message-list"
      >
        {history.messages.map((message) => (
          <MessageItem key={message.id} message={message} now={now} />
        ))}
      </HistoryLog>
    </section>
  );
}
