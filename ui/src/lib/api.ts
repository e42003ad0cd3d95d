import type {
  AppConfig,
  Conversation,
  DirectMessage,
  DirectMessagePage,
  Message,
  MessagePage,
  Notification,
  NotificationPage,
  User,
} from "./types";

/** Every failed request surfaces as this, so callers branch on `status`/`code`. */
export class ApiError extends Error {
  readonly status: number;
  readonly code: string;

  constructor(status: number, code: string, message: string) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
  }
}

const FALLBACK_MESSAGES: Record<number, string> = {
  400: "The request was not understood.",
  401: "You are signed out. Please sign in again.",
  403: "That action is not allowed.",
  404: "Not found.",
  413: "That message is too large.",
  422: "That message cannot be sent.",
  429: "You are sending too fast. Please wait a moment.",
};

async function errorFromResponse(response: Response): Promise<ApiError> {
  let code = `http_${response.status}`;
  let message = FALLBACK_MESSAGES[response.status] ?? `The server answered ${response.status}.`;
  try {
    const body: unknown = await response.json();
    const error = (body as { error?: { code?: unknown; message?: unknown } } | null)?.error;
    if (typeof error?.code === "string") code = error.code;
    if (typeof error?.message === "string" && error.message) message = error.message;
  } catch {
    // A proxy or crash page is not JSON; the status-based sentence still helps the user.
  }
  return new ApiError(response.status, code, message);
}

async function send(path: string, init: RequestInit = {}): Promise<Response> {
  let response: Response;
  try {
    response = await fetch(path, {
      credentials: "same-origin",
      ...init,
      headers: { Accept: "application/json", ...init.headers },
    });
  } catch {
    throw new ApiError(0, "network_error", "Could not reach the server. Check your connection.");
  }
  if (!response.ok) throw await errorFromResponse(response);
  return response;
}

async function requestJson<T>(path: string, init?: RequestInit): Promise<T> {
  const response = await send(path, init);
  return (await response.json()) as T;
}

function jsonBody(body: unknown, headers: Record<string, string> = {}): RequestInit {
  return {
    method: "POST",
    headers: { "Content-Type": "application/json", ...headers },
    body: JSON.stringify(body),
  };
}

export function getConfig(): Promise<AppConfig> {
  return requestJson<AppConfig>("/api/config");
}

/**
 * The signed-in user, or null when the session is missing or expired. `/api/session` answers
 * 200 either way, so a signed-out page logs no failed request (`/api/me` would answer 401).
 */
export async function getSession(): Promise<User | null> {
  const body = await requestJson<{ user: User | null }>("/api/session");
  return body.user;
}

export async function devLogin(email: string, name: string): Promise<void> {
  await send("/auth/dev-login", jsonBody({ email, name }));
}

/** `signal` cancels a request whose answer is no longer wanted (a newer reload started). */
export function listMessages(
  options: { before?: number | null; limit?: number; signal?: AbortSignal | undefined } = {},
): Promise<MessagePage> {
  const params = new URLSearchParams();
  if (options.before != null) params.set("before", String(options.before));
  params.set("limit", String(options.limit ?? 50));
  return requestJson<MessagePage>(
    `/api/messages?${params.toString()}`,
    options.signal ? { signal: options.signal } : undefined,
  );
}

function socketHeader(socketId: string | null): Record<string, string> {
  return socketId ? { "X-Socket-ID": socketId } : {};
}

function signalInit(signal: AbortSignal | undefined): RequestInit | undefined {
  return signal ? { signal } : undefined;
}

/** `socketId` keeps this tab's own socket from receiving the broadcast of this post. */
export function postMessage(content: string, socketId: string | null): Promise<Message> {
  return requestJson<Message>("/api/messages", jsonBody({ content }, socketHeader(socketId)));
}

export async function sendDirectMessage(
  recipientId: number,
  content: string,
  socketId: string | null,
): Promise<DirectMessage> {
  const body = await requestJson<{ direct_message: DirectMessage }>(
    "/api/direct-messages",
    jsonBody({ recipient_id: recipientId, content }, socketHeader(socketId)),
  );
  return body.direct_message;
}

/** One page of the conversation with `withUser`, oldest first. */
export function listDirectMessages(options: {
  withUser: number;
  before?: number | null;
  limit?: number;
  signal?: AbortSignal | undefined;
}): Promise<DirectMessagePage> {
  const params = new URLSearchParams({ with: String(options.withUser) });
  if (options.before != null) params.set("before", String(options.before));
  params.set("limit", String(options.limit ?? 50));
  return requestJson<DirectMessagePage>(
    `/api/direct-messages?${params.toString()}`,
    signalInit(options.signal),
  );
}

export async function listConversations(signal?: AbortSignal): Promise<Conversation[]> {
  const body = await requestJson<{ conversations: Conversation[] }>(
    "/api/conversations",
    signalInit(signal),
  );
  return body.conversations;
}

/** Marks every message from `withUser` read; each one is broadcast to both people. */
export async function markConversationRead(withUser: number): Promise<number> {
  const body = await requestJson<{ marked_read: number }>(
    "/api/direct-messages/read",
    jsonBody({ with: withUser }),
  );
  return body.marked_read;
}

export function listNotifications(
  options: { before?: string | null; limit?: number; signal?: AbortSignal } = {},
): Promise<NotificationPage> {
  const params = new URLSearchParams();
  if (options.before != null) params.set("before", options.before);
  params.set("limit", String(options.limit ?? 20));
  return requestJson<NotificationPage>(
    `/api/notifications?${params.toString()}`,
    signalInit(options.signal),
  );
}

export async function markNotificationRead(id: string): Promise<Notification> {
  const body = await requestJson<{ notification: Notification }>(
    `/api/notifications/${encodeURIComponent(id)}/read`,
    { method: "POST" },
  );
  return body.notification;
}

export async function markAllNotificationsRead(): Promise<number> {
  const body = await requestJson<{ marked_read: number }>(
    "/api/notifications/read-all",
    { method: "POST" },
  );
  return body.marked_read;
}

/** People whose name contains `query` (never the signed-in user; at most 20). */
export async function searchUsers(query: string, signal?: AbortSignal): Promise<User[]> {
  const params = new URLSearchParams({ query });
  const body = await requestJson<{ users: User[] }>(
    `/api/users?${params.toString()}`,
    signalInit(signal),
  );
  return body.users;
}
