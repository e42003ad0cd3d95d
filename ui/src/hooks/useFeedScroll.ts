import { useCallback, useLayoutEffect, useRef, useState, type RefObject } from "react";

const NEAR_EDGE_PX = 120;

export interface FeedScroll {
  containerRef: RefObject<HTMLDivElement | null>;
  onScroll(): void;
  /** False while the reader has scrolled up, away from the newest messages. */
  atBottom: boolean;
  scrollToBottom(): void;
}

/**
 * Scroll behaviour of a chat log: start at the newest message, follow new messages
 * while the reader is at the bottom, and keep the visible message in place when an
 * older page is prepended above it.
 */
export function useFeedScroll(messages: { id: number }[], onNearTop: () => void): FeedScroll {
  const containerRef = useRef<HTMLDivElement | null>(null);
  const [atBottom, setAtBottom] = useState(true);
  const followBottom = useRef(true);
  // Geometry as of the last commit or scroll, to measure what a prepend added above.
  const lastGeometry = useRef({ scrollHeight: 0, scrollTop: 0 });
  const lastFirstId = useRef<number | undefined>(undefined);

  useLayoutEffect(() => {
    const container = containerRef.current;
    if (!container) return;
    const previousFirstId = lastFirstId.current;
    const firstId = messages[0]?.id;
    const prepended =
      previousFirstId !== undefined &&
      firstId !== previousFirstId &&
      messages.some((message) => message.id === previousFirstId);

    if (prepended) {
      const added = container.scrollHeight - lastGeometry.current.scrollHeight;
      container.scrollTop = lastGeometry.current.scrollTop + added;
    } else if (followBottom.current) {
      container.scrollTop = container.scrollHeight;
    }
    lastFirstId.current = firstId;
    lastGeometry.current = { scrollHeight: container.scrollHeight, scrollTop: container.scrollTop };
  }, [messages]);

  const onScroll = useCallback(() => {
    const container = containerRef.current;
    if (!container) return;
    const { scrollTop, scrollHeight, clientHeight } = container;
    lastGeometry.current = { scrollHeight, scrollTop };
    const nearBottom = scrollHeight - scrollTop - clientHeight < NEAR_EDGE_PX;
    followBottom.current = nearBottom;
    setAtBottom(nearBottom);
    if (scrollTop < NEAR_EDGE_PX && scrollHeight > clientHeight) onNearTop();
  }, [onNearTop]);

  const scrollToBottom = useCallback(() => {
    const container = containerRef.current;
    if (!container) return;
    followBottom.current = true;
    setAtBottom(true);
    container.scrollTop = container.scrollHeight;
  }, []);

  return { containerRef, onScroll, atBottom, scrollToBottom };
}
