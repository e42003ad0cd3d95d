import { useCallback, useEffect, useReducer, useRef, useState } from "react";
import { ApiError, listMessages, postMessage } from "../lib/api";
import {
  applyEvent,
  EMPTY_FEED,
  prependOlderPage,
  replaceWithPage,
  type FeedState,
} from "../lib/feed";
import type { ConnectionState, FeedEvent, Message, MessagePage } from "../lib/types";
import { useLatest } from "./useLatest";
import { useRealtime } from "./useRealtime";

export const PAGE_SIZE = 50;

type FeedAction =
  | { type: "event"; event: FeedEvent }
  | { type: "replaced"; page: MessagePage; eventsDuringFetch: FeedEvent[] }
  | { type: "older"; page: MessagePage };

function feedReducer(state: FeedState, action: FeedAction): FeedState {
  switch (action.type) {
    case "event": {
      const messages = applyEvent(state.messages, action.event);
      return messages === state.messages ? state : { ...state, messages };
    }
    case "replaced":
      return replaceWithPage(action.page, action.eventsDuringFetch);
    case "older":
      return prependOlderPage(state, action.page);
  }
}

export interface MessagesControls {
  messages: Message[];
  /** False until the first page of history has arrived. */
  loaded: boolean;
  loadError: string | null;
  hasOlder: boolean;
  loadingOlder: boolean;
  olderError: string | null;
  connection: ConnectionState;
  reload(): void;
  loadOlder(): void;
  /** Posts a message and shows it at once; rejects with ApiError so the composer can say why. */
  send(content: string): Promise<void>;
}

function describe(error: unknown): string {
  return error instanceof ApiError ? error.message : "Something went wrong. Please try again.";
}

/**
 * The live feed: history over HTTP, changes over the realtime socket, merged by id.
 */
export function useMessages({ onSignedOut }: { onSignedOut(): void }): MessagesControls {
  const [feed, dispatch] = useReducer(feedReducer, EMPTY_FEED);
  const [loadError, setLoadError] = useState<string | null>(null);
  const [loadingOlder, setLoadingOlder] = useState(false);
  const [olderError, setOlderError] = useState<string | null>(null);

  const feedRef = useLatest(feed);
  const onSignedOutRef = useLatest(onSignedOut);

  // Each reload starts a new generation; answers from an older one are stale.
  const generation = useRef(0);
  // Events that arrive while a reload is in flight, to re-apply on top of its page.
  const eventsDuringReload = useRef<FeedEvent[] | null>(null);
  const loadingOlderRef = useRef(false);

  const handleFailure = useCallback(
    (error: unknown, show: (message: string) => void) => {
      if (error instanceof ApiError && error.status === 401) onSignedOutRef.current();
      else show(describe(error));
    },
    [onSignedOutRef],
  );

  const apply = useCallback((event: FeedEvent) => {
    eventsDuringReload.current?.push(event);
    dispatch({ type: "event", event });
  }, []);

  const reload = useCallback(async () => {
    const current = ++generation.current;
    const buffered: FeedEvent[] = [];
    eventsDuringReload.current = buffered;
    try {
      const page = await listMessages({ limit: PAGE_SIZE });
      if (current !== generation.current) return;
      dispatch({ type: "replaced", page, eventsDuringFetch: buffered });
      setLoadError(null);
      setOlderError(null);
    } catch (error) {
      if (current !== generation.current) return;
      handleFailure(error, setLoadError);
    } finally {
      if (current === generation.current) eventsDuringReload.current = null;
    }
  }, [handleFailure]);

  const loadOlder = useCallback(async () => {
    const before = feedRef.current.nextBefore;
    if (loadingOlderRef.current || before === null) return;
    const current = generation.current;
    loadingOlderRef.current = true;
    setLoadingOlder(true);
    setOlderError(null);
    try {
      const page = await listMessages({ before, limit: PAGE_SIZE });
      // A reload in the meantime replaced the list this page would extend.
      if (current === generation.current) dispatch({ type: "older", page });
    } catch (error) {
      if (current === generation.current) handleFailure(error, setOlderError);
    } finally {
      loadingOlderRef.current = false;
      setLoadingOlder(false);
    }
  }, [feedRef, handleFailure]);

  const { state: connection, getSocketId } = useRealtime({
    onEvent: apply,
    // A fresh socket (first connect, or after its cursor was refused) only sees what is
    // committed from now on: reload history so nothing before it is missing.
    onConnected: ({ resumed }) => {
      if (!resumed) void reload();
    },
    onSignedOut: () => onSignedOutRef.current(),
  });

  useEffect(() => {
    // Shows history at once instead of waiting for the socket's handshake.
    void reload();
  }, [reload]);

  const send = useCallback(
    async (content: string) => {
      try {
        const message = await postMessage(content, getSocketId());
        apply({ type: "created", message });
      } catch (error) {
        if (error instanceof ApiError && error.status === 401) onSignedOutRef.current();
        throw error;
      }
    },
    [apply, getSocketId, onSignedOutRef],
  );

  return {
    messages: feed.messages,
    loaded: feed.loaded,
    loadError,
    hasOlder: feed.nextBefore !== null,
    loadingOlder,
    olderError,
    connection,
    reload: () => void reload(),
    loadOlder: () => void loadOlder(),
    send,
  };
}
