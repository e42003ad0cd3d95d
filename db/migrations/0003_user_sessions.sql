-- Server-side record of sign-ins, so a session cookie can be revoked (logout, user deleted).
-- depends: 0002_message_events

CREATE TABLE user_sessions (
    id                  text PRIMARY KEY,
    user_id             bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    workos_session_id   text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    expires_at          timestamptz NOT NULL,
    revoked_at          timestamptz
);
CREATE INDEX user_sessions_user_id_idx ON user_sessions (user_id);
CREATE INDEX user_sessions_expires_at_idx ON user_sessions (expires_at);

COMMENT ON TABLE user_sessions IS 'One row per browser sign-in; the session cookie names a row here, and a revoked or expired row signs the cookie out.';
COMMENT ON COLUMN user_sessions.id IS 'Random session id carried in the encrypted session cookie.';
COMMENT ON COLUMN user_sessions.user_id IS 'Who signed in; deleting the user deletes their sessions.';
COMMENT ON COLUMN user_sessions.workos_session_id IS 'WorkOS AuthKit session (sid) for signing out of WorkOS too; NULL for dev login.';
COMMENT ON COLUMN user_sessions.created_at IS 'When the user signed in.';
COMMENT ON COLUMN user_sessions.expires_at IS 'When the session ends by itself (PGCAST_SESSION_MAX_AGE after sign-in).';
COMMENT ON COLUMN user_sessions.revoked_at IS 'When the session was ended by logout; NULL while active.';

ALTER TABLE users ADD COLUMN workos_updated_at timestamptz;
COMMENT ON COLUMN users.workos_updated_at IS 'updated_at of the WorkOS user object last applied; older webhook replays are ignored.';
