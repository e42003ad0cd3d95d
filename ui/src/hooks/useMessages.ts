import { useCallback } from "react";
import { listMessages, postMessage } from "../lib/api";
import { applyEvent, prependOlderPage, replaceWithPage } from "../lib/feed";
import type { FeedEvent, Message, MessagePage } from "../lib/types";
import { isSignedOut } from "./errors";
import { useLatest } from "./useLatest";
import { useLiveHistory, type HistoryControls, type HistoryRules } from "./useLiveHistory";
import type { RealtimeControls } from "./useRealtime";

export const PAGE_SIZE = 50;

const FEED_RULES: HistoryRules<Message, FeedEvent, MessagePage> = {
  fetchPage: (before, signal) => listMessages({ before, limit: PAGE_SIZE, signal }),
  eventOf: (event) => (event.kind === "message" ? event.event : null),
  applyEvent,
  replace: replaceWithPage,
  prependOlder: prependOlderPage,
};

export interface MessagesControls extends HistoryControls<Message> {
  /** Posts a message and shows it at once; rejects with ApiError so the composer can say why. */
  send(content: string): Promise<void>;
}

/** The live feed (useLiveHistory), and posting to it. */
export function useMessages({
  realtime,
  onSignedOut,
}: {
  realtime: RealtimeControls;
  onSignedOut(): void;
}): MessagesControls {
  const [history, apply] = useLiveHistory({ realtime, rules: FEED_RULES, onSignedOut });
  const onSignedOutRef = useLatest(onSignedOut);

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

  return { ...history, send };
}
