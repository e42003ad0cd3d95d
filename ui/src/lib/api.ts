import type { AppConfig, Message, MessagePage, User } from "./types";

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

/** The signed-in user, or null when the session is missing or expired. */
export async function getMe(): Promise<User | null> {
  try {
    const body = await requestJson<{ user: User }>("/api/me");
    return body.user;
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) return null;
    throw error;
  }
}

export async function devLogin(email: string, name: string): Promise<void> {
  await send("/auth/dev-login", jsonBody({ email, name }));
}

/** `signal` cancels a request whose answer is no longer wanted (a newer reload started). */
export function listMessages(
  options: { before?: number | null; limit?: number; signal?: AbortSignal } = {},
): Promise<MessagePage> {
  const params = new URLSearchParams();
  if (options.before != null) params.set("before", String(options.before));
  params.set("limit", String(options.limit ?? 50));
  return requestJson<MessagePage>(
    `/api/messages?${params.toString()}`,
    options.signal ? { signal: options.signal } : undefined,
  );
}

/** `socketId` keeps this tab's own socket from receiving the broadcast of this post. */
export function postMessage(content: string, socketId: string | null): Promise<Message> {
  const headers: Record<string, string> = socketId ? { "X-Socket-ID": socketId } : {};
  return requestJson<Message>("/api/messages", jsonBody({ content }, headers));
}
