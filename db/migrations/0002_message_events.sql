-- The event log: one row per broadcast, written by the triggers in db/triggers.sql.
-- It is what resumable delivery reads (see docs/delivery.md) and doubles as the audit trail.
-- depends: 0001_users_and_messages

CREATE TABLE message_events (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tx                  xid8 NOT NULL DEFAULT pg_current_xact_id(),
    kind                text NOT NULL CHECK (kind IN ('new-message', 'message-updated', 'message-deleted')),
    message_id          bigint NOT NULL,
    user_id             bigint NOT NULL,
    content             text,
    message_created_at  timestamptz,
    message_updated_at  timestamptz,
    origin_socket_id    text,
    db_role             text NOT NULL DEFAULT current_user,
    application_name    text NOT NULL DEFAULT current_setting('application_name'),
    client_addr         inet DEFAULT inet_client_addr(),
    recorded_at         timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX message_events_tx_idx ON message_events (tx, id);
CREATE INDEX message_events_recorded_at_idx ON message_events (recorded_at);
CREATE INDEX message_events_message_id_idx ON message_events (message_id);

COMMENT ON TABLE message_events IS 'Every broadcast of a messages row, in the writing transaction. Read by pgcast to deliver and replay; pruned after PGCAST_EVENT_RETENTION.';
COMMENT ON COLUMN message_events.id IS 'Event id; orders events within one transaction.';
COMMENT ON COLUMN message_events.tx IS 'Top-level transaction id of the writer; delivery order follows commit order of these.';
COMMENT ON COLUMN message_events.kind IS 'new-message, message-updated or message-deleted.';
COMMENT ON COLUMN message_events.message_id IS 'messages.id the event is about (the row may since be gone).';
COMMENT ON COLUMN message_events.user_id IS 'Author of the message at the time of the event.';
COMMENT ON COLUMN message_events.content IS 'Message text as written by this event; NULL for deletions.';
COMMENT ON COLUMN message_events.message_created_at IS 'messages.created_at at the time of the event.';
COMMENT ON COLUMN message_events.message_updated_at IS 'messages.updated_at at the time of the event.';
COMMENT ON COLUMN message_events.origin_socket_id IS 'Socket that posted through the API with X-Socket-ID; it is not sent its own message.';
COMMENT ON COLUMN message_events.db_role IS 'Database role (current_user) that wrote the row.';
COMMENT ON COLUMN message_events.application_name IS 'application_name of the writing session (pgcast names its own connections "pgcast").';
COMMENT ON COLUMN message_events.client_addr IS 'Network address of the writing session; NULL over a Unix socket.';
COMMENT ON COLUMN message_events.recorded_at IS 'Clock time at which the writer recorded the event (before its commit).';

CREATE TABLE pgcast_instance (
    singleton         boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    instance_id       uuid NOT NULL DEFAULT gen_random_uuid(),
    pruned_through    timestamptz
);
INSERT INTO pgcast_instance DEFAULT VALUES;

COMMENT ON TABLE pgcast_instance IS 'One row of pgcast bookkeeping for this database.';
COMMENT ON COLUMN pgcast_instance.singleton IS 'Always true: the table holds exactly one row.';
COMMENT ON COLUMN pgcast_instance.instance_id IS 'Random id baked into cursors, so a cursor from another database is refused.';
COMMENT ON COLUMN pgcast_instance.pruned_through IS 'Latest recorded_at of events removed by retention; older cursors cannot be resumed.';

CREATE VIEW message_audit AS
SELECT e.id AS event_id,
       e.recorded_at,
       e.kind,
       e.message_id,
       e.user_id,
       u.email AS author_email,
       u.name AS author_name,
       e.content,
       e.db_role,
       e.application_name,
       e.client_addr,
       (e.application_name = 'pgcast') AS via_api,
       e.tx
FROM message_events e
LEFT JOIN users u ON u.id = e.user_id;

COMMENT ON VIEW message_audit IS 'Who broadcast what, when, and from where: one row per event, newest last.';
COMMENT ON COLUMN message_audit.event_id IS 'message_events.id.';
COMMENT ON COLUMN message_audit.recorded_at IS 'When the writer recorded the event.';
COMMENT ON COLUMN message_audit.kind IS 'new-message, message-updated or message-deleted.';
COMMENT ON COLUMN message_audit.message_id IS 'The message concerned.';
COMMENT ON COLUMN message_audit.user_id IS 'The message author.';
COMMENT ON COLUMN message_audit.author_email IS 'Author e-mail (NULL once the user is deleted).';
COMMENT ON COLUMN message_audit.author_name IS 'Author display name (NULL once the user is deleted).';
COMMENT ON COLUMN message_audit.content IS 'Text written by the event; NULL for deletions.';
COMMENT ON COLUMN message_audit.db_role IS 'Database role of the writer.';
COMMENT ON COLUMN message_audit.application_name IS 'Writer''s application_name: "pgcast" for the API, "psql" for psql, ...';
COMMENT ON COLUMN message_audit.client_addr IS 'Writer''s network address; NULL over a Unix socket.';
COMMENT ON COLUMN message_audit.via_api IS 'True when the event came from pgcast itself (REST API, pgcast send).';
COMMENT ON COLUMN message_audit.tx IS 'Writer''s transaction id.';
