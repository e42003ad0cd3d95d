import type { Message, User } from "../lib/types";

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
