import type { ConnectionState, FeedEvent, Message } from "./types";

/**
 * One WebSocket per tab to `/ws`, kept alive across network trouble.
 *
 * The server replays every broadcast committed after `?after=<cursor>`, so as long as
 * we reconnect with the last cursor we saw, nothing is missed or repeated. When the
 * server cannot honour the cursor (close 4400), we start fresh and tell the caller to
 * reload history (`onConnected` with `resumed: false`).
 */

/** The part of the browser WebSocket this class uses, so tests can pass a fake. */
export interface SocketLike {
  readonly readyState: number;
  onopen: ((event: Event) => void) | null;
  onmessage: ((event: MessageEvent) => void) | null;
  onclose: ((event: CloseEvent) => void) | null;
  onerror: ((event: Event) => void) | null;
  close(code?: number, reason?: string): void;
}

export interface Timers {
  setTimeout(callback: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

/** Browser signals that say "try again now" instead of waiting out the backoff. */
export interface Environment {
  window: Pick<EventTarget, "addEventListener" | "removeEventListener">;
  document: Pick<EventTarget, "addEventListener" | "removeEventListener"> & {
    readonly visibilityState: DocumentVisibilityState;
  };
  isOnline(): boolean;
}

export interface RealtimeHandlers {
  onStateChange?(state: ConnectionState): void;
  onEvent?(event: FeedEvent): void;
  /** `resumed: false` means the feed may have a gap: reload the first page of history. */
  onConnected?(info: { socketId: string; resumed: boolean }): void;
  /** The server says the session is gone (close 4401, or a refused upgrade plus /api/me 401). */
  onSignedOut?(): void;
}

export interface RealtimeOptions {
  /** ws:// or wss:// URL of `/ws`, without a query. */
  url: string;
  handlers: RealtimeHandlers;
  createSocket?: (url: string) => SocketLike;
  timers?: Timers;
  random?: () => number;
  now?: () => number;
  baseDelayMs?: number;
  maxDelayMs?: number;
  /** A socket that stayed live this long resets the backoff; a flapping one does not. */
  stableAfterMs?: number;
  /** Asked after a refused upgrade, which a browser cannot tell apart from a network error. */
  checkSignedIn?: () => Promise<boolean>;
  environment?: Environment;
}

/** Close codes the server uses (shared/CONTRACT.md). */
export const CLOSE_CURSOR_UNUSABLE = 4400;
export const CLOSE_UNAUTHORIZED = 4401;

const SOCKET_CONNECTING = 0;

export function realtimeUrl(location: Pick<Location, "protocol" | "host"> = window.location): string {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}/ws`;
}

/** Full jitter: spreads reconnecting tabs out after a server restart instead of a stampede. */
export function backoffDelay(
  attempt: number,
  random: () => number,
  baseMs: number,
  maxMs: number,
): number {
  const ceiling = Math.min(maxMs, baseMs * 2 ** attempt);
  return Math.floor(random() * ceiling);
}

interface Frame {
  event: string;
  channel?: string;
  data?: Record<string, unknown>;
  cursor?: string;
}

function parseFrame(raw: unknown): Frame | null {
  if (typeof raw !== "string") return null;
  try {
    const value: unknown = JSON.parse(raw);
    if (typeof value !== "object" || value === null) return null;
    const frame = value as Record<string, unknown>;
    if (typeof frame.event !== "string") return null;
    return {
      event: frame.event,
      ...(typeof frame.channel === "string" ? { channel: frame.channel } : {}),
      ...(typeof frame.data === "object" && frame.data !== null
        ? { data: frame.data as Record<string, unknown> }
        : {}),
      ...(typeof frame.cursor === "string" ? { cursor: frame.cursor } : {}),
    };
  } catch {
    return null;
  }
}

function isMessage(value: unknown): value is Message {
  if (typeof value !== "object" || value === null) return false;
  const message = value as Record<string, unknown>;
  return typeof message.id === "number" && typeof message.content === "string";
}

function feedEventFrom(frame: Frame): FeedEvent | null {
  const data = frame.data ?? {};
  switch (frame.event) {
    case "new-message":
      return isMessage(data.message) ? { type: "created", message: data.message } : null;
    case "message-updated":
      return isMessage(data.message) ? { type: "updated", message: data.message } : null;
    case "message-deleted":
      return typeof data.id === "number" ? { type: "deleted", id: data.id } : null;
    default:
      return null;
  }
}

function browserEnvironment(): Environment {
  return { window, document, isOnline: () => navigator.onLine !== false };
}

const browserTimers: Timers = {
  setTimeout: (callback, ms) => globalThis.setTimeout(callback, ms),
  clearTimeout: (handle) => globalThis.clearTimeout(handle as ReturnType<typeof setTimeout>),
};

export class RealtimeConnection {
  private readonly url: string;
  private readonly handlers: RealtimeHandlers;
  private readonly createSocket: (url: string) => SocketLike;
  private readonly timers: Timers;
  private readonly random: () => number;
  private readonly now: () => number;
  private readonly baseDelayMs: number;
  private readonly maxDelayMs: number;
  private readonly stableAfterMs: number;
  private readonly checkSignedIn: () => Promise<boolean>;
  private readonly environment: Environment;

  private running = false;
  private socket: SocketLike | null = null;
  private socketOpened = false;
  private retryTimer: unknown = null;
  private attempt = 0;
  private liveSince: number | null = null;
  private _state: ConnectionState = "offline";
  private _cursor: string | null = null;
  private _socketId: string | null = null;

  constructor(options: RealtimeOptions) {
    this.url = options.url;
    this.handlers = options.handlers;
    this.createSocket = options.createSocket ?? ((url) => new WebSocket(url));
    this.timers = options.timers ?? browserTimers;
    this.random = options.random ?? Math.random;
    this.now = options.now ?? Date.now;
    this.baseDelayMs = options.baseDelayMs ?? 500;
    this.maxDelayMs = options.maxDelayMs ?? 30_000;
    this.stableAfterMs = options.stableAfterMs ?? 10_000;
    this.checkSignedIn = options.checkSignedIn ?? (() => Promise.resolve(true));
    this.environment = options.environment ?? browserEnvironment();
  }

  get state(): ConnectionState {
    return this._state;
  }

  /** The position after the last broadcast seen; resumes from here after a reconnect. */
  get cursor(): string | null {
    return this._cursor;
  }

  /** Sent as X-Socket-ID with our own posts; null while no socket is live. */
  get socketId(): string | null {
    return this._socketId;
  }

  start(): void {
    if (this.running) return;
    this.running = true;
    this.environment.window.addEventListener("online", this.handleOnline);
    this.environment.window.addEventListener("offline", this.handleOffline);
    this.environment.document.addEventListener("visibilitychange", this.handleVisibilityChange);
    this.setState("connecting");
    this.open();
  }

  stop(): void {
    if (!this.running) return;
    this.running = false;
    this.environment.window.removeEventListener("online", this.handleOnline);
    this.environment.window.removeEventListener("offline", this.handleOffline);
    this.environment.document.removeEventListener("visibilitychange", this.handleVisibilityChange);
    this.clearRetry();
    this.discardSocket();
    this.setState("offline");
  }

  /** Skip the remaining backoff: used when the tab becomes visible or the network returns. */
  reconnectNow(): void {
    if (!this.running || this.socket !== null) return;
    this.clearRetry();
    this.open();
  }

  private open(): void {
    const url =
      this._cursor === null ? this.url : `${this.url}?after=${encodeURIComponent(this._cursor)}`;
    const socket = this.createSocket(url);
    this.socket = socket;
    this.socketOpened = false;
    socket.onopen = () => {
      if (socket === this.socket) this.socketOpened = true;
    };
    socket.onmessage = (event) => {
      if (socket === this.socket) this.handleFrame(parseFrame(event.data));
    };
    socket.onclose = (event) => {
      if (socket === this.socket) this.handleClose(event.code);
    };
    // Every error is followed by a close event, which is where recovery happens.
    socket.onerror = null;
  }

  private handleFrame(frame: Frame | null): void {
    if (frame === null) return;
    if (frame.event === "connected") {
      this.handleConnected(frame.data ?? {});
      return;
    }
    const event = feedEventFrom(frame);
    if (event) this.handlers.onEvent?.(event);
    if (frame.cursor !== undefined) this._cursor = frame.cursor;
  }

  private handleConnected(data: Record<string, unknown>): void {
    const resumed = this._cursor !== null;
    // On a resumed socket the replay that follows carries its own cursors; adopting the
    // server's head here would skip whatever the replay has not delivered yet.
    if (!resumed && typeof data.cursor === "string") this._cursor = data.cursor;
    const socketId = typeof data.socket_id === "string" ? data.socket_id : "";
    this._socketId = socketId || null;
    this.liveSince = this.now();
    this.setState("live");
    this.handlers.onConnected?.({ socketId, resumed });
  }

  private handleClose(code: number): void {
    const upgraded = this.socketOpened;
    this.socket = null;
    this._socketId = null;
    if (this.liveSince !== null && this.now() - this.liveSince >= this.stableAfterMs) {
      this.attempt = 0;
    }
    this.liveSince = null;
    if (!this.running) return;

    if (code === CLOSE_UNAUTHORIZED) {
      this.signOut();
      return;
    }
    if (code === CLOSE_CURSOR_UNUSABLE) this._cursor = null;

    if (!upgraded) {
      // A browser reports a refused upgrade (401, 403) exactly like a network failure.
      this.setState("reconnecting");
      this.checkSignedIn().then(
        (signedIn) => {
          if (!this.running || this.socket !== null) return;
          if (signedIn) this.scheduleRetry();
          else this.signOut();
        },
        () => {
          if (this.running && this.socket === null) this.scheduleRetry();
        },
      );
      return;
    }
    this.scheduleRetry();
  }

  private scheduleRetry(): void {
    this.clearRetry();
    if (!this.environment.isOnline()) {
      // Retrying without a network only burns the backoff; the "online" event resumes.
      this.setState("offline");
      return;
    }
    this.setState("reconnecting");
    const delay = backoffDelay(this.attempt, this.random, this.baseDelayMs, this.maxDelayMs);
    this.attempt += 1;
    this.retryTimer = this.timers.setTimeout(() => {
      this.retryTimer = null;
      if (this.running && this.socket === null) this.open();
    }, delay);
  }

  private clearRetry(): void {
    if (this.retryTimer === null) return;
    this.timers.clearTimeout(this.retryTimer);
    this.retryTimer = null;
  }

  private signOut(): void {
    this.stop();
    this.handlers.onSignedOut?.();
  }

  private discardSocket(): void {
    const socket = this.socket;
    this.socket = null;
    this._socketId = null;
    if (socket === null) return;
    socket.onmessage = null;
    socket.onclose = null;
    socket.onerror = null;
    if (socket.readyState === SOCKET_CONNECTING) {
      // Closing mid-handshake makes browsers log an error; close once it is open instead.
      socket.onopen = () => socket.close(1000);
    } else {
      socket.onopen = null;
      socket.close(1000);
    }
  }

  private setState(state: ConnectionState): void {
    if (state === this._state) return;
    this._state = state;
    this.handlers.onStateChange?.(state);
  }

  private readonly handleOnline = (): void => {
    this.reconnectNow();
  };

  private readonly handleOffline = (): void => {
    if (this.running && this.socket === null) {
      this.clearRetry();
      this.setState("offline");
    }
  };

  private readonly handleVisibilityChange = (): void => {
    if (this.environment.document.visibilityState === "visible") this.reconnectNow();
  };
}
