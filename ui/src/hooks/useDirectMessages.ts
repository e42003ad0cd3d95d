import { useCallback, useEffect, useReducer, useRef, useState } from "react";
import { listDirectMessages, markConversationRead, sendDirectMessage } from "../lib/api";
import {
  applyThreadEvent,
  EMPTY_THREAD,
  newestUnreadFrom,
  prependOlderThreadPage,
  replaceThread,
  type ThreadState,
} from "../lib/thread";
import type { DirectMessage, DirectMessageEvent, DirectMessagePage } from "../lib/types";
import { describeError, isSignedOut } from "./errors";
import { useLatest } from "./useLatest";
import { useRealtimeEvents, type RealtimeControls } from "./useRealtime";
import { useSnapshot } from "./useSnapshot";

export const THREAD_PAGE_SIZE = 50;

type ThreadAction =
  | { type: "event"; event: DirectMessageEvent }
  | { type: "replaced"; page: DirectMessagePage; eventsDuringFetch: DirectMessageEvent[] }
  | { type: "older"; page: DirectMessagePage; before: number };

function threadReducer(me: number, other: number) {
  return (state: ThreadState, action: ThreadAction): ThreadState => {
    switch (action.type) {
      case "event": {
        const messages = applyThreadEvent(state.messages, action.event, me, other);
        return messages === state.messages ? state : { ...state, messages };
      }
      case "replaced":
        return replaceThread(action.page, action.eventsDuringFetch, me, other);
      case "older":
        return prependOlderThreadPage(state, action.page, action.before);
    }
  };
}

export interface DirectMessagesControls {
  messages: DirectMessage[];
  loaded: boolean;
  loadError: string | null;
  hasOlder: boolean;
  loadingOlder: boolean;
  olderError: string | null;
  reload(): void;
  loadOlder(): void;
  /** Sends and shows the message at once; rejects with ApiError so the composer can say why. */
  send(content: string): Promise<void>;
}

/**
 * One conversation, live: its history over HTTP, its direct messages from the user's
 * channel, merged by id. While it is `viewed` (on screen, in a visible tab), whatever the
 * other person wrote is marked read, once per new message.
 */
export function useDirectMessages({
  realtime,
  me,
  other,
  viewed,
  onSignedOut,
  onMarkedRead,
}: {
  realtime: RealtimeControls;
  me: number;
  other: number;
  viewed: boolean;
  onSignedOut(): void;
  /** The conversation was marked read on the server (its broadcasts are on their way). */
  onMarkedRead(other: number): void;
}): DirectMessagesControls {
  // The reducer is made for one pair of people; the component is keyed on `other`.
  const [reducer] = useState(() => threadReducer(me, other));
  const [thread, dispatch] = useReducer(reducer, EMPTY_THREAD);
  const [loadError, setLoadError] = useState<string | null>(null);
  const [loadingOlder, setLoadingOlder] = useState(false);
  const [olderError, setOlderError] = useState<string | null>(null);
  const threadRef = useLatest(thread);
  const onSignedOutRef = useLatest(onSignedOut);
  const onMarkedReadRef = useLatest(onMarkedRead);
  const loadingOlderRef = useRef(false);

  const handleFailure = useCallback(
    (error: unknown, show: (message: string) => void) => {
      if (isSignedOut(error)) onSignedOutRef.current();
      else show(describeError(error));
    },
    [onSignedOutRef],
  );

  const snapshot = useSnapshot<DirectMessagePage, DirectMessageEvent>({
    fetch: (signal) => listDirectMessages({ withUser: other, limit: THREAD_PAGE_SIZE, signal }),
    loaded: (page, eventsDuringFetch) => {
      dispatch({ type: "replaced", page, eventsDuringFetch });
      setLoadError(null);
      setOlderError(null);
    },
    failed: (error) => handleFailure(error, setLoadError),
  });

  useRealtimeEvents(realtime, {
    onEvent: (event) => {
      if (event.kind !== "direct-message") return;
      snapshot.record(event.event);
      dispatch({ type: "event", event: event.event });
    },
    onFresh: () => void snapshot.load(),
  });

  const loadOlder = useCallback(async () => {
    const before = threadRef.current.nextBefore;
    if (loadingOlderRef.current || before === null) return;
    const generation = snapshot.generation();
    loadingOlderRef.current = true;
    setLoadingOlder(true);
    setOlderError(null);
    try {
      const page = await listDirectMessages({ withUser: other, before, limit: THREAD_PAGE_SIZE });
      if (generation === snapshot.generation()) dispatch({ type: "older", page, before });
    } catch (error) {
      if (generation === snapshot.generation()) handleFailure(error, setOlderError);
    } finally {
      loadingOlderRef.current = false;
      setLoadingOlder(false);
    }
  }, [handleFailure, other, snapshot, threadRef]);

  const { getSocketId, publishLocal } = realtime;
  const send = useCallback(
    async (content: string) => {
      try {
        const directMessage = await sendDirectMessage(other, content, getSocketId());
        // Our own socket skips it (X-Socket-ID); the conversation list needs it too.
        publishLocal({ kind: "direct-message", event: { type: "created", directMessage } });
      } catch (error) {
        if (isSignedOut(error)) onSignedOutRef.current();
        throw error;
      }
    },
    [getSocketId, onSignedOutRef, other, publishLocal],
  );

  // Mark read what is on screen, once per newest unread message: the broadcasts that set
  // read_at take a moment, and must not cause a second request meanwhile.
  const newestUnread = newestUnreadFrom(thread.messages, me);
  const markedThrough = useRef(0);
  const marking = useRef(false);
  const [markAgain, setMarkAgain] = useState(0);
  useEffect(() => {
    if (!viewed || newestUnread === null || newestUnread <= markedThrough.current) return;
    if (marking.current) return;
    marking.current = true;
    const through = newestUnread;
    markConversationRead(other).then(
      () => {
        markedThrough.current = Math.max(markedThrough.current, through);
        marking.current = false;
        onMarkedReadRef.current(other);
        // A message that arrived during the request is looked at again.
        setMarkAgain((n) => n + 1);
      },
      (error: unknown) => {
        marking.current = false;
        if (isSignedOut(error)) onSignedOutRef.current();
        // Otherwise it stays unread; the next message or visit tries again.
      },
    );
  }, [viewed, newestUnread, other, markAgain, onMarkedReadRef, onSignedOutRef]);

  return {
    messages: thread.messages,
    loaded: thread.loaded,
    loadError,
    hasOlder: thread.nextBefore !== null,
    loadingOlder,
    olderError,
    reload: () => void snapshot.load(),
    loadOlder: () => void loadOlder(),
    send,
  };
}
