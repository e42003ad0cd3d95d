import { useCallback, useEffect, useMemo, useRef } from "react";
import { useLatest } from "./useLatest";

export interface Snapshot<Event> {
  /** Fetches afresh; a newer call cancels an older one, whose answer is then ignored. */
  load(): Promise<void>;
  /** Every live event goes through here, so one that arrives mid-fetch is re-applied. */
  record(event: Event): void;
  /** Changes with every load; an older page asked for under another one is stale. */
  generation(): number;
}

/**
 * Loads a fresh first page of something live (history, a list) while events keep coming.
 *
 * The page may predate any event that arrives while it is being fetched, so those events
 * are kept and handed to `loaded` with the page, to be applied on top (each is idempotent).
 * Answers from a superseded or unmounted load are dropped, and their request cancelled.
 */
export function useSnapshot<Page, Event>(options: {
  fetch(signal: AbortSignal): Promise<Page>;
  loaded(page: Page, eventsDuringFetch: Event[]): void;
  failed(error: unknown): void;
}): Snapshot<Event> {
  const optionsRef = useLatest(options);
  const generation = useRef(0);
  const abort = useRef<AbortController | null>(null);
  const buffered = useRef<Event[] | null>(null);

  const load = useCallback(async () => {
    const current = ++generation.current;
    abort.current?.abort();
    const controller = new AbortController();
    abort.current = controller;
    const events: Event[] = [];
    buffered.current = events;
    try {
      const page = await optionsRef.current.fetch(controller.signal);
      if (current !== generation.current) return;
      buffered.current = null;
      optionsRef.current.loaded(page, events);
    } catch (error) {
      if (current !== generation.current) return;
      optionsRef.current.failed(error);
    } finally {
      if (current === generation.current) {
        buffered.current = null;
        abort.current = null;
      }
    }
  }, [optionsRef]);

  const record = useCallback((event: Event) => {
    buffered.current?.push(event);
  }, []);

  const currentGeneration = useCallback(() => generation.current, []);

  useEffect(
    () => () => {
      // Unmounted: whatever is still in flight has nothing to update.
      generation.current += 1;
      abort.current?.abort();
      abort.current = null;
    },
    [],
  );

  return useMemo(
    () => ({ load, record, generation: currentGeneration }),
    [load, record, currentGeneration],
  );
}
