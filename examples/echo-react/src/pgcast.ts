// What the example needs from pgcast besides the socket: who is signed in, the dev login,
// and the Echo options that point Laravel Echo's pusher broadcaster at pgcast.

export type User = { id: number; name: string; avatar_url: string | null };

export type Message = {
  id: number;
  user_id: number;
  content: string;
  created_at: string;
  updated_at: string;
  user: { id: number; name: string | null; avatar_url: string | null };
};

type ApiError = { error: { code: string; message: string } };

async function failure(response: Response): Promise<Error> {
  try {
    const body = (await response.json()) as ApiError;
    return new Error(`${body.error.message} (${response.status} ${body.error.code})`);
  } catch {
    return new Error(`${response.url} answered ${response.status}`);
  }
}

/** The signed-in user, or null when the browser has no pgcast session. */
export async function currentUser(): Promise<User | null> {
  const response = await fetch("/api/session", { credentials: "same-origin" });
  if (!response.ok) throw await failure(response);
  return ((await response.json()) as { user: User | null }).user;
}

/** pgcast's dev login (on by default when pgcast listens on a loopback address). */
export async function devLogin(email: string, name: string): Promise<User> {
  const response = await fetch("/auth/dev-login", {
    method: "POST",
    credentials: "same-origin",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ email, name }),
  });
  if (!response.ok) throw await failure(response);
  return ((await response.json()) as { user: User }).user;
}

/** pgcast's Pusher key, as this example's dev or preview server knows it (vite.config.ts). */
export async function pusherKey(): Promise<string> {
  const response = await fetch("/echo-config.json");
  if (!response.ok) throw await failure(response);
  return ((await response.json()) as { key: string }).key;
}

/** The options that point Echo's pusher broadcaster at pgcast.
 *
 * The page is served from the same origin as the proxy to pgcast, so the socket goes to
 * this page's own host and port and carries pgcast's session cookie. */
export function pgcastEchoOptions(key: string) {
  const tls = window.location.protocol === "https:";
  const port = Number(window.location.port) || (tls ? 443 : 80);
  return {
    broadcaster: "pusher" as const,
    key,
    cluster: "mt1", // pusher-js requires one; pgcast ignores it
    wsHost: window.location.hostname,
    wsPort: port,
    wssPort: port,
    forceTLS: tls,
    enabledTransports: ["ws", "wss"] as ("ws" | "wss")[],
    disableStats: true,
    authEndpoint: "/broadcasting/auth",
    userAuthentication: { endpoint: "/broadcasting/user-auth", transport: "ajax" as const, headers: {} },
  };
}

export type PgcastEchoOptions = ReturnType<typeof pgcastEchoOptions>;
