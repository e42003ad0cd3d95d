import { configureEcho } from "@laravel/echo-react";
import { type FormEvent, useEffect, useState } from "react";
import { Live } from "./Live";
import { currentUser, devLogin, pgcastEchoOptions, pusherKey, type PgcastEchoOptions, type User } from "./pgcast";
import { SeedMessages } from "./SeedMessages.jsx";

type Ready = { user: User; options: PgcastEchoOptions };

function SignIn({ onSignedIn }: { onSignedIn: (user: User) => void }) {
  const [email, setEmail] = useState("");
  const [name, setName] = useState("");
  const [error, setError] = useState<string | null>(null);
  const submit = (event: FormEvent) => {
    event.preventDefault();
    setError(null);
    devLogin(email, name).then(onSignedIn, (e: Error) => setError(e.message));
  };
  return (
    <form onSubmit={submit} aria-label="Sign in">
      <p>pgcast's Pusher channels need a signed-in user: sign in with pgcast's dev login.</p>
      <label>
        Email <input type="email" value={email} onChange={(e) => setEmail(e.target.value)} required />
      </label>{" "}
      <label>
        Name <input value={name} onChange={(e) => setName(e.target.value)} required />
      </label>{" "}
      <button type="submit">Sign in</button>
      {error && <p role="alert">{error}</p>}
    </form>
  );
}

export function App() {
  const [user, setUser] = useState<User | null | undefined>(undefined);
  const [ready, setReady] = useState<Ready | null>(null);
  const [error, setError] = useState<string | null>(null);

  useEffect(() => {
    currentUser().then(setUser, (e: Error) => setError(e.message));
  }, []);

  // Echo connects once there is a session: pgcast refuses a socket without one (4009).
  useEffect(() => {
    if (!user) return;
    pusherKey().then((key) => {
      const options = pgcastEchoOptions(key);
      configureEcho(options);
      setReady({ user, options });
    }, (e: Error) => setError(e.message));
  }, [user]);

  return (
    <main>
      <h1>pgcast + Laravel Echo</h1>
      {error && <p role="alert">{error}</p>}
      {user === null && <SignIn onSignedIn={setUser} />}
      {ready && (
        <>
          <p>
            Signed in as <strong data-testid="me">{ready.user.name}</strong>
          </p>
          <Live user={ready.user} />
          <SeedMessages config={ready.options} />
        </>
      )}
    </main>
  );
}
