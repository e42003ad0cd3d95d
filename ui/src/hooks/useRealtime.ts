import { useCallback, useEffect, useMemo, useRef, useState } from "react";
import { getSession } from "../lib/api";
import { RealtimeConnection, realtimeUrl } from "../lib/realtime";
import type { ConnectionState, RealtimeEvent } from "../lib/types";
import { useLatest } from "./useLatest";

/** What one part of the page wants from the shared socket. */
export interface RealtimeListener {
  onEvent?(event: RealtimeEvent): void;
  onConnected?(info: { socketId: string; resumed: boolean }): void;
}

export interface RealtimeControls {
  state: ConnectionState;
  /** Why the server refused a channel (close 4403); the socket has stopped. */
  forbidden: string | null;
  /** Read at send time: the id changes with every reconnect. */
  getSocketId(): string | null;
  /**
   * Whether the socket has a position in the event log: everything committed from now on
   * will reach the listeners, so a page of history fetched now leaves no gap.
   */
  isSubscribed(): boolean;
  /** Registers a listener until the returned function is called. */
  subscribe(listener: RealtimeListener): () => void;
  /** Hands our own write (a POST's answer) to every listener, as the socket would. */
  publishLocal(event: RealtimeEvent): void;
}

export interface RealtimeOptions {
  channels: readonly string[];
  onSignedOut(): void;
}

/**
 * Keeps ONE realtime connection open while the component is mounted, for every channel the
 * page needs, and fans its events out to the hooks that listen (feed, conversations,
 * notifications): one socket, one cursor.
 */
export function useRealtime({ channels, onSignedOut }: RealtimeOptions): RealtimeControls {
  const [state, setState] = useState<ConnectionState>("connecting");
  const [forbidden, setForbidden] = useState<string | null>(null);
  const connectionRef = useRef<RealtimeConnection | null>(null);
  const listeners = useRef(new Set<RealtimeListener>());
  const onSignedOutRef = useLatest(onSignedOut);
  // A new array with the same names must not tear the socket down.
  const channelList = channels.join(",");

  useEffect(() => {
    const connection = new RealtimeConnection({
      url: realtimeUrl(),
      channels: channelList.split(","),
      checkSignedIn: async () => (await getSession()) !== null,
      handlers: {
        onStateChange: setState,
        onEvent: (event) => {
          for (const listener of [...listeners.current]) listener.onEvent?.(event);
        },
        onConnected: (info) => {
          setForbidden(null);
          for (const listener of [...listeners.current]) listener.onConnected?.(info);
        },
        onSignedOut: () => onSignedOutRef.current(),
        onForbidden: setForbidden,
      },
    });
    connectionRef.current = connection;
    connection.start();
    return () => {
      connection.stop();
      connectionRef.current = null;
    };
  }, [channelList, onSignedOutRef]);

  const getSocketId = useCallback(() => connectionRef.current?.socketId ?? null, []);
  const isSubscribed = useCallback(() => connectionRef.current?.cursor != null, []);
  const subscribe = useCallback((listener: RealtimeListener) => {
    listeners.current.add(listener);
    return () => {
      listeners.current.delete(listener);
    };
  }, []);
  const publishLocal = useCallback((event: RealtimeEvent) => {
    for (const listener of [...listeners.current]) listener.onEvent?.(event);
  }, []);

  return useMemo(
    () => ({ state, forbidden, getSocketId, isSubscribed, subscribe, publishLocal }),
    [state, forbidden, getSocketId, isSubscribed, subscribe, publishLocal],
  );
}

/**
 * Listens to the shared socket for as long as the calling component is mounted.
 * `onFresh` runs whenever what it shows may have a gap and must be fetched again: at once
 * if the socket is already subscribed, and after every fresh (not resumed) connection,
 * i.e. the first one and the one after a refused cursor (close 4400). A resumed socket
 * replays what it missed instead.
 */
export function useRealtimeEvents(
  realtime: Pick<RealtimeControls, "subscribe" | "isSubscribed">,
  handlers: { onEvent(event: RealtimeEvent): void; onFresh(): void },
): void {
  const handlersRef = useLatest(handlers);
  const { subscribe, isSubscribed } = realtime;
  useEffect(() => {
    const unsubscribe = subscribe({
      onEvent: (event) => handlersRef.current.onEvent(event),
      onConnected: ({ resumed }) => {
        if (!resumed) handlersRef.current.onFresh();
      },
    });
    if (isSubscribed()) handlersRef.current.onFresh();
    return unsubscribe;
  }, [subscribe, isSubscribed, handlersRef]);
}
