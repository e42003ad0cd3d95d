import type { Ref } from "react";
import { memberAsUser, type OnlineEntry } from "../lib/presence";
import type { User } from "../lib/types";
import { Avatar } from "./Avatar";

export interface OnlineListProps {
  online: OnlineEntry[];
  /** False until the server's first list has arrived. */
  loaded: boolean;
  /** False while the list may be out of date (reconnecting). */
  upToDate: boolean;
  onOpen(user: User): void;
  /** The heading, which the header's count moves focus to. */
  headingRef?: Ref<HTMLHeadingElement>;
}

/** Who is online now: you first, then everyone else, each a way to write to them. */
export function OnlineList({ online, loaded, upToDate, onOpen, headingRef }: OnlineListProps) {
  const count = online.length;
  const onlyMe = online.every((entry) => entry.isMe);
  return (
    <section className="online" aria-labelledby="online-title" aria-busy={!upToDate}>
      <h2
        ref={headingRef}
        className="sidebar-heading"
        tabIndex={-1}
        // One name for the whole heading: browsers join hidden parts of it with stray spaces.
        aria-label={loaded ? `Online, ${count === 1 ? "1 person" : `${count} people`}` : undefined}
      >
        <span id="online-title">Online</span>
        {loaded && (
          <span className="online-count" aria-hidden="true">
            {count}
          </span>
        )}
      </h2>
      {!loaded && <p className="sidebar-note">Finding who is online…</p>}
      {loaded && !upToDate && (
        <p className="sidebar-note">Reconnecting: this list may be out of date.</p>
      )}
      <ul className="online-list" aria-label="People online">
        {online.map(({ member, isMe }) => {
          const user = memberAsUser(member);
          const shown = user ?? { id: 0, name: member.name, avatar_url: member.avatar_url };
          return (
            <li key={member.id} data-online-user={member.id}>
              {isMe || user === null ? (
                <span className="person person-static">
                  <Avatar user={shown} />
                  <span className="person-name">{member.name}</span>
                  {isMe && (
                    <>
                      {" "}
                      <span className="online-you">(you)</span>
                    </>
                  )}
                </span>
              ) : (
                <button
                  type="button"
                  className="person"
                  title={`Write to ${member.name}`}
                  onClick={() => onOpen(user)}
                >
                  <Avatar user={user} />
                  <span className="person-name">{member.name}</span>
                </button>
              )}
            </li>
          );
        })}
      </ul>
      {loaded && onlyMe && <p className="sidebar-note">Nobody else is online.</p>}
    </section>
  );
}
