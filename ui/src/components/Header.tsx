import type { ReactNode } from "react";
import type { ConnectionState, User } from "../lib/types";
import { Avatar } from "./Avatar";
import { ConnectionStatus } from "./ConnectionStatus";

export function Header({
  user,
  connection,
  children,
}: {
  user: User;
  connection: ConnectionState;
  /** Controls that sit before the user's name (the notification bell). */
  children?: ReactNode;
}) {
  return (
    <header className="app-header">
      <h1 className="app-title">pgcast</h1>
      <ConnectionStatus state={connection} />
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
