// The same channels through @laravel/echo-react's hooks, on the Echo that configureEcho()
// set up (main.tsx): the public `messages` channel, the user's notifications and a
// presence channel's members.
import { useEchoNotification, useEchoPresence, useEchoPublic } from "@laravel/echo-react";
import { useEffect, useState } from "react";
import type { Message, User } from "./pgcast";

/** Channel `presence-lobby`: every signed-in user may join it under pgcast's default rule. */
export const PRESENCE_ROOM = "lobby";

type Member = { name: string; avatar_url: string | null };
type Notification = { id: string; type: string; [field: string]: unknown };

function Messages() {
  const [messages, setMessages] = useState<Message[]>([]);
  // A leading dot: the event name as pgcast sends it, without Laravel's App\Events namespace.
  useEchoPublic<{ message: Message }>("messages", ".new-message", (e) =>
    setMessages((prev) => [...prev, e.message]),
  );
  return (
    <section aria-labelledby="messages-title">
      <h2 id="messages-title">Messages (useEchoPublic)</h2>
      <ul aria-label="Messages">
        {messages.map((message) => (
          <li key={message.id}>
            <strong>{message.user.name ?? "someone"}</strong>: {message.content}
          </li>
        ))}
      </ul>
    </section>
  );
}

function Notifications({ user }: { user: User }) {
  const [notifications, setNotifications] = useState<Notification[]>([]);
  // pgcast publishes a user's notifications on `private-user.{id}`, authorized by its own
  // /broadcasting/auth for that user only.
  useEchoNotification<Record<string, unknown>>(`user.${user.id}`, (n) =>
    setNotifications((prev) => [...prev, n]),
  );
  return (
    <section aria-labelledby="notifications-title">
      <h2 id="notifications-title">Notifications (useEchoNotification)</h2>
      <ul aria-label="Notifications">
        {notifications.map((n) => (
          <li key={n.id}>
            <strong>{n.type}</strong> {JSON.stringify(withoutIdAndType(n))}
          </li>
        ))}
      </ul>
    </section>
  );
}

function withoutIdAndType({ id: _id, type: _type, ...rest }: Notification) {
  return rest;
}

function Presence() {
  const [members, setMembers] = useState<Member[]>([]);
  const { channel } = useEchoPresence(PRESENCE_ROOM);
  // The hook joins the channel in its own effect, which runs before this one; the member
  // list arrives later, with the subscription.
  useEffect(() => {
    const room = channel();
    if (room === null) return;
    room
      .here((here: Member[]) => setMembers(here))
      .joining((member: Member) =>
        setMembers((prev) => (prev.some((m) => m.name === member.name) ? prev : [...prev, member])),
      )
      .leaving((member: Member) => setMembers((prev) => prev.filter((m) => m.name !== member.name)));
  }, [channel]);
  return (
    <section aria-labelledby="presence-title">
      <h2 id="presence-title">Here now (useEchoPresence)</h2>
      <ul aria-label="Members">
        {members.map((member) => (
          <li key={member.name}>{member.name}</li>
        ))}
      </ul>
    </section>
  );
}

export function Live({ user }: { user: User }) {
  return (
    <>
      <Messages />
      <Notifications user={user} />
      <Presence />
    </>
  );
}
