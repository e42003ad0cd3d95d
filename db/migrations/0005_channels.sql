-- Channels. Every broadcast has a channel and an event name, and the event log becomes
-- `broadcasts`: the table any tool inserts into to broadcast on any channel, and the one the
-- `messages` triggers write to. Its ids and transaction ids are kept, so cursors issued
-- before this migration still resume. Who may listen to a channel is decided here too.
-- depends: 0004_cluster_identity

-- The audit views are defined in db/triggers.sql from now on, over the new columns.
DROP VIEW message_audit;
ALTER TABLE message_events RENAME TO broadcasts;
ALTER SEQUENCE message_events_id_seq RENAME TO broadcasts_id_seq;
ALTER INDEX message_events_pkey RENAME TO broadcasts_pkey;
ALTER INDEX message_events_tx_idx RENAME TO broadcasts_tx_idx;
ALTER INDEX message_events_recorded_at_idx RENAME TO broadcasts_recorded_at_idx;
DROP INDEX message_events_message_id_idx;

-- The message columns become one JSON payload, as clients receive it: the message with its
-- author (as the author is now: the name was never stored), or just the id of a deletion.
ALTER TABLE broadcasts
    ADD COLUMN channel text NOT NULL DEFAULT 'messages',
    ADD COLUMN data jsonb;
ALTER TABLE broadcasts ALTER COLUMN channel DROP DEFAULT;
UPDATE broadcasts e
SET data = CASE
    WHEN e.kind = 'message-deleted' THEN jsonb_build_object('id', e.message_id)
    ELSE jsonb_build_object('message', jsonb_build_object(
        'id', e.message_id,
        'user_id', e.user_id,
        'content', e.content,
        'created_at', to_char(e.message_created_at AT TIME ZONE 'UTC', 'FMYYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
        'updated_at', to_char(e.message_updated_at AT TIME ZONE 'UTC', 'FMYYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
        'user', (SELECT jsonb_build_object('id', u.id, 'name', u.name, 'avatar_url', u.avatar_url)
                 FROM users u WHERE u.id = e.user_id)))
END;
ALTER TABLE broadcasts
    ALTER COLUMN data SET NOT NULL,
    DROP CONSTRAINT message_events_kind_check,
    DROP COLUMN message_id,
    DROP COLUMN user_id,
    DROP COLUMN content,
    DROP COLUMN message_created_at,
    DROP COLUMN message_updated_at;
ALTER TABLE broadcasts RENAME COLUMN kind TO event;

-- Whoever inserts a row directly gets the same bookkeeping as pgcast's own writes.
ALTER TABLE broadcasts
    ALTER COLUMN origin_socket_id SET DEFAULT nullif(current_setting('pgcast.origin_socket_id', true), ''),
    ADD CONSTRAINT broadcasts_channel_name_rule
        CHECK (channel ~ '^[-a-zA-Z0-9_=@,.;]{1,164}$'),
    ADD CONSTRAINT broadcasts_event_name_rule
        CHECK (char_length(event) BETWEEN 1 AND 200 AND event !~ '[[:cntrl:]]'),
    ADD CONSTRAINT broadcasts_data_is_object
        CHECK (jsonb_typeof(data) = 'object');

-- Replay reads only a socket's channels: one index seek per channel, never a walk of the
-- whole log. Live delivery reads every channel through broadcasts_tx_idx.
CREATE INDEX broadcasts_channel_tx_idx ON broadcasts (channel, tx, id);

COMMENT ON TABLE broadcasts IS 'Every broadcast, in the writing transaction: INSERT a row (channel, event, data) from any SQL client to broadcast it; the triggers of messages and other broadcasting tables write here too. Read by pgcast to deliver and replay in commit order; doubles as the audit trail; pruned after PGCAST_EVENT_RETENTION.';
COMMENT ON COLUMN broadcasts.id IS 'Event id; orders events within one transaction. Assigned automatically.';
COMMENT ON COLUMN broadcasts.tx IS 'Top-level transaction id of the writer (default pg_current_xact_id()); delivery order follows commit order of these.';
COMMENT ON COLUMN broadcasts.channel IS 'Channel name: 1-164 characters of a-z A-Z 0-9 - _ = @ , . ; (Pusher''s rule). private-... and presence-... channels reach only the users pgcast_may_listen() allows.';
COMMENT ON COLUMN broadcasts.event IS 'Event name: 1-200 characters, no control characters (new-message, order-shipped, ...).';
COMMENT ON COLUMN broadcasts.data IS 'The payload clients receive, a JSON object.';
COMMENT ON COLUMN broadcasts.origin_socket_id IS 'Socket that wrote through the API with X-Socket-ID (or SET LOCAL pgcast.origin_socket_id); it is not sent its own event.';
COMMENT ON CONSTRAINT broadcasts_channel_name_rule ON broadcasts IS 'A channel name is 1-164 characters of a-z A-Z 0-9 - _ = @ , . ;';
COMMENT ON CONSTRAINT broadcasts_event_name_rule ON broadcasts IS 'An event name is 1-200 characters with no control characters.';
COMMENT ON CONSTRAINT broadcasts_data_is_object ON broadcasts IS 'data must be a JSON object, as clients expect one.';

-- Who may listen to private-... channels other than private-user.{id}.
CREATE TABLE channel_members (
    channel     text NOT NULL CHECK (channel ~ '^private-[-a-zA-Z0-9_=@,.;]{1,156}$'),
    user_id     bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    granted_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (channel, user_id)
);
CREATE INDEX channel_members_user_id_idx ON channel_members (user_id);

COMMENT ON TABLE channel_members IS 'Who may listen to a private-... channel (other than private-user.{id}, which is its user''s alone). INSERT to grant; DELETE to revoke, which closes that user''s subscriptions to the channel at once on every pgcast process.';
COMMENT ON COLUMN channel_members.channel IS 'Full channel name, e.g. private-team.ops.';
COMMENT ON COLUMN channel_members.user_id IS 'users.id of a member.';
COMMENT ON COLUMN channel_members.granted_at IS 'When the membership was granted.';

-- The rule, in a migration rather than db/triggers.sql: `pgcast migrate` re-applies
-- triggers.sql every time, but never this file again, so a DBA's own
-- CREATE OR REPLACE FUNCTION pgcast_may_listen survives it.
CREATE FUNCTION pgcast_may_listen(listener_id bigint, channel text) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT CASE
        WHEN channel LIKE 'private-user.%' THEN
            channel ~ '^private-user\.[1-9][0-9]{0,17}$'
            AND substr(channel, 14)::bigint = listener_id
        WHEN channel LIKE 'private-%' THEN EXISTS (
            SELECT 1 FROM channel_members m
            WHERE m.channel = pgcast_may_listen.channel AND m.user_id = listener_id)
        ELSE true
    END
$$;

COMMENT ON FUNCTION pgcast_may_listen(bigint, text) IS 'Whether user listener_id may listen to channel: private-user.{id} is user {id}''s alone; other private-... channels are for the users listed in channel_members; every other channel (presence-... included) is for every signed-in user. pgcast asks it on every subscription and when a membership is revoked. Yours to change: pgcast migrate never replaces it.';
