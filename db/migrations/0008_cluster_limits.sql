-- Rate limits counted in the database rather than in each process, so they hold however
-- many pgcast processes serve one database (`--workers N` or separate `pgcast serve`s).
-- depends: 0007_cluster

-- Posts per user per minute (PGCAST_RATE_POSTS_PER_MINUTE), a moving window: one row per
-- user who posted, holding the times of the posts let through in the last minute. One
-- upsert (queries.TAKE_POST_SLOT) prunes, counts and appends on the locked row, so two
-- processes at once cannot both let the last post through.
CREATE TABLE pgcast_post_rates (
    user_id       bigint PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    recent        timestamptz[] NOT NULL,
    last_allowed  boolean NOT NULL
);

COMMENT ON TABLE pgcast_post_rates IS 'Posts per user per minute across every pgcast process (PGCAST_RATE_POSTS_PER_MINUTE, a moving window). One row per user who has posted through the API; rows whose posts are all over a minute old are deleted hourly.';
COMMENT ON COLUMN pgcast_post_rates.user_id IS 'Who posted; deleting the user deletes the row.';
COMMENT ON COLUMN pgcast_post_rates.recent IS 'When each post let through in the last minute was counted (the database''s clock); older ones are dropped by the next post.';
COMMENT ON COLUMN pgcast_post_rates.last_allowed IS 'Whether the latest attempt was let through (false: answered 429 rate_limited).';

-- Open sockets, one row per socket on any process (server/pg/sockets.py): the limits on
-- sockets per user and per address (PGCAST_RATE_SOCKETS_PER_USER / _PER_IP) count these rows,
-- and Pusher's HTTP API reads its channel state from their channels.
CREATE TABLE pgcast_sockets (
    socket_id   text PRIMARY KEY,
    process_id  uuid NOT NULL REFERENCES pgcast_processes ON DELETE CASCADE,
    protocol    text NOT NULL CHECK (protocol IN ('native', 'pusher')),
    user_id     bigint,
    address     text NOT NULL,
    channels    text[] NOT NULL DEFAULT '{}',
    opened_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX pgcast_sockets_user_idx ON pgcast_sockets (user_id) WHERE user_id IS NOT NULL;
CREATE INDEX pgcast_sockets_address_idx ON pgcast_sockets (address);
CREATE INDEX pgcast_sockets_process_idx ON pgcast_sockets (process_id);
CREATE INDEX pgcast_sockets_channels_idx ON pgcast_sockets USING gin (channels);

COMMENT ON TABLE pgcast_sockets IS 'Who is online: one row per open WebSocket (/ws or the Pusher protocol) on any pgcast process, inserted as it opens (within the socket limits, which count these rows), deleted as it closes. A process that dies takes its rows with its pgcast_processes row. See the online_users view.';
COMMENT ON COLUMN pgcast_sockets.socket_id IS 'The socket''s id, as its client was told (the native connected frame''s socket_id, or the Pusher socket_id); what X-Socket-ID names.';
COMMENT ON COLUMN pgcast_sockets.process_id IS 'The pgcast process holding it (pgcast_processes.id).';
COMMENT ON COLUMN pgcast_sockets.protocol IS 'native (GET /ws) or pusher (GET /app/{key}).';
COMMENT ON COLUMN pgcast_sockets.user_id IS 'The signed-in pgcast user (users.id); NULL for a Pusher socket without a pgcast session (PGCAST_PUSHER_PUBLIC_CHANNELS=open), which counts against its address only.';
COMMENT ON COLUMN pgcast_sockets.address IS 'The client''s address as pgcast sees it (the TCP peer; X-Forwarded-For is not trusted).';
COMMENT ON COLUMN pgcast_sockets.channels IS 'The channels it listens to, as stored in broadcasts (a Pusher #server-to-user-{id} as private-user.{id}); fixed for /ws, kept up to date on each Pusher subscribe and unsubscribe.';
COMMENT ON COLUMN pgcast_sockets.opened_at IS 'When it opened.';

CREATE VIEW online_users AS
SELECT s.user_id,
       u.name,
       count(*) AS sockets,
       count(DISTINCT s.process_id) AS processes,
       array_agg(DISTINCT s.protocol ORDER BY s.protocol) AS protocols,
       array_agg(DISTINCT s.address ORDER BY s.address) AS addresses,
       min(s.opened_at) AS online_since
FROM pgcast_sockets AS s
LEFT JOIN users AS u ON u.id = s.user_id
GROUP BY s.user_id, u.name;

COMMENT ON VIEW online_users IS 'Who is connected now, across every pgcast process: one row per signed-in user with open sockets, and one (user_id NULL) for every Pusher socket without a pgcast user.';
COMMENT ON COLUMN online_users.user_id IS 'users.id; NULL: Pusher sockets with no pgcast user.';
COMMENT ON COLUMN online_users.name IS 'Their display name.';
COMMENT ON COLUMN online_users.sockets IS 'Open sockets, of both protocols.';
COMMENT ON COLUMN online_users.processes IS 'How many pgcast processes hold them.';
COMMENT ON COLUMN online_users.protocols IS 'native, pusher, or both.';
COMMENT ON COLUMN online_users.addresses IS 'The client addresses they come from.';
COMMENT ON COLUMN online_users.online_since IS 'When the oldest of them opened.';
