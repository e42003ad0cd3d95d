import { useCallback, useEffect, useState } from "react";
import { listConversations } from "../lib/api";
import {
  applyConversationEvent,
  EMPTY_CONVERSATIONS,
  markedRead,
  replaceConversations,
} from "../lib/conversations";
import type { Conversation, DirectMessageEvent } from "../lib/types";
import { describeError, isSignedOut } from "./errors";
import { useLatest } from "./useLatest";
import { useRealtimeEvents, type RealtimeControls } from "./useRealtime";
import { useSnapshot } from "./useSnapshot";
import { useStore } from "./useStore";

export interface ConversationsControls {
  /** Most recent first. */
  conversations: Conversation[];
  loaded: boolean;
  loadError: string | null;
  reload(): void;
  /** What `POST /api/direct-messages/read` did, before its broadcasts arrive. */
  markedRead(userId: number): void;
}

/**
 * Everyone the user has written with, their last message and what is unread: fetched on a
 * fresh socket, then kept current by the direct-message events of the user's channel
 * (lib/conversations.ts says how counts stay exact across replays).
 */
export function useConversations({
  realtime,
  me,
  onSignedOut,
}: {
  realtime: RealtimeControls;
  me: number;
  onSignedOut(): void;
}): ConversationsControls {
  const [state, update] = useStore(EMPTY_CONVERSATIONS);
  const [loadError, setLoadError] = useState<string | null>(null);
  const onSignedOutRef = useLatest(onSignedOut);

  const snapshot = useSnapshot<Conversation[], DirectMessageEvent>({
    fetch: (signal) => listConversations(signal),
    loaded: (conversations, eventsDuringFetch) => {
      update(() => replaceConversations(conversations, eventsDuringFetch, me));
      setLoadError(null);
    },
    failed: (error) => {
      if (isSignedOut(error)) onSignedOutRef.current();
      else setLoadError(describeError(error));
    },
  });

  useRealtimeEvents(realtime, {
    onEvent: (event) => {
      if (event.kind !== "direct-message") return;
      snapshot.record(event.event);
      update((current) => applyConversationEvent(current, event.event, me));
    },
    onFresh: () => void snapshot.load(),
  });

  // The server's counts replace a guess the events could not make exactly.
  const { stale } = state;
  useEffect(() => {
    if (stale) void snapshot.load();
  }, [stale, snapshot]);

  const markConversationRead = useCallback(
    (userId: number) => void update((current) => markedRead(current, userId)),
    [update],
  );

  return {
    conversations: state.conversations,
    loaded: state.loaded,
    loadError,
    reload: () => void snapshot.load(),
    markedRead: markConversationRead,
  };
}
