-- The pgcast processes sharing this database, and who is on each presence channel. Every
-- process keeps its own row alive; any process removes the rows of one that died, and the
-- members it held with them (README "Presence"). The triggers and the presence_online view
-- are in db/triggers.sql.
-- depends: 0006_direct_messages_and_notifications

CREATE TABLE pgcast_processes (
    id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    host                text NOT NULL,
    pid                 int NOT NULL,
    port                int,
    listener_pid        int,
    listener_started_at timestamptz,
    started_at          timestamptz NOT NULL DEFAULT now(),
    seen_at             timestamptz NOT NULL DEFAULT now()
);

COMMENT ON TABLE pgcast_processes IS 'One row per running pgcast process. Each refreshes seen_at on a heartbeat; any of them deletes the row of a process whose LISTEN connection is gone from pg_stat_activity (killed) or whose seen_at is older than a few heartbeats (machine lost), and what referenced it goes with it. Read it to see which processes serve this database; deleting a row makes that process re-register.';
COMMENT ON COLUMN pgcast_processes.id IS 'Process id, chosen at start and kept for the life of the process (a process whose row was removed while it lived registers again under the same id).';
COMMENT ON COLUMN pgcast_processes.host IS 'Host name of the machine the process runs on.';
COMMENT ON COLUMN pgcast_processes.pid IS 'Operating system process id on that host.';
COMMENT ON COLUMN pgcast_processes.port IS 'TCP port it serves HTTP and WebSocket on (several processes may share one with --workers).';
COMMENT ON COLUMN pgcast_processes.listener_pid IS 'Backend pid (pg_stat_activity.pid) of its LISTEN connection, recorded each time that connection is (re)established; NULL until it is.';
COMMENT ON COLUMN pgcast_processes.listener_started_at IS 'backend_start of that backend, so a pid reused by another backend is not taken for the listener.';
COMMENT ON COLUMN pgcast_processes.started_at IS 'When the process registered first.';
COMMENT ON COLUMN pgcast_processes.seen_at IS 'Last heartbeat (database time).';

-- user_id is text: with the Pusher protocol the ids are whatever the application's own
-- authorization endpoint says, not necessarily pgcast users.
CREATE TABLE presence_members (
    channel     text NOT NULL CHECK (channel ~ '^presence-[-a-zA-Z0-9_=@,.;]{0,155}$'),
    socket_id   text NOT NULL,
    user_id     text NOT NULL CHECK (char_length(user_id) BETWEEN 1 AND 200),
    user_info   jsonb,
    process_id  uuid REFERENCES pgcast_processes ON DELETE CASCADE,
    joined_at   timestamptz NOT NULL DEFAULT now(),
    left_at     timestamptz,
    PRIMARY KEY (channel, socket_id)
);
CREATE INDEX presence_members_channel_user_idx ON presence_members (channel, user_id);
CREATE INDEX presence_members_process_idx ON presence_members (process_id);
CREATE INDEX presence_members_left_at_idx ON presence_members (left_at) WHERE left_at IS NOT NULL;

COMMENT ON TABLE presence_members IS 'One row per socket subscribed to a presence-... channel, on any pgcast process. The channel''s members are the distinct user_ids; member_added is broadcast when a user''s first row is inserted and member_removed when the last is deleted (db/triggers.sql). A socket that leaves, or whose process died, keeps its row with left_at set for PGCAST_PRESENCE_GRACE, so a quick reconnect announces nothing. See the presence_online view.';
COMMENT ON COLUMN presence_members.channel IS 'The presence channel, e.g. presence-room.';
COMMENT ON COLUMN presence_members.socket_id IS 'The socket''s id (Pusher socket_id or the native socket id), unique across processes.';
COMMENT ON COLUMN presence_members.user_id IS 'The member''s user id as clients see it (text: Pusher applications bring their own ids).';
COMMENT ON COLUMN presence_members.user_info IS 'What clients are told about the member, e.g. {"name", "avatar_url"}.';
COMMENT ON COLUMN presence_members.process_id IS 'The pgcast process holding the socket; NULL once the socket left or its process died.';
COMMENT ON COLUMN presence_members.joined_at IS 'When the socket joined.';
COMMENT ON COLUMN presence_members.left_at IS 'When the socket left (or its process was found dead); the row is deleted PGCAST_PRESENCE_GRACE later. NULL while connected.';
