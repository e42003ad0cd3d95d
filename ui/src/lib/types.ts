/** Shapes of the pgcast HTTP and WebSocket contract (shared/CONTRACT.md). */

export interface User {
  id: number;
  name: string;
  avatar_url: string | null;
}

export interface Message {
  id: number;
  user_id: number;
  content: string;
  created_at: string;
  updated_at: string;
  /** null once the author has been deleted (the message may still be on screen). */
  user: User | null;
}

export interface MessagePage {
  /** Oldest first. */
  messages: Message[];
  /** Pass as `before` to get the next older page; null when there is none. */
  next_before: number | null;
}

export interface AppConfig {
  auth: { workos: boolean; dev_login: boolean };
  max_message_chars: number;
}

/** A private message between two users; both receive every change to it. */
export interface DirectMessage {
  id: number;
  sender_id: number;
  recipient_id: number;
  content: string;
  created_at: string;
  updated_at: string;
  /** When the recipient read it; null while unread. */
  read_at: string | null;
  sender: User;
  recipient: User;
}

export interface DirectMessagePage {
  /** Oldest first. */
  direct_messages: DirectMessage[];
  next_before: number | null;
}

/** One person the user has written with, as `GET /api/conversations` lists them. */
export interface Conversation {
  user: User;
  last_message: DirectMessage;
  /** Messages from `user` the signed-in user has not read. */
  unread_count: number;
}

export interface Notification {
  /** A UUID. */
  id: string;
  type: string;
  data: Record<string, unknown>;
  read_at: string | null;
  created_at: string;
}

export interface NotificationPage {
  /** Newest first. */
  notifications: Notification[];
  /** Pass as `before` for the next older page; null when there is none. */
  next_before: string | null;
  unread_count: number;
}

export type ConnectionState = "connecting" | "live" | "reconnecting" | "offline";

/** A change to the feed, whether it came from the socket or from our own POST. */
export type FeedEvent =
  | { type: "created"; message: Message }
  | { type: "updated"; message: Message }
  | { type: "deleted"; id: number };

/** A change to a direct message of the signed-in user (sent or received). */
export type DirectMessageEvent =
  | { type: "created"; directMessage: DirectMessage }
  | { type: "updated"; directMessage: DirectMessage }
  | { type: "deleted"; id: number };

/** A change to one of the signed-in user's notifications. */
export type NotificationEvent =
  | { type: "created"; notification: Notification }
  | { type: "updated"; notification: Notification }
  | { type: "deleted"; id: string };

/**
 * Someone on a presence channel. Members are users, not tabs: a user with three tabs open
 * is one member. The server names them by a string id (`"7"`) and the `user_info` it holds.
 */
export interface PresenceMember {
  /** The user's id as the server sends it: a string. */
  id: string;
  name: string;
  avatar_url: string | null;
}

/**
 * A change to who is on a presence channel. `members` is the server's whole list, sent once
 * the socket is live (after any replay): it replaces whatever the page showed.
 */
export type PresenceEvent =
  | { type: "members"; members: PresenceMember[] }
  | { type: "added"; member: PresenceMember }
  | { type: "removed"; id: string };

/** Every event the socket delivers, routed by its channel and event name. */
export type RealtimeEvent =
  | { kind: "message"; event: FeedEvent }
  | { kind: "direct-message"; event: DirectMessageEvent }
  | { kind: "notification"; event: NotificationEvent }
  | { kind: "presence"; channel: string; event: PresenceEvent };
