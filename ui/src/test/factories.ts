import type { DirectMessage, Message, Notification, User } from "../lib/types";

export const ALICE: User = { id: 1, name: "Alice Liddell", avatar_url: null };
export const BOB: User = { id: 2, name: "Bob Builder", avatar_url: null };

export function makeMessage(id: number, overrides: Partial<Message> = {}): Message {
  const user = overrides.user === undefined ? ALICE : overrides.user;
  const createdAt = new Date(Date.UTC(2025, 0, 1, 12, 0, id)).toISOString();
  return {
    id,
    user_id: user?.id ?? 999,
    content: `message ${id}`,
    created_at: createdAt,
    updated_at: createdAt,
    user,
    ...overrides,
  };
}

export function newMessageFrame(message: Message, cursor: string) {
  return { event: "new-message", channel: "messages", data: { message }, cursor };
}

export const CAROL: User = { id: 3, name: "Carol Danvers", avatar_url: null };

/** A direct message; from Bob to Alice unless `overrides` say otherwise. */
export function makeDirectMessage(id: number, overrides: Partial<DirectMessage> = {}): DirectMessage {
  const sender = overrides.sender ?? BOB;
  const recipient = overrides.recipient ?? ALICE;
  const createdAt = new Date(Date.UTC(2025, 0, 1, 12, 0, id)).toISOString();
  return {
    id,
    sender_id: sender.id,
    recipient_id: recipient.id,
    content: `dm ${id}`,
    created_at: createdAt,
    updated_at: createdAt,
    read_at: null,
    sender,
    recipient,
    ...overrides,
  };
}

export function makeNotification(id: string, overrides: Partial<Notification> = {}): Notification {
  return {
    id,
    type: "invoice-paid",
    data: { title: `notification ${id}` },
    read_at: null,
    created_at: "2025-01-01T12:00:00.000Z",
    ...overrides,
  };
}

export function directMessageFrame(
  event: "new-direct-message" | "direct-message-updated",
  directMessage: DirectMessage,
  cursor: string,
  userId = ALICE.id,
) {
  return { event, channel: `private-user.${userId}`, data: { direct_message: directMessage }, cursor };
}

/** What the server sends for a new notification: Laravel's event, the data plus id and type. */
export function notificationCreatedFrame(notification: Notification, cursor: string, userId = ALICE.id) {
  return {
    event: "Illuminate\\Notifications\\Events\\BroadcastNotificationCreated",
    channel: `private-user.${userId}`,
    data: { ...notification.data, id: notification.id, type: notification.type },
    cursor,
  };
}

export function notificationUpdatedFrame(notification: Notification, cursor: string, userId = ALICE.id) {
  return {
    event: "notification-updated",
    channel: `private-user.${userId}`,
    data: { notification },
    cursor,
  };
}

/** A user as a presence channel names them: a string id and their `user_info`. */
export function presenceMember(user: User) {
  return { user_id: String(user.id), user_info: { name: user.name, avatar_url: user.avatar_url } };
}

/** The list the server sends once a socket is live: it replaces the one shown. */
export function presenceFrame(users: User[], channel = "presence-lobby") {
  return { event: "presence", channel, data: { members: users.map(presenceMember) } };
}

export function memberAddedFrame(user: User, cursor: string, channel = "presence-lobby") {
  return { event: "member_added", channel, data: presenceMember(user), cursor };
}

export function memberRemovedFrame(user: User, cursor: string, channel = "presence-lobby") {
  return { event: "member_removed", channel, data: { user_id: String(user.id) }, cursor };
}
