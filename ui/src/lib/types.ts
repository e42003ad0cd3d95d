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

export type ConnectionState = "connecting" | "live" | "reconnecting" | "offline";

/** A change to the feed, whether it came from the socket or from our own POST. */
export type FeedEvent =
  | { type: "created"; message: Message }
  | { type: "updated"; message: Message }
  | { type: "deleted"; id: number };
