export type MainView = "feed" | "chats" | "conversation";

/** On a phone, the feed and the conversations take turns on the screen. */
export function TabBar({
  view,
  unreadChats,
  onSelect,
}: {
  view: MainView;
  unreadChats: number;
  onSelect(view: "feed" | "chats"): void;
}) {
  const chatsActive = view !== "feed";
  return (
    <nav className="tab-bar" aria-label="Views">
      <button
        type="button"
        className="tab"
        aria-current={view === "feed" ? "page" : undefined}
        onClick={() => onSelect("feed")}
      >
        Feed
      </button>
      <button
        type="button"
        className="tab"
        aria-current={chatsActive ? "page" : undefined}
        onClick={() => onSelect("chats")}
        aria-label={unreadChats > 0 ? `Chats, ${unreadChats} unread` : "Chats"}
      >
        Chats
        {unreadChats > 0 && (
          <span className="badge" aria-hidden="true">
            {unreadChats > 99 ? "99+" : unreadChats}
          </span>
        )}
      </button>
    </nav>
  );
}
