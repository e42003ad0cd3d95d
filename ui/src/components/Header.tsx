import type { ReactNode } from "react";
import type { ConnectionState, User } from "../lib/types";
import { Avatar } from "./Avatar";
import { ConnectionStatus } from "./ConnectionStatus";

export function Header({
  user,
  connection,
  online,
  children,
}: {
  user: User;
  connection: ConnectionState;
  /** How many are online, and the way to the list; null until the server has said. */
  online?: { count: number; onShow(): void } | null;
  /** Controls that sit before the user's name (the notification bell). */
  children?: ReactNode;
}) {
  return (
    <header className="app-header">
      <h1 className="app-title">pgcast</h1>
      <ConnectionStatus state={connection} />
      {online && (
        // On a phone the list is on another view: this is the way to it from anywhere.
        <button
          type="button"
          className="online-summary button-small"
          title="Show who is online"
          onClick={online.onShow}
        >
          <span className="online-dot" aria-hidden="true" />
          {online.count} online
        </button>
      )}
      <div className="app-user">
        {children}
        <Avatar user={user} />
        <span className="app-user-name">{user.name}</span>
        {/* A real form post, not fetch: with WorkOS the 303 leads to WorkOS's own logout
            page, a cross-origin redirect that only a navigation can follow. */}
        <form className="app-sign-out" method="post" action="/auth/logout">
          <button type="submit" className="button-secondary">
            Sign out
          </button>
        </form>
      </div>
    </header>
  );
}
