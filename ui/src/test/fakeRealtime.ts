import type { RealtimeControls, RealtimeListener } from "../hooks/useRealtime";
import type { ConnectionState, RealtimeEvent } from "../lib/types";

/** The shared socket as the hooks see it, driven by the test. */
export class FakeRealtime implements RealtimeControls {
  state: ConnectionState = "live";
  forbidden = null;
  socketId: string | null = "sock-1";
  subscribed = false;
  readonly listeners = new Set<RealtimeListener>();

  getSocketId = () => this.socketId;
  isSubscribed = () => this.subscribed;
  subscribe = (listener: RealtimeListener) => {
    this.listeners.add(listener);
    return () => {
      this.listeners.delete(listener);
    };
  };
  publishLocal = (event: RealtimeEvent) => this.emit(event);

  emit(event: RealtimeEvent): void {
    for (const listener of [...this.listeners]) listener.onEvent?.(event);
  }

  /** The `connected` frame of a socket; `resumed: false` asks every listener to reload. */
  connect(resumed = false): void {
    this.subscribed = true;
    for (const listener of [...this.listeners]) listener.onConnected?.({ socketId: "sock-1", resumed });
  }
}
