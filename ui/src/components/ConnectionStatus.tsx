import type { ConnectionState } from "../lib/types";

const LABELS: Record<ConnectionState, string> = {
  connecting: "Connecting…",
  live: "Live",
  reconnecting: "Reconnecting…",
  offline: "Offline",
};

export function ConnectionStatus({ state }: { state: ConnectionState }) {
  return (
    <p className={`connection connection-${state}`} role="status" data-state={state}>
      <span className="connection-dot" aria-hidden="true" />
      {LABELS[state]}
    </p>
  );
}
