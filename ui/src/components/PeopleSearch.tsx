import { useId, useState } from "react";
import { useUserSearch } from "../hooks/useUserSearch";
import type { User } from "../lib/types";
import { Avatar } from "./Avatar";

/** Find someone by name and open the conversation with them. */
export function PeopleSearch({
  onOpen,
  onSignedOut,
}: {
  onOpen(user: User): void;
  onSignedOut(): void;
}) {
  const [query, setQuery] = useState("");
  const search = useUserSearch(query, { onSignedOut });
  const id = useId();

  function open(user: User) {
    setQuery("");
    onOpen(user);
  }

  return (
    <section className="people-search">
      <label htmlFor={`${id}-query`} className="sidebar-heading">
        Find people
      </label>
      <input
        id={`${id}-query`}
        type="search"
        autoComplete="off"
        placeholder="Search by name…"
        value={query}
        onChange={(event) => setQuery(event.target.value)}
        aria-describedby={`${id}-status`}
      />
      <p id={`${id}-status`} className="sidebar-note" aria-live="polite">
        {search.status === "searching" && "Searching…"}
        {search.status === "done" &&
          search.users.length === 0 &&
          `Nobody called “${search.query}”.`}
        {search.status === "error" && <span className="error">{search.message}</span>}
      </p>
      {search.status === "done" && search.users.length > 0 && (
        <ul className="people-results" aria-label="People found">
          {search.users.map((user) => (
            <li key={user.id}>
              <button type="button" className="person" onClick={() => open(user)}>
                <Avatar user={user} />
                <span className="person-name">{user.name}</span>
              </button>
            </li>
          ))}
        </ul>
      )}
    </section>
  );
}
