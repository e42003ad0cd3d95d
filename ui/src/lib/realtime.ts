import type {
  ConnectionState,
  DirectMessage,
  DirectMessageEvent,
  FeedEvent,
  Message,
  Notification,
  NotificationEvent,
  PresenceEvent,
  PresenceMember,
  RealtimeEvent,
} from "./types";

/**
 * One WebSocket per tab to `/ws?channels=…`, kept alive across network trouble.
 *
 * The socket listens to every channel the tab needs (the public `messages`, the user's
 * own `private-user.{id}` and the `presence-lobby` of who is online), and one cursor covers
 * them all. The server replays every
 * broadcast of those channels committed after `?after=<cursor>`, so as long as we
 * reconnect with the last cursor we saw, nothing is missed or repeated. When the server
 * cannot honour the cursor (close 4400), we start fresh and tell the caller to reload
 * everything it shows (`onConnected` with `resumed: false`).
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
  onEvent?(event: RealtimeEvent): void;
  /** `resumed: false` means the feed may have a gap: reload the first page of history. */
  onConnected?(info: { socketId: string; resumed: boolean }): void;
  /** The server says the session is gone (close 4401, or a refused upgrade while signed out). */
  onSignedOut?(): void;
  /**
   * The server refused a channel (close 4403), e.g. another tab signed in as someone else.
   * Retrying would be refused again, so the connection stops; `reason` names the channel.
   */
  onForbidden?(reason: string): void;
}

export interface RealtimeOptions {
  /** ws:// or wss:// URL of `/ws`, without a query. */
  url: string;
  /** The channels to listen to; the server's default is `messages` alone. */
  channels?: readonly string[];
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
export const CLOSE_FORBIDDEN = 4403;

export const MESSAGES_CHANNEL = "messages";

/** The signed-in user's own channel: their direct messages and notifications. */
export function userChannel(userId: number): string {
  return `private-user.${userId}`;
}

/**
 * Who is online beside the public feed. Joining it makes the signed-in user a member, so
 * everyone else's list shows them while any of their tabs is open.
 */
export const PRESENCE_CHANNEL = "presence-lobby";

const PRESENCE_PREFIX = "presence-";

/** Laravel's event name for a new notification (what Echo's `.notification()` listens for). */
export const NOTIFICATION_CREATED =
  "Illuminate\\Notifications\\Events\\BroadcastNotificationCreated";

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

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null;
}

function isMessage(value: unknown): value is Message {
  return isObject(value) && typeof value.id === "number" && typeof value.content === "string";
}

function isDirectMessage(value: unknown): value is DirectMessage {
  return (
    isObject(value) &&
    typeof value.id === "number" &&
    typeof value.content === "string" &&
    typeof value.sender_id === "number" &&
    typeof value.recipient_id === "number" &&
    isObject(value.sender) &&
    isObject(value.recipient)
  );
}

function isNotification(value: unknown): value is Notification {
  return (
    isObject(value) &&
    typeof value.id === "string" &&
    typeof value.type === "string" &&
    isObject(value.data) &&
    typeof value.created_at === "string"
  );
}

function feedEventFrom(event: string, data: Record<string, unknown>): FeedEvent | null {
  switch (event) {
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

function directMessageEventFrom(
  event: string,
  data: Record<string, unknown>,
): DirectMessageEvent | null {
  const directMessage = data.direct_message;
  switch (event) {
    case "new-direct-message":
      return isDirectMessage(directMessage) ? { type: "created", directMessage } : null;
    case "direct-message-updated":
      return isDirectMessage(directMessage) ? { type: "updated", directMessage } : null;
    case "direct-message-deleted":
      return typeof data.id === "number" ? { type: "deleted", id: data.id } : null;
    default:
      return null;
  }
}

function notificationEventFrom(
  event: string,
  data: Record<string, unknown>,
  receivedAt: string,
): NotificationEvent | null {
  switch (event) {
    case NOTIFICATION_CREATED: {
      // Laravel's shape: the notification's own data with its id and type mixed in. It is
      // new, so unread, and created about now.
      const { id, type, ...rest } = data;
      if (typeof id !== "string" || typeof type !== "string") return null;
      return {
        type: "created",
        notification: { id, type, data: rest, read_at: null, created_at: receivedAt },
      };
    }
    case "notification-updated":
      return isNotification(data.notification)
        ? { type: "updated", notification: data.notification }
        : null;
    case "notification-deleted":
      return typeof data.id === "string" ? { type: "deleted", id: data.id } : null;
    default:
      return null;
  }
}

/**
 * A member as the server names it, `{"user_id": "7", "user_info": {"name", "avatar_url"}}`.
 * The id is what identifies them; what `user_info` lacks is filled in rather than losing
 * the member, since a list without them would wrongly say they are gone.
 */
function presenceMemberFrom(value: unknown): PresenceMember | null {
  if (!isObject(value)) return null;
  const rawId = value.user_id;
  const id =
    typeof rawId === "string" ? rawId : Number.isSafeInteger(rawId) ? String(rawId) : "";
  if (id === "") return null;
  const info = isObject(value.user_info) ? value.user_info : {};
  const name = typeof info.name === "string" && info.name.trim() !== "" ? info.name : `User ${id}`;
  const avatarUrl = typeof info.avatar_url === "string" ? info.avatar_url : null;
  return { id, name, avatar_url: avatarUrl };
}

function presenceEventFrom(event: string, data: Record<string, unknown>): PresenceEvent | null {
  switch (event) {
    case "presence": {
      if (!Array.isArray(data.members)) return null;
      const members: PresenceMember[] = [];
      for (const raw of data.members as unknown[]) {
        const member = presenceMemberFrom(raw);
        // The list replaces the one shown: a partial one would drop people who are there.
        if (member === null) return null;
        members.push(member);
      }
      return { type: "members", members };
    }
    case "member_added": {
      const member = presenceMemberFrom(data);
      return member && { type: "added", member };
    }
    case "member_removed": {
      const member = presenceMemberFrom({ user_id: data.user_id });
      return member && { type: "removed", id: member.id };
    }
    default:
      return null;
  }
}

/** What a broadcast frame means to the UI, by its channel and event; null if nothing. */
export function routeFrame(
  frame: { event: string; channel?: string; data?: Record<string, unknown> },
  receivedAt: string,
): RealtimeEvent | null {
  const data = frame.data ?? {};
  const channel = frame.channel ?? "";
  if (channel === MESSAGES_CHANNEL) {
    const event = feedEventFrom(frame.event, data);
    return event && { kind: "message", event };
  }
  if (channel.startsWith("private-user.")) {
    const directMessage = directMessageEventFrom(frame.event, data);
    if (directMessage) return { kind: "direct-message", event: directMessage };
    const notification = notificationEventFrom(frame.event, data, receivedAt);
    return notification && { kind: "notification", event: notification };
  }
  if (channel.startsWith(PRESENCE_PREFIX)) {
    const event = presenceEventFrom(frame.event, data);
    return event && { kind: "presence", channel, event };
  }
  return null;
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
  private readonly channels: readonly string[];
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
    this.channels = options.channels ?? [];
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

  private socketUrl(): string {
    // A name that itself contains a comma cannot go in the comma-separated list; the
    // server takes such a name alone, as `channel=`.
    const listed = this.channels.filter((name) => !name.includes(","));
    const alone = this.channels.filter((name) => name.includes(","));
    const query = [
      ...(listed.length > 0 ? [`channels=${listed.map(encodeURIComponent).join(",")}`] : []),
      ...alone.map((name) => `channel=${encodeURIComponent(name)}`),
      ...(this._cursor !== null ? [`after=${encodeURIComponent(this._cursor)}`] : []),
    ];
    return query.length > 0 ? `${this.url}?${query.join("&")}` : this.url;
  }

  private open(): void {
    const url = this.socketUrl();
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
      if (socket === this.socket) this.handleClose(event.code, event.reason);
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
    const event = routeFrame(frame, new Date(this.now()).toISOString());
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

  private handleClose(code: number, reason: string): void {
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
    if (code === CLOSE_FORBIDDEN) {
      this.stop();
      this.handlers.onForbidden?.(reason || "not allowed to listen to a channel");
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
