import { useCallback, useEffect, useRef, useState } from "react";
import { getMe } from "../lib/api";
import { RealtimeConnection, realtimeUrl, type RealtimeHandlers } from "../lib/realtime";
import type { ConnectionState } from "../lib/types";
import { useLatest } from "./useLatest";

export interface RealtimeControls {
  state: ConnectionState;
  /** Read at send time: the id changes with every reconnect. */
  getSocketId(): string | null;
}

/** Keeps one realtime connection open while the component is mounted. */
export function useRealtime(handlers: RealtimeHandlers): RealtimeControls {
  const [state, setState] = useState<ConnectionState>("connecting");
  const connectionRef = useRef<RealtimeConnection | null>(null);
  // The latest callbacks, so a re-render never tears the socket down.
  const handlersRef = useLatest(handlers);

  useEffect(() => {
    const connection = new RealtimeConnection({
      url: realtimeUrl(),
      checkSignedIn: async () => (await getMe()) !== null,
      handlers: {
        onStateChange: (next) => {
          setState(next);
          handlersRef.current.onStateChange?.(next);
        },
        onEvent: (event) => handlersRef.current.onEvent?.(event),
        onConnected: (info) => handlersRef.current.onConnected?.(info),
        onSignedOut: () => handlersRef.current.onSignedOut?.(),
      },
    });
    connectionRef.current = connection;
    connection.start();
    return () => {
      connection.stop();
      connectionRef.current = null;
    };
  }, [handlersRef]);

  const getSocketId = useCallback(() => connectionRef.current?.socketId ?? null, []);

  return { state, getSocketId };
}
