import { useEffect, useRef, type RefObject } from "react";

/**
 * Moves focus to the element when it appears (and when `key` changes), so keyboard and
 * screen-reader users land in a view that just opened instead of where they were.
 */
export function useFocusOnMount<T extends HTMLElement>(key: unknown = null): RefObject<T | null> {
  const ref = useRef<T | null>(null);
  useEffect(() => {
    ref.current?.focus({ preventScroll: true });
  }, [key]);
  return ref;
}
