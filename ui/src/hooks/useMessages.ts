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
  | { type: "older"; page: MessagePage; before: number };

function feedReducer(state: FeedState, action: FeedAction): FeedState {
  switch (action.type) {
    case "event": {
      const messages = applyEvent(state.messages, action.event);
      return messages === state.messages ? state : { ...state, messages };
    }
    case "replaced":
      return replaceWithPage(action.page, action.eventsDuringFetch);
    case "older":
      return prependOlderPage(state, action.page, action.before);
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
 *
 * The first page is fetched once the socket is subscribed (its `connected` frame), not on
 * mount: the server guarantees every change committed after `connected` reaches the
 * socket, so a page fetched from then on plus the events on top of it leaves no gap. A
 * page fetched earlier would need a second fetch after `connected` to close that gap,
 * and the second one would replace whatever older pages the reader loaded in between.
 * Until then the feed shows its loading state.
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
  // Cancels the reload in flight when a newer one supersedes it or the feed unmounts.
  const reloadAbort = useRef<AbortController | null>(null);
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

  /**
   * Start over from a fresh first page. This replaces the feed, older pages included: it
   * runs only when the feed may have a gap (a fresh socket) or on "Try again".
   */
  const reload = useCallback(async () => {
    const current = ++generation.current;
    reloadAbort.current?.abort();
    const abort = new AbortController();
    reloadAbort.current = abort;
    const buffered: FeedEvent[] = [];
    eventsDuringReload.current = buffered;
    try {
      const page = await listMessages({ limit: PAGE_SIZE, signal: abort.signal });
      if (current !== generation.current) return;
      dispatch({ type: "replaced", page, eventsDuringFetch: buffered });
      setLoadError(null);
      setOlderError(null);
    } catch (error) {
      if (current !== generation.current) return;
      handleFailure(error, setLoadError);
    } finally {
      if (current === generation.current) {
        eventsDuringReload.current = null;
        reloadAbort.current = null;
      }
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
      // A reload in the meantime replaced the list this page would extend. (The reducer
      // also drops it if the list no longer ends at `before`.)
      if (current === generation.current) dispatch({ type: "older", page, before });
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
    // committed from now on: load history now so nothing before it is missing. This is
    // the only automatic first-page fetch; a resumed socket replays what it missed.
    onConnected: ({ resumed }) => {
      if (!resumed) void reload();
    },
    onSignedOut: () => onSignedOutRef.current(),
  });

  useEffect(
    () => () => {
      // Unmounted (signed out): whatever is still in flight has no feed to update.
      generation.current += 1;
      reloadAbort.current?.abort();
      reloadAbort.current = null;
    },
    [],
  );

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
