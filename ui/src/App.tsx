import { useCallback, useRef, useState } from "react";
import { flushSync } from "react-dom";
import { Composer } from "./components/Composer";
import { ConversationList } from "./components/ConversationList";
import { ConversationView } from "./components/ConversationView";
import { Feed } from "./components/Feed";
import { Header } from "./components/Header";
import { NotificationBell } from "./components/NotificationBell";
import { NotificationPanel } from "./components/NotificationPanel";
import { OnlineList } from "./components/OnlineList";
import { PeopleSearch } from "./components/PeopleSearch";
import { SignIn } from "./components/SignIn";
import { TabBar, type MainView } from "./components/TabBar";
import { Toasts } from "./components/Toasts";
import { useConversations } from "./hooks/useConversations";
import { useDirectMessages } from "./hooks/useDirectMessages";
import { useMessages } from "./hooks/useMessages";
import { useNotifications } from "./hooks/useNotifications";
import { useNow } from "./hooks/useNow";
import { usePageVisible } from "./hooks/usePageVisible";
import { usePresence } from "./hooks/usePresence";
import { useRealtime, type RealtimeControls } from "./hooks/useRealtime";
import { useSession } from "./hooks/useSession";
import { totalUnread } from "./lib/conversations";
import { MESSAGES_CHANNEL, PRESENCE_CHANNEL, userChannel } from "./lib/realtime";
import type { AppConfig, User } from "./lib/types";

export function App() {
  const { session, retry, signInWithDevLogin, markSignedOut } = useSession();

  switch (session.status) {
    case "loading":
      return (
        <main className="centered">
          <p role="status">Loading…</p>
        </main>
      );
    case "error":
      return (
        <main className="centered">
          <p className="error" role="alert">
            {session.message}
          </p>
          <button type="button" onClick={retry}>
            Try again
          </button>
        </main>
      );
    case "signed-out":
      return <SignIn config={session.config} onDevLogin={signInWithDevLogin} />;
    case "signed-in":
      return (
        <SignedIn
          // A different user gets fresh lists and a fresh socket.
          key={session.user.id}
          user={session.user}
          config={session.config}
          onSignedOut={markSignedOut}
          onReloadSession={retry}
        />
      );
  }
}

/**
 * Mounted only while signed in, so the socket exists only while it can be authorised.
 * One socket serves everything on the page: the public feed, the user's own channel, and
 * the presence channel that makes them one of those online (and tells them who else is).
 */
function SignedIn({
  user,
  config,
  onSignedOut,
  onReloadSession,
}: {
  user: User;
  config: AppConfig;
  onSignedOut(): void;
  onReloadSession(): void;
}) {
  const [channels] = useState(() => [MESSAGES_CHANNEL, userChannel(user.id), PRESENCE_CHANNEL]);
  const realtime = useRealtime({ channels, onSignedOut });
  const presence = usePresence({ realtime, channel: PRESENCE_CHANNEL, me: user.id });
  const feed = useMessages({ realtime, onSignedOut });
  const conversations = useConversations({ realtime, me: user.id, onSignedOut });
  const notifications = useNotifications({ realtime, onSignedOut });
  const now = useNow();

  const [view, setView] = useState<MainView>("feed");
  const [partner, setPartner] = useState<User | null>(null);
  const [panelOpen, setPanelOpen] = useState(false);
  const bell = useRef<HTMLButtonElement>(null);
  const onlineHeading = useRef<HTMLHeadingElement>(null);

  const openConversation = useCallback((other: User) => {
    setPartner(other);
    setView("conversation");
  }, []);
  const selectView = useCallback((next: "feed" | "chats") => {
    setView(next);
    if (next === "feed") setPartner(null);
  }, []);

  const showOnline = useCallback(() => {
    const heading = onlineHeading.current;
    if (heading === null) return;
    // On a phone the sidebar is a view of its own, hidden behind the feed or a conversation:
    // show it first, so focus lands on something on screen.
    if (!isDisplayed(heading)) flushSync(() => setView("chats"));
    // Focusing scrolls it into view, in a long sidebar too.
    heading.focus();
  }, []);

  const activeUserId = view === "conversation" && partner ? partner.id : null;

  return (
    <div className="app" data-view={view}>
      <Header
        user={user}
        connection={realtime.state}
        online={presence.loaded ? { count: presence.online.length, onShow: showOnline } : null}
      >
        <NotificationBell
          ref={bell}
          unreadCount={notifications.unreadCount}
          expanded={panelOpen}
          onToggle={() => setPanelOpen((open) => !open)}
        />
      </Header>
      {realtime.forbidden && (
        <div className="banner" role="alert">
          <p>Live updates stopped: {realtime.forbidden}.</p>
          <button type="button" onClick={onReloadSession}>
            Reload
          </button>
        </div>
      )}
      <TabBar
        view={view}
        unreadChats={totalUnread(conversations.conversations, activeUserId)}
        onSelect={selectView}
      />
      <div className="app-body">
        <aside className="sidebar" aria-label="People and conversations">
          <button
            type="button"
            className={
              view === "conversation" ? "conversation" : "conversation conversation-active"
            }
            aria-current={view === "conversation" ? undefined : "true"}
            onClick={() => selectView("feed")}
          >
            <span className="channel-mark" aria-hidden="true">
              #
            </span>
            <span className="conversation-name">Public feed</span>
          </button>
          <PeopleSearch onOpen={openConversation} onSignedOut={onSignedOut} />
          <ConversationList
            conversations={conversations.conversations}
            me={user.id}
            activeUserId={activeUserId}
            loaded={conversations.loaded}
            loadError={conversations.loadError}
            now={now}
            onOpen={openConversation}
            onRetry={conversations.reload}
          />
          <OnlineList
            online={presence.online}
            loaded={presence.loaded}
            upToDate={presence.upToDate}
            onOpen={openConversation}
            headingRef={onlineHeading}
          />
        </aside>
        <main className="app-main">
          {view === "conversation" && partner ? (
            <Conversation
              // Another person: another conversation, with its own history and state.
              key={partner.id}
              realtime={realtime}
              me={user.id}
              partner={partner}
              maxChars={config.max_message_chars}
              onSignedOut={onSignedOut}
              onMarkedRead={conversations.markedRead}
              onBack={() => selectView("chats")}
            />
          ) : (
            <>
              <Feed history={feed} />
              <Composer maxChars={config.max_message_chars} onSend={feed.send} />
            </>
          )}
        </main>
      </div>
      {panelOpen && (
        <NotificationPanel
          notifications={notifications.notifications}
          unreadCount={notifications.unreadCount}
          loaded={notifications.loaded}
          loadError={notifications.loadError}
          actionError={notifications.actionError}
          hasOlder={notifications.hasOlder}
          loadingOlder={notifications.loadingOlder}
          onMarkRead={notifications.markRead}
          onMarkAllRead={notifications.markAllRead}
          onLoadOlder={notifications.loadOlder}
          onRetry={notifications.reload}
          onClose={() => {
            setPanelOpen(false);
            // Back where the panel was opened from, not at the top of the page.
            bell.current?.focus();
          }}
        />
      )}
      <Toasts
        // The open panel lists them already.
        toasts={panelOpen ? [] : notifications.toasts}
        onOpen={() => setPanelOpen(true)}
        onDismiss={notifications.dismissToast}
      />
    </div>
  );
}

/** Whether an element is laid out (jsdom, which lays nothing out, says yes). */
function isDisplayed(element: HTMLElement): boolean {
  return typeof element.checkVisibility === "function" ? element.checkVisibility() : true;
}

function Conversation({
  realtime,
  me,
  partner,
  maxChars,
  onSignedOut,
  onMarkedRead,
  onBack,
}: {
  realtime: RealtimeControls;
  me: number;
  partner: User;
  maxChars: number;
  onSignedOut(): void;
  onMarkedRead(userId: number): void;
  onBack(): void;
}) {
  const visible = usePageVisible();
  const thread = useDirectMessages({
    realtime,
    me,
    other: partner.id,
    viewed: visible,
    onSignedOut,
    onMarkedRead,
  });
  return (
    <ConversationView
      me={me}
      user={partner}
      thread={thread}
      maxChars={maxChars}
      onSend={thread.send}
      onBack={onBack}
    />
  );
}
