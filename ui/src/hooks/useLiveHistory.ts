import { useCallback, useReducer, useRef, useState } from "react";
import type { RealtimeEvent } from "../lib/types";
import { describeError, isSignedOut } from "./errors";
import { useLatest } from "./useLatest";
import { useRealtimeEvents, type RealtimeControls } from "./useRealtime";
import { useSnapshot } from "./useSnapshot";

export interface HistoryState<Item> {
  /** Display order: history pages oldest first, then live items in arrival order. */
  messages: Item[];
  /** `before` for the next older page; null when the oldest item is loaded. */
  nextBefore: number | null;
  /** False until the first page has arrived. */
  loaded: boolean;
}

/** How one list is paged and how its live events and pages change it. */
export interface HistoryRules<Item, Event, Page> {
  fetchPage(before: number | null, signal?: AbortSignal): Promise<Page>;
  /** This list's event within a realtime event, or null when it is not for this list. */
  eventOf(event: RealtimeEvent): Event | null;
  applyEvent(messages: Item[], event: Event): Item[];
  replace(page: Page, eventsDuringFetch: Event[]): HistoryState<Item>;
  prependOlder(state: HistoryState<Item>, page: Page, before: number): HistoryState<Item>;
}

export interface HistoryControls<Item> {
  messages: Item[];
  /** False until the first page of history has arrived. */
  loaded: boolean;
  loadError: string | null;
  hasOlder: boolean;
  loadingOlder: boolean;
  olderError: string | null;
  reload(): void;
  loadOlder(): void;
}

type Action<Event, Page> =
  | { type: "event"; event: Event }
  | { type: "replaced"; page: Page; eventsDuringFetch: Event[] }
  | { type: "older"; page: Page; before: number };

const EMPTY = { messages: [], nextBefore: null, loaded: false };

/**
 * A list kept live: history over HTTP, changes over the shared realtime socket, merged by id.
 *
 * The first page is fetched once the socket is subscribed (its `connected` frame), not on
 * mount: the server guarantees every change committed after `connected` reaches the
 * socket, so a page fetched from then on plus the events on top of it leaves no gap. A
 * page fetched earlier would need a second fetch after `connected` to close that gap,
 * and the second one would replace whatever older pages the reader loaded in between.
 * `rules` must keep its identity for the component's life.
 */
export function useLiveHistory<Item, Event, Page>({
  realtime,
  rules,
  onSignedOut,
}: {
  realtime: RealtimeControls;
  rules: HistoryRules<Item, Event, Page>;
  onSignedOut(): void;
}): [HistoryControls<Item>, (event: Event) => void] {
  const [reducer] = useState(
    () =>
      (state: HistoryState<Item>, action: Action<Event, Page>): HistoryState<Item> => {
        switch (action.type) {
          case "event": {
            const messages = rules.applyEvent(state.messages, action.event);
            return messages === state.messages ? state : { ...state, messages };
          }
          case "replaced":
            return rules.replace(action.page, action.eventsDuringFetch);
          case "older":
            return rules.prependOlder(state, action.page, action.before);
        }
      },
  );
  const [history, dispatch] = useReducer(reducer, EMPTY as HistoryState<Item>);
  const [loadError, setLoadError] = useState<string | null>(null);
  const [loadingOlder, setLoadingOlder] = useState(false);
  const [olderError, setOlderError] = useState<string | null>(null);
  const historyRef = useLatest(history);
  const onSignedOutRef = useLatest(onSignedOut);
  const loadingOlderRef = useRef(false);

  const handleFailure = useCallback(
    (error: unknown, show: (message: string) => void) => {
      if (isSignedOut(error)) onSignedOutRef.current();
      else show(describeError(error));
    },
    [onSignedOutRef],
  );

  // Starts over from a fresh first page, replacing older pages too: it runs only when the
  // list may have a gap (a fresh socket) or on "Try again".
  const snapshot = useSnapshot<Page, Event>({
    fetch: (signal) => rules.fetchPage(null, signal),
    loaded: (page, eventsDuringFetch) => {
      dispatch({ type: "replaced", page, eventsDuringFetch });
      setLoadError(null);
      setOlderError(null);
    },
    failed: (error) => handleFailure(error, setLoadError),
  });

  const apply = useCallback(
    (event: Event) => {
      snapshot.record(event);
      dispatch({ type: "event", event });
    },
    [snapshot],
  );

  const loadOlder = useCallback(async () => {
    const before = historyRef.current.nextBefore;
    if (loadingOlderRef.current || before === null) return;
    const generation = snapshot.generation();
    loadingOlderRef.current = true;
    setLoadingOlder(true);
    setOlderError(null);
    try {
      const page = await rules.fetchPage(before);
      // A reload in the meantime replaced the list this page would extend. (The rules
      // also drop it if the list no longer ends at `before`.)
      if (generation === snapshot.generation()) dispatch({ type: "older", page, before });
    } catch (error) {
      if (generation === snapshot.generation()) handleFailure(error, setOlderError);
    } finally {
      loadingOlderRef.current = false;
      setLoadingOlder(false);
    }
  }, [handleFailure, historyRef, rules, snapshot]);

  useRealtimeEvents(realtime, {
    onEvent: (event) => {
      const own = rules.eventOf(event);
      if (own !== null) apply(own);
    },
    // A fresh socket only sees what is committed from now on: load history now so nothing
    // before it is missing. This is the only automatic first-page fetch.
    onFresh: () => void snapshot.load(),
  });

  const controls: HistoryControls<Item> = {
    messages: history.messages,
    loaded: history.loaded,
    loadError,
    hasOlder: history.nextBefore !== null,
    loadingOlder,
    olderError,
    reload: () => void snapshot.load(),
    loadOlder: () => void loadOlder(),
  };
  // `apply` shows an item the user just made at once, as if it had come live.
  return [controls, apply];
}
