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
