import { vi } from "vitest";
import type { AppConfig, DirectMessage, Message, Notification, User } from "../lib/types";

export interface RecordedRequest {
  method: string;
  path: string;
  headers: Headers;
  body: unknown;
  signal: AbortSignal | null;
}

type Reply = { status: number; body?: unknown };

/** Replies held back by `FakeServer.hold`, delivered on `release()`. */
export interface Hold {
  /** How many matching requests it has caught so far. */
  readonly caught: number;
  /** Delivers every caught reply, and lets later matching requests through. */
  release(): void;
}

interface HoldRule {
  method: string;
  pathPrefix: string;
  skip: number;
  count: number;
  released: boolean;
  waiting: (() => void)[];
  caught: number;
}

/**
 * A stand-in for the pgcast HTTP API, installed as `fetch`. Tests set its state and
 * read `requests` to see what the UI asked for.
 */
export class FakeServer {
  config: AppConfig = { auth: { workos: false, dev_login: true }, max_message_chars: 10_000 };
  user: User | null = null;
  /** All stored messages, ascending by id. */
  messages: Message[] = [];
  requests: RecordedRequest[] = [];
  nextId = 1000;
  /** Overrides the reply to the next POST /api/messages. */
  nextPostReply: Reply | null = null;
  /** Everyone else who has signed in: whom `/api/users` finds and one may write to. */
  people: User[] = [];
  /** Every direct message of every user, ascending by id. */
  directMessages: DirectMessage[] = [];
  /** Every notification of the signed-in user. */
  notifications: Notification[] = [];
  /** Overrides the reply to the next POST /api/direct-messages. */
  nextDirectPostReply: Reply | null = null;
  private holds: HoldRule[] = [];

  install(): void {
    vi.stubGlobal("fetch", vi.fn(this.handle));
  }

  /**
   * Holds back the replies to matching requests (after letting the first `skip` through,
   * and at most `count` of them) until `release()`: a slow network. Each reply is made
   * when its request arrives, from the state the server had then; an aborted request
   * rejects at once, as `fetch` does.
   */
  hold(method: string, pathPrefix: string, { skip = 0, count = Infinity } = {}): Hold {
    const rule: HoldRule = { method, pathPrefix, skip, count, released: false, waiting: [], caught: 0 };
    this.holds.push(rule);
    return {
      get caught() {
        return rule.caught;
      },
      release: () => {
        rule.released = true;
        for (const resume of rule.waiting.splice(0)) resume();
      },
    };
  }

  requestsTo(method: string, pathPrefix: string): RecordedRequest[] {
    return this.requests.filter(
      (request) => request.method === method && request.path.startsWith(pathPrefix),
    );
  }

  private readonly handle = async (input: RequestInfo | URL, init: RequestInit = {}) => {
    const url = new URL(String(input), "http://pgcast.test");
    const method = (init.method ?? "GET").toUpperCase();
    const headers = new Headers(init.headers);
    const body: unknown = typeof init.body === "string" ? JSON.parse(init.body) : undefined;
    const path = url.pathname + url.search;
    const signal = init.signal ?? null;
    this.requests.push({ method, path, headers, body, signal });
    const reply = this.route(method, url, body);
    await this.heldBack(method, path, signal);
    return new Response(reply.body === undefined ? null : JSON.stringify(reply.body), {
      status: reply.status,
      headers: { "Content-Type": "application/json" },
    });
  };

  private heldBack(method: string, path: string, signal: AbortSignal | null): Promise<void> {
    const rule = this.holds.find(
      (hold) =>
        !hold.released &&
        hold.caught < hold.count &&
        hold.method === method &&
        path.startsWith(hold.pathPrefix),
    );
    if (!rule) return Promise.resolve();
    if (rule.skip > 0) {
      rule.skip -= 1;
      return Promise.resolve();
    }
    rule.caught += 1;
    return new Promise((resolve, reject) => {
      rule.waiting.push(resolve);
      signal?.addEventListener("abort", () =>
        reject(new DOMException("The operation was aborted.", "AbortError")),
      );
    });
  }

  private route(method: string, url: URL, body: unknown): Reply {
    const route = `${method} ${url.pathname}`;
    if (route === "GET /api/config") return { status: 200, body: this.config };
    if (route === "POST /auth/dev-login") {
      const { email, name } = body as { email: string; name: string };
      this.user = { id: 42, name, avatar_url: null };
      return { status: 200, body: { user: { ...this.user, email } } };
    }
    if (route === "GET /api/session") return { status: 200, body: { user: this.user } };
    if (!this.user) return error(401, "unauthenticated", "Sign in first.");
    if (route === "GET /api/me") return { status: 200, body: { user: this.user } };
    const privateReply = this.routePrivate(route, url, body, this.user);
    if (privateReply) return privateReply;
    if (route === "GET /api/messages") return { status: 200, body: this.page(url.searchParams) };
    if (route === "POST /api/messages") {
      if (this.nextPostReply) {
        const reply = this.nextPostReply;
        this.nextPostReply = null;
        return reply;
      }
      const message = this.store((body as { content: string }).content, this.user);
      return { status: 201, body: message };
    }
    return error(404, "not_found", "No such route.");
  }

  private routePrivate(route: string, url: URL, body: unknown, me: User): Reply | null {
    const params = url.searchParams;
    if (route === "POST /api/direct-messages") {
      if (this.nextDirectPostReply) {
        const reply = this.nextDirectPostReply;
        this.nextDirectPostReply = null;
        return reply;
      }
      const { recipient_id: recipientId, content } = body as { recipient_id: number; content: string };
      const recipient = this.people.find((person) => person.id === recipientId);
      if (!recipient || recipientId === me.id) {
        return error(422, "invalid_recipient", "There is no such user to write to.");
      }
      return { status: 201, body: { direct_message: this.storeDirect(content, me, recipient) } };
    }
    if (route === "GET /api/direct-messages") {
      const other = Number(params.get("with"));
      const limit = Number(params.get("limit") ?? 50);
      const before = params.has("before") ? Number(params.get("before")) : Infinity;
      const older = this.conversationWith(me.id, other).filter((dm) => dm.id < before);
      const page = older.slice(-limit);
      const hasMore = older.length > page.length;
      return {
        status: 200,
        body: { direct_messages: page, next_before: hasMore ? (page[0]?.id ?? null) : null },
      };
    }
    if (route === "GET /api/conversations") {
      return { status: 200, body: { conversations: this.conversations(me.id) } };
    }
    if (route === "POST /api/direct-messages/read") {
      const other = (body as { with: number }).with;
      const now = new Date().toISOString();
      let marked = 0;
      this.directMessages = this.directMessages.map((dm) => {
        if (dm.recipient_id !== me.id || dm.sender_id !== other || dm.read_at !== null) return dm;
        marked += 1;
        return { ...dm, read_at: now };
      });
      return { status: 200, body: { marked_read: marked } };
    }
    if (route === "GET /api/notifications") {
      const limit = Number(params.get("limit") ?? 50);
      const newest = this.notificationsNewestFirst();
      const before = params.get("before");
      const start = before === null ? 0 : newest.findIndex((n) => n.id === before) + 1;
      const page = newest.slice(start, start + limit);
      const hasMore = newest.length > start + page.length;
      return {
        status: 200,
        body: {
          notifications: page,
          next_before: hasMore ? (page.at(-1)?.id ?? null) : null,
          unread_count: newest.filter((n) => n.read_at === null).length,
        },
      };
    }
    if (route === "POST /api/notifications/read-all") {
      const now = new Date().toISOString();
      let marked = 0;
      this.notifications = this.notifications.map((n) => {
        if (n.read_at !== null) return n;
        marked += 1;
        return { ...n, read_at: now };
      });
      return { status: 200, body: { marked_read: marked } };
    }
    const readOne = /^POST \/api\/notifications\/([^/]+)\/read$/.exec(route);
    if (readOne) {
      const id = decodeURIComponent(readOne[1] ?? "");
      const found = this.notifications.find((n) => n.id === id);
      if (!found) return error(404, "not_found", "You have no such notification.");
      const read = found.read_at === null ? { ...found, read_at: new Date().toISOString() } : found;
      this.notifications = this.notifications.map((n) => (n.id === id ? read : n));
      return { status: 200, body: { notification: read } };
    }
    if (route === "GET /api/users") {
      const query = (params.get("query") ?? "").trim().toLowerCase();
      const users = this.people
        .filter((person) => person.id !== me.id && person.name.toLowerCase().includes(query))
        .slice(0, 20);
      return { status: 200, body: { users } };
    }
    return null;
  }

  /** Stores a direct message as the server would, and returns it. */
  storeDirect(content: string, sender: User, recipient: User): DirectMessage {
    const now = new Date().toISOString();
    const message: DirectMessage = {
      id: this.nextId++,
      sender_id: sender.id,
      recipient_id: recipient.id,
      content,
      created_at: now,
      updated_at: now,
      read_at: null,
      sender,
      recipient,
    };
    this.directMessages.push(message);
    return message;
  }

  conversationWith(me: number, other: number): DirectMessage[] {
    return this.directMessages.filter(
      (dm) =>
        (dm.sender_id === me && dm.recipient_id === other) ||
        (dm.sender_id === other && dm.recipient_id === me),
    );
  }

  private conversations(me: number) {
    const latest = new Map<number, DirectMessage>();
    for (const dm of this.directMessages) {
      if (dm.sender_id !== me && dm.recipient_id !== me) continue;
      const other = dm.sender_id === me ? dm.recipient : dm.sender;
      const last = latest.get(other.id);
      if (!last || dm.id > last.id) latest.set(other.id, dm);
    }
    return [...latest.values()]
      .sort((a, b) => b.id - a.id)
      .map((last) => {
        const user = last.sender_id === me ? last.recipient : last.sender;
        const unread = this.directMessages.filter(
          (dm) => dm.recipient_id === me && dm.sender_id === user.id && dm.read_at === null,
        ).length;
        return { user, last_message: last, unread_count: unread };
      });
  }

  private notificationsNewestFirst(): Notification[] {
    return this.notifications
      .slice()
      .sort((a, b) => b.created_at.localeCompare(a.created_at) || b.id.localeCompare(a.id));
  }

  store(content: string, user: User): Message {
    const now = new Date().toISOString();
    const message: Message = {
      id: this.nextId++,
      user_id: user.id,
      content,
      created_at: now,
      updated_at: now,
      user,
    };
    this.messages.push(message);
    return message;
  }

  private page(params: URLSearchParams) {
    const limit = Number(params.get("limit") ?? 50);
    const before = params.has("before") ? Number(params.get("before")) : Infinity;
    const older = this.messages.filter((message) => message.id < before);
    const messages = older.slice(-limit);
    const hasMore = older.length > messages.length;
    return { messages, next_before: hasMore ? (messages[0]?.id ?? null) : null };
  }
}

export function error(status: number, code: string, message: string): Reply {
  return { status, body: { error: { code, message } } };
}
