import { useState, type FormEvent } from "react";
import { ApiError } from "../lib/api";
import type { AppConfig } from "../lib/types";

export interface SignInProps {
  config: AppConfig;
  onDevLogin(email: string, name: string): Promise<void>;
}

export function SignIn({ config, onDevLogin }: SignInProps) {
  const [email, setEmail] = useState("");
  const [name, setName] = useState("");
  const [pending, setPending] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const { workos, dev_login: devLogin } = config.auth;

  async function handleSubmit(event: FormEvent<HTMLFormElement>) {
    event.preventDefault();
    setPending(true);
    setError(null);
    try {
      await onDevLogin(email.trim(), name.trim());
    } catch (caught) {
      setError(caught instanceof ApiError ? caught.message : "Sign-in failed. Please try again.");
      setPending(false);
    }
  }

  return (
    <main className="sign-in">
      <div className="sign-in-card">
        <h1 className="app-title">pgcast</h1>
        <p className="sign-in-lead">Sign in to read and post messages.</p>

        {workos && (
          <a className="button" href="/auth/login">
            Sign in with WorkOS
          </a>
        )}

        {devLogin && (
          <form className="dev-login" onSubmit={handleSubmit} aria-labelledby="dev-login-heading">
            <h2 id="dev-login-heading">Developer sign-in</h2>
            <p className="dev-login-note">Local development only: no password needed.</p>
            <label htmlFor="dev-login-email">Email</label>
            <input
              id="dev-login-email"
              type="email"
              autoComplete="email"
              required
              value={email}
              onChange={(event) => setEmail(event.target.value)}
            />
            <label htmlFor="dev-login-name">Name</label>
            <input
              id="dev-login-name"
              type="text"
              autoComplete="name"
              required
              value={name}
              onChange={(event) => setName(event.target.value)}
            />
            <button type="submit" disabled={pending}>
              {pending ? "Signing in…" : "Sign in"}
            </button>
            {error && (
              <p className="error" role="alert">
                {error}
              </p>
            )}
          </form>
        )}

        {!workos && !devLogin && (
          <p className="error" role="alert">
            No sign-in method is configured on this server.
          </p>
        )}
      </div>
    </main>
  );
}
