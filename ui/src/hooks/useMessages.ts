import { useCallback, useReducer, useRef, useState } from "react";
import { listMessages, postMessage } from "../lib/api";
import {
  applyEvent,
  EMPTY_FEED,
  prependOlderPage,
  replaceWithPage,
  type FeedState,
} from "../lib/feed";
import type { FeedEvent, Message, MessagePage } from "../lib/types";
import { describeError, isSignedOut } from "./errors";
import { useLatest } from "./useLatest";
import { useRealtimeEvents, type RealtimeControls } from "./useRealtime";
import { useSnapshot } from "./useSnapshot";

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
  reload(): void;
  loadOlder(): void;
  /** Posts a message and shows it at once; rejects with ApiError so the composer can say why. */
  send(content: string): Promise<void>;
}

/**
 * The live feed: history over HTTP, changes over the shared realtime socket, merged by id.
 *
 * The first page is fetched once the socket is subscribed (its `connected` frame), not on
 * mount: the server guarantees every change committed after `connected` reaches the
 * socket, so a page fetched from then on plus the events on top of it leaves no gap. A
 * page fetched earlier would need a second fetch after `connected` to close that gap,
 * and the second one would replace whatever older pages the reader loaded in between.
 * Until then the feed shows its loading state.
 */
export function useMessages({
  realtime,
  onSignedOut,
}: {
  realtime: RealtimeControls;
  onSignedOut(): void;
}): MessagesControls {
  const [feed, dispatch] = useReducer(feedReducer, EMPTY_FEED);
  const [loadError, setLoadError] = useState<string | null>(null);
  const [loadingOlder, setLoadingOlder] = useState(false);
  const [olderError, setOlderError] = useState<string | null>(null);

  const feedRef = useLatest(feed);
  const onSignedOutRef = useLatest(onSignedOut);
  const loadingOlderRef = useRef(false);

  const handleFailure = useCallback(
    (error: unknown, show: (message: string) => void) => {
      if (isSignedOut(error)) onSignedOutRef.current();
      else show(describeError(error));
    },
    [onSignedOutRef],
  );

  /**
   * Start over from a fresh first page. This replaces the feed, older pages included: it
   * runs only when the feed may have a gap (a fresh socket) or on "Try again".
   */
  const snapshot = useSnapshot<MessagePage, FeedEvent>({
    fetch: (signal) => listMessages({ limit: PAGE_SIZE, signal }),
    loaded: (page, eventsDuringFetch) => {
      dispatch({ type: "replaced", page, eventsDuringFetch });
      setLoadError(null);
      setOlderError(null);
    },
    failed: (error) => handleFailure(error, setLoadError),
  });

  const apply = useCallback(
    (event: FeedEvent) => {
      snapshot.record(event);
      dispatch({ type: "event", event });
    },
    [snapshot],
  );

  const loadOlder = useCallback(async () => {
    const before = feedRef.current.nextBefore;
    if (loadingOlderRef.current || before === null) return;
    const generation = snapshot.generation();
    loadingOlderRef.current = true;
    setLoadingOlder(true);
    setOlderError(null);
    try {
      const page = await listMessages({ before, limit: PAGE_SIZE });
      // A reload in the meantime replaced the list this page would extend. (The reducer
      // also drops it if the list no longer ends at `before`.)
      if (generation === snapshot.generation()) dispatch({ type: "older", page, before });
    } catch (error) {
      if (generation === snapshot.generation()) handleFailure(error, setOlderError);
    } finally {
      loadingOlderRef.current = false;
      setLoadingOlder(false);
    }
  }, [feedRef, handleFailure, snapshot]);

  useRealtimeEvents(realtime, {
    onEvent: (event) => {
      if (event.kind === "message") apply(event.event);
    },
    // A fresh socket only sees what is committed from now on: load history now so nothing
    // before it is missing. This is the only automatic first-page fetch.
    onFresh: () => void snapshot.load(),
  });

  const { getSocketId } = realtime;
  const send = useCallback(
    async (content: string) => {
      try {
        const message = await postMessage(content, getSocketId());
        apply({ type: "created", message });
      } catch (error) {
        if (isSignedOut(error)) onSignedOutRef.current();
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
    reload: () => void snapshot.load(),
    loadOlder: () => void loadOlder(),
    send,
  };
}
