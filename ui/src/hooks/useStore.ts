import { useCallback, useRef, useState } from "react";

/**
 * State that event handlers update one event at a time and read back at once: each
 * `update` sees the result of the one before, even before React has rendered it, so a
 * handler can tell what an event changed (a new notification, a count gone stale).
 */
export function useStore<T>(initial: T): [T, (change: (current: T) => T) => T, () => T] {
  const [state, setState] = useState(initial);
  const ref = useRef(state);
  const update = useCallback((change: (current: T) => T) => {
    const next = change(ref.current);
    if (next !== ref.current) {
      ref.current = next;
      setState(next);
    }
    return next;
  }, []);
  const get = useCallback(() => ref.current, []);
  return [state, update, get];
}
