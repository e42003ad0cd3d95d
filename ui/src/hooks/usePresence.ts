import { useEffect, useMemo, useReducer } from "react";
import {
  applyPresenceEvent,
  EMPTY_PRESENCE,
  onlineForDisplay,
  presenceReconnected,
  type OnlineEntry,
  type PresenceState,
} from "../lib/presence";
import type { PresenceEvent } from "../lib/types";
import type { RealtimeControls } from "./useRealtime";

type PresenceAction = PresenceEvent | { type: "reconnected" };

function presenceReducer(state: PresenceState, action: PresenceAction): PresenceState {
  return action.type === "reconnected"
    ? presenceReconnected(state)
    : applyPresenceEvent(state, action);
}

export interface PresenceControls {
  /** Who is online: the signed-in user first, then everyone else by name. */
  online: OnlineEntry[];
  /** False until the server has sent its first list. */
  loaded: boolean;
  /**
   * False while the list may be out of date: no socket is live, or a new one has not sent
   * its own list yet (it does once it has replayed what it missed).
   */
  upToDate: boolean;
}

/**
 * Who is on a presence channel of the shared socket. Being on that socket makes the user
 * a member, so there is nothing to fetch: the server sends the whole list once the socket
 * is live and every join and leave after it.
 */
export function usePresence({
  realtime,
  channel,
  me,
}: {
  realtime: Pick<RealtimeControls, "state" | "subscribe">;
  channel: string;
  me: number;
}): PresenceControls {
  const [presence, dispatch] = useReducer(presenceReducer, EMPTY_PRESENCE);
  const { subscribe, state } = realtime;

  useEffect(
    () =>
      subscribe({
        onEvent: (event) => {
          if (event.kind === "presence" && event.channel === channel) dispatch(event.event);
        },
        onConnected: () => dispatch({ type: "reconnected" }),
      }),
    [subscribe, channel],
  );

  const online = useMemo(() => onlineForDisplay(presence.members, me), [presence.members, me]);
  return {
    online,
    loaded: presence.loaded,
    upToDate: presence.current && state === "live",
  };
}
