import { vi } from "vitest";
import type { AppConfig, Message, User } from "../lib/types";

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
    if (!this.user) return error(401, "unauthenticated", "Sign in first.");
    if (route === "GET /api/me") return { status: 200, body: { user: this.user } };
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
