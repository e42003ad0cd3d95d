import { useCallback, useEffect, useRef, useState } from "react";
import { listDirectMessages, markConversationRead, sendDirectMessage } from "../lib/api";
import {
  applyThreadEvent,
  newestUnreadFrom,
  prependOlderThreadPage,
  replaceThread,
} from "../lib/thread";
import type { DirectMessage, DirectMessageEvent, DirectMessagePage } from "../lib/types";
import { isSignedOut } from "./errors";
import { useLatest } from "./useLatest";
import { useLiveHistory, type HistoryControls, type HistoryRules } from "./useLiveHistory";
import type { RealtimeControls } from "./useRealtime";

export const THREAD_PAGE_SIZE = 50;

function threadRules(
  me: number,
  other: number,
): HistoryRules<DirectMessage, DirectMessageEvent, DirectMessagePage> {
  return {
    fetchPage: (before, signal) =>
      listDirectMessages({ withUser: other, before, limit: THREAD_PAGE_SIZE, signal }),
    eventOf: (event) => (event.kind === "direct-message" ? event.event : null),
    applyEvent: (messages, event) => applyThreadEvent(messages, event, me, other),
    replace: (page, eventsDuringFetch) => replaceThread(page, eventsDuringFetch, me, other),
    prependOlder: prependOlderThreadPage,
  };
}

export interface DirectMessagesControls extends HistoryControls<DirectMessage> {
  /** Sends and shows the message at once; rejects with ApiError so the composer can say why. */
  send(content: string): Promise<void>;
}

/**
 * One conversation, live (useLiveHistory over the user's channel's direct messages). While
 * it is `viewed` (on screen, in a visible tab), whatever the other person wrote is marked
 * read, once per new message.
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
  // The rules are made for one pair of people; the component is keyed on `other`.
  const [rules] = useState(() => threadRules(me, other));
  const [history] = useLiveHistory({ realtime, rules, onSignedOut });
  const onSignedOutRef = useLatest(onSignedOut);
  const onMarkedReadRef = useLatest(onMarkedRead);

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
  const newestUnread = newestUnreadFrom(history.messages, me);
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

  return { ...history, send };
}
