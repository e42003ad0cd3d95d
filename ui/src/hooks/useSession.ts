import { useCallback, useEffect, useRef, useState } from "react";
import { ApiError, devLogin, getConfig, getSession } from "../lib/api";
import type { AppConfig, User } from "../lib/types";
import { describeError } from "./errors";

export type Session =
  | { status: "loading" }
  | { status: "error"; message: string }
  | { status: "signed-out"; config: AppConfig }
  | { status: "signed-in"; config: AppConfig; user: User };

export interface SessionControls {
  session: Session;
  retry(): void;
  signInWithDevLogin(email: string, name: string): Promise<void>;
  /** Called when any request or the socket learns that the session has ended. */
  markSignedOut(): void;
}

export function useSession(): SessionControls {
  const [session, setSession] = useState<Session>({ status: "loading" });
  const loadCount = useRef(0);

  const load = useCallback(async () => {
    const load = ++loadCount.current;
    setSession({ status: "loading" });
    try {
      const [config, user] = await Promise.all([getConfig(), getSession()]);
      if (load !== loadCount.current) return;
      setSession(user ? { status: "signed-in", config, user } : { status: "signed-out", config });
    } catch (error) {
      if (load !== loadCount.current) return;
      setSession({ status: "error", message: describeError(error) });
    }
  }, []);

  useEffect(() => {
    void load();
  }, [load]);

  const signInWithDevLogin = useCallback(async (email: string, name: string) => {
    await devLogin(email, name);
    const user = await getSession();
    if (!user) {
      throw new ApiError(
        401,
        "session_not_kept",
        "Signed in, but the browser did not keep the session. Are cookies blocked?",
      );
    }
    setSession((current) =>
      current.status === "signed-out" || current.status === "signed-in"
        ? { status: "signed-in", config: current.config, user }
        : current,
    );
  }, []);

  const markSignedOut = useCallback(() => {
    setSession((current) =>
      current.status === "signed-in" ? { status: "signed-out", config: current.config } : current,
    );
  }, []);

  const retry = useCallback(() => void load(), [load]);

  return { session, retry, signInWithDevLogin, markSignedOut };
}
