import { Composer } from "./components/Composer";
import { Feed } from "./components/Feed";
import { Header } from "./components/Header";
import { SignIn } from "./components/SignIn";
import { useMessages } from "./hooks/useMessages";
import { useSession } from "./hooks/useSession";
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
        <LiveFeed
          // A different user gets a fresh feed and socket.
          key={session.user.id}
          user={session.user}
          config={session.config}
          onSignedOut={markSignedOut}
        />
      );
  }
}

/** Mounted only while signed in, so the socket exists only while it can be authorised. */
function LiveFeed({
  user,
  config,
  onSignedOut,
}: {
  user: User;
  config: AppConfig;
  onSignedOut(): void;
}) {
  const feed = useMessages({ onSignedOut });
  return (
    <div className="app">
      <Header user={user} connection={feed.connection} />
      <main className="app-main">
        <Feed
          messages={feed.messages}
          loaded={feed.loaded}
          loadError={feed.loadError}
          hasOlder={feed.hasOlder}
          loadingOlder={feed.loadingOlder}
          olderError={feed.olderError}
          onLoadOlder={feed.loadOlder}
          onRetry={feed.reload}
        />
        <Composer maxChars={config.max_message_chars} onSend={feed.send} />
      </main>
    </div>
  );
}
