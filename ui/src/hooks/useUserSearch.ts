import { useEffect, useState } from "react";
import { searchUsers } from "../lib/api";
import type { User } from "../lib/types";
import { describeError, isSignedOut } from "./errors";
import { useLatest } from "./useLatest";

export const SEARCH_DELAY_MS = 250;

export type UserSearch =
  | { status: "idle" }
  | { status: "searching"; query: string }
  | { status: "done"; query: string; users: User[] }
  | { status: "error"; query: string; message: string };

/**
 * People whose name contains `query`, asked for once typing pauses. A newer query cancels
 * the request of an older one, so results never arrive out of order.
 */
export function useUserSearch(
  query: string,
  { onSignedOut, delayMs = SEARCH_DELAY_MS }: { onSignedOut(): void; delayMs?: number },
): UserSearch {
  const [result, setResult] = useState<UserSearch>({ status: "idle" });
  const onSignedOutRef = useLatest(onSignedOut);
  const text = query.trim();

  useEffect(() => {
    if (text === "") {
      setResult({ status: "idle" });
      return;
    }
    const abort = new AbortController();
    setResult({ status: "searching", query: text });
    const timer = setTimeout(() => {
      searchUsers(text, abort.signal).then(
        (users) => {
          if (!abort.signal.aborted) setResult({ status: "done", query: text, users });
        },
        (error: unknown) => {
          if (abort.signal.aborted) return;
          if (isSignedOut(error)) onSignedOutRef.current();
          else setResult({ status: "error", query: text, message: describeError(error) });
        },
      );
    }, delayMs);
    return () => {
      clearTimeout(timer);
      abort.abort();
    };
  }, [text, delayMs, onSignedOutRef]);

  return result;
}
