-- Broadcast triggers. Applied by `pgcast migrate` after the migrations; safe to re-apply.
--
-- Every broadcast is a row of `broadcasts`, written in the writer's own transaction, so it
-- commits or rolls back with the rows it is about. A tool broadcasts on any channel by
-- inserting there; a broadcasting table (messages, ...) has one statement trigger per
-- operation, all running pgcast_broadcast_rows(), which turns the rows written into
-- broadcasts through a function of that table's own: pgcast_broadcasts_of(row, operation),
-- one per row type (messages, direct_messages, notifications, a DBA's orders, ...).
-- Each statement that adds broadcasts sends one empty NOTIFY. PostgreSQL folds identical
-- notifications within a transaction, so a transaction costs one notification however many
-- statements it runs; the payload carries nothing because the listener reads `broadcasts`,
-- which has no size limit.

CREATE OR REPLACE FUNCTION pgcast_touch_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    -- An UPDATE that does not set updated_at itself gets the transaction time.
    IF NEW.updated_at IS NOT DISTINCT FROM OLD.updated_at THEN
        NEW.updated_at := now();
    END IF;
    RETURN NEW;
END
$$;

COMMENT ON FUNCTION pgcast_touch_updated_at() IS
    'Sets updated_at on UPDATE unless the statement set it explicitly.';

-- Laravel's serialization of a timestamp: UTC, microseconds, a Z suffix.
CREATE OR REPLACE FUNCTION pgcast_iso_time(moment timestamptz) RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT to_char(moment AT TIME ZONE 'UTC', 'FMYYYY-MM-DD"T"HH24:MI:SS.US"Z"')
$$;

COMMENT ON FUNCTION pgcast_iso_time(timestamptz) IS
    'A timestamp as broadcasts carry it: 2026-12-01T09:30:00.123456Z.';

CREATE OR REPLACE FUNCTION pgcast_broadcasts_of(m messages, operation text)
RETURNS TABLE (channel text, event text, data jsonb)
LANGUAGE sql STABLE AS $$
    SELECT 'messages',
           CASE operation
               WHEN 'INSERT' THEN 'new-message'
               WHEN 'UPDATE' THEN 'message-updated'
               ELSE 'message-deleted'
           END,
           CASE WHEN operation = 'DELETE' THEN jsonb_build_object('id', m.id)
           ELSE jsonb_build_object('message', jsonb_build_object(
               'id', m.id,
               'user_id', m.user_id,
               'content', m.content,
               'created_at', pgcast_iso_time(m.created_at),
               'updated_at', pgcast_iso_time(m.updated_at),
               'user', (SELECT jsonb_build_object('id', u.id, 'name', u.name,
                                                  'avatar_url', u.avatar_url)
                        FROM users u WHERE u.id = m.user_id)))
           END
$$;

COMMENT ON FUNCTION pgcast_broadcasts_of(messages, text) IS
    'What one written messages row broadcasts: channel messages, new-message / message-updated with {"message": Message}, message-deleted with {"id": id}.';

-- A user as other users see them in broadcasts: never the e-mail.
CREATE OR REPLACE FUNCTION pgcast_public_user(user_id bigint) RETURNS jsonb
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT jsonb_build_object('id', u.id, 'name', u.name, 'avatar_url', u.avatar_url)
    FROM users u WHERE u.id = pgcast_public_user.user_id
$$;

COMMENT ON FUNCTION pgcast_public_user(bigint) IS
    'A user as broadcasts show them to others: id, name and avatar_url, never the e-mail.';

-- The shapes clients see, in one place for broadcasts and the REST API alike.
CREATE OR REPLACE FUNCTION pgcast_direct_message_json(d direct_messages) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'id', d.id,
        'sender_id', d.sender_id,
        'recipient_id', d.recipient_id,
        'content', d.content,
        'created_at', pgcast_iso_time(d.created_at),
        'updated_at', pgcast_iso_time(d.updated_at),
        'read_at', pgcast_iso_time(d.read_at),
        'sender', pgcast_public_user(d.sender_id),
        'recipient', pgcast_public_user(d.recipient_id))
$$;

COMMENT ON FUNCTION pgcast_direct_message_json(direct_messages) IS
    'A direct message as its two people see it, with both users.';

CREATE OR REPLACE FUNCTION pgcast_notification_json(n notifications) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'id', n.id,
        'type', n.type,
        'data', n.data,
        'read_at', pgcast_iso_time(n.read_at),
        'created_at', pgcast_iso_time(n.created_at))
$$;

COMMENT ON FUNCTION pgcast_notification_json(notifications) IS
    'A notification as its user sees it in lists and notification-updated events.';

CREATE OR REPLACE FUNCTION pgcast_broadcasts_of(d direct_messages, operation text)
RETURNS TABLE (channel text, event text, data jsonb)
LANGUAGE sql STABLE AS $$
    SELECT 'private-user.' || person,
           CASE operation
               WHEN 'INSERT' THEN 'new-direct-message'
               WHEN 'UPDATE' THEN 'direct-message-updated'
               ELSE 'direct-message-deleted'
           END,
           CASE WHEN operation = 'DELETE' THEN jsonb_build_object('id', d.id)
           ELSE jsonb_build_object('direct_message', pgcast_direct_message_json(d))
           END
    FROM (VALUES (d.sender_id), (d.recipient_id)) AS people (person)
$$;

COMMENT ON FUNCTION pgcast_broadcasts_of(direct_messages, text) IS
    'What one written direct_messages row broadcasts: to the sender''s and the recipient''s private-user.{id} only, as new-direct-message / direct-message-updated with {"direct_message": ...}, or direct-message-deleted with {"id": id}.';

CREATE OR REPLACE FUNCTION pgcast_broadcasts_of(n notifications, operation text)
RETURNS TABLE (channel text, event text, data jsonb)
LANGUAGE sql STABLE AS $$
    SELECT 'private-user.' || n.user_id,
           CASE operation
               WHEN 'INSERT' THEN 'Illuminate\Notifications\Events\BroadcastNotificationCreated'
               WHEN 'UPDATE' THEN 'notification-updated'
               ELSE 'notification-deleted'
           END,
           CASE operation
               -- What Laravel's BroadcastNotificationCreated sends: the data, its id and type.
               WHEN 'INSERT' THEN n.data || jsonb_build_object('id', n.id, 'type', n.type)
               WHEN 'UPDATE' THEN jsonb_build_object('notification', pgcast_notification_json(n))
               ELSE jsonb_build_object('id', n.id)
           END
$$;

COMMENT ON FUNCTION pgcast_broadcasts_of(notifications, text) IS
    'What one written notifications row broadcasts, to its user''s private-user.{id} only: Illuminate\Notifications\Events\BroadcastNotificationCreated with the data plus id and type; notification-updated with {"notification": ...}; notification-deleted with {"id": id}.';

-- A record as a row of the type of `type_of`, field by field in order (PL/pgSQL's
-- assignment, no text round trip).
CREATE OR REPLACE FUNCTION pgcast_row_of(type_of anyelement, fields record) RETURNS anyelement
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    typed type_of%TYPE;
BEGIN
    typed := fields;
    RETURN typed;
END
$$;

COMMENT ON FUNCTION pgcast_row_of(anyelement, record) IS
    'fields (a record, e.g. a transition table''s row) as a value of type_of''s row type.';

-- The one trigger function of every broadcasting table, with the table's mapping
-- (row, operation) -> (channel, event, data). Rows are matched by `id`: an UPDATE that
-- changes a row's id is the deletion of the old id and the insertion of the new one, so no
-- client keeps a row that no longer exists.
--
-- Without an argument the mapping is pgcast_broadcasts_of(row, operation), found by the row's
-- type: the statements are static, so PL/pgSQL plans them once per session and trigger and
-- runs the cached plan after. An argument names a mapping function of any other name; the
-- statements are then built with it and planned again on every call (EXECUTE caches no
-- plan), which costs several times the rest of the trigger (bench/profile.md).
CREATE OR REPLACE FUNCTION pgcast_broadcast_rows() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    broadcasts_of regproc := TG_ARGV[0]::regproc;
BEGIN
    -- A statement that wrote no rows broadcasts nothing and wakes nobody.
    IF TG_OP = 'DELETE' THEN
        IF NOT EXISTS (SELECT FROM old_rows) THEN
            RETURN NULL;
        END IF;
    ELSIF NOT EXISTS (SELECT FROM new_rows) THEN
        RETURN NULL;
    END IF;
    -- Both halves run the same statements; only the way the mapping is named differs. A
    -- transition table's rows are of type record, which matches every overload of
    -- pgcast_broadcasts_of alike: pgcast_row_of gives each the type of NEW (or OLD), which is
    -- the table's row type even in a statement trigger. In a subquery kept apart by OFFSET 0,
    -- or the inlined mapping would convert the row again for every column it reads.
    IF TG_NARGS = 0 THEN
        IF TG_OP = 'INSERT' THEN
            INSERT INTO broadcasts (channel, event, data)
            SELECT b.channel, b.event, b.data
            FROM (SELECT r.id, pgcast_row_of(NEW, r) AS typed FROM new_rows r OFFSET 0) r,
                 LATERAL pgcast_broadcasts_of(r.typed, 'INSERT') b
            ORDER BY r.id;
        ELSIF TG_OP = 'UPDATE' THEN
            INSERT INTO broadcasts (channel, event, data)
            SELECT b.channel, b.event, b.data
            FROM (SELECT r.id, pgcast_row_of(OLD, r) AS typed FROM old_rows r
                  WHERE NOT EXISTS (SELECT FROM new_rows n WHERE n.id = r.id)
                  OFFSET 0) r,
                 LATERAL pgcast_broadcasts_of(r.typed, 'DELETE') b
            ORDER BY r.id;
            INSERT INTO broadcasts (channel, event, data)
            SELECT b.channel, b.event, b.data
            FROM (SELECT r.id, pgcast_row_of(NEW, r) AS typed,
                         -- IN, not EXISTS: a hashed subplan, not a scan of old_rows per row.
                         CASE WHEN r.id IN (SELECT o.id FROM old_rows o)
                              THEN 'UPDATE' ELSE 'INSERT' END AS operation
                  FROM new_rows r OFFSET 0) r,
                 LATERAL pgcast_broadcasts_of(r.typed, r.operation) b
            ORDER BY r.id;
        ELSE
            INSERT INTO broadcasts (channel, event, data)
            SELECT b.channel, b.event, b.data
            FROM (SELECT r.id, pgcast_row_of(OLD, r) AS typed FROM old_rows r OFFSET 0) r,
                 LATERAL pgcast_broadcasts_of(r.typed, 'DELETE') b
            ORDER BY r.id;
        END IF;
    ELSIF TG_OP = 'INSERT' THEN
        EXECUTE format($q$
            INSERT INTO broadcasts (channel, event, data)
            SELECT b.channel, b.event, b.data
            FROM new_rows r, LATERAL %s(r, 'INSERT') b
            ORDER BY r.id
        $q$, broadcasts_of);
    ELSIF TG_OP = 'UPDATE' THEN
        EXECUTE format($q$
            INSERT INTO broadcasts (channel, event, data)
            SELECT b.channel, b.event, b.data
            FROM old_rows r, LATERAL %s(r, 'DELETE') b
            WHERE NOT EXISTS (SELECT FROM new_rows n WHERE n.id = r.id)
            ORDER BY r.id
        $q$, broadcasts_of);
        EXECUTE format($q$
            INSERT INTO broadcasts (channel, event, data)
            SELECT b.channel, b.event, b.data
            FROM new_rows r,
                 LATERAL %s(r, CASE WHEN r.id IN (SELECT o.id FROM old_rows o)
                                    THEN 'UPDATE' ELSE 'INSERT' END) b
            ORDER BY r.id
        $q$, broadcasts_of);
    ELSE
        EXECUTE format($q$
            INSERT INTO broadcasts (channel, event, data)
            SELECT b.channel, b.event, b.data
            FROM old_rows r, LATERAL %s(r, 'DELETE') b
            ORDER BY r.id
        $q$, broadcasts_of);
    END IF;
    RETURN NULL;
END
$$;

COMMENT ON FUNCTION pgcast_broadcast_rows() IS
    'Statement trigger of every broadcasting table: records what the written rows broadcast in broadcasts, per pgcast_broadcasts_of(row, operation) (no argument; planned once per session) or per the function its argument names (planned on every call).';

-- A new key for pgcast_notify_key (migration 0010): 32 random bytes from two gen_random_uuid()
-- (PostgreSQL's strong random source; 244 random bits), zero-padded to SHA-256's block of 64
-- bytes, XORed with HMAC's ipad (0x36) and opad (0x5c). Servers read the key at start: until
-- they restart, a changed key only makes them read every notification from the log.
CREATE OR REPLACE FUNCTION pgcast_new_notify_key() RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    key bytea := decode(replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', ''),
                        'hex');
    inner_key bytea := '';
    outer_key bytea := '';
    byte int;
BEGIN
    FOR i IN 0..63 LOOP
        byte := CASE WHEN i < 32 THEN get_byte(key, i) ELSE 0 END;
        inner_key := inner_key || set_byte('\x00'::bytea, 0, byte # 54);
        outer_key := outer_key || set_byte('\x00'::bytea, 0, byte # 92);
    END LOOP;
    INSERT INTO pgcast_notify_key (inner_key, outer_key) VALUES (inner_key, outer_key)
    ON CONFLICT (singleton) DO UPDATE SET inner_key = excluded.inner_key,
                                          outer_key = excluded.outer_key;
END
$$;

COMMENT ON FUNCTION pgcast_new_notify_key() IS
    'Makes a new key for pgcast_notify_key (the first at migrate; run it to change the key, then restart pgcast).';

SELECT pgcast_new_notify_key() WHERE NOT EXISTS (SELECT FROM pgcast_notify_key);

-- The payload is [transaction, statement time in µs, [[id, channel, event, data as text,
-- origin socket], ...]] for a statement of at most 64 broadcasts, all of its own
-- transaction, that fits NOTIFY's 8000 bytes, after the 64 hex digits of its HMAC-SHA256
-- (key in pgcast_notify_key, migration 0010): the listener hands those events to its sockets
-- as they are, in commit order, with no read of broadcasts. Anything else sends an empty
-- payload, and the listener reads broadcasts, which has no size limit; PostgreSQL folds
-- those into one per transaction. SECURITY DEFINER reads the key, which only its owner may.
CREATE OR REPLACE FUNCTION pgcast_wake_listeners() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    body text;
    payload text;
BEGIN
    IF (SELECT count(*) FROM (SELECT FROM new_broadcasts LIMIT 65) n) <= 64 THEN
        SELECT json_build_array(
                   pg_current_xact_id()::text::bigint,
                   (extract(epoch FROM statement_timestamp()) * 1000000)::bigint,
                   json_agg(json_build_array(b.id, b.channel, b.event, b.data::text,
                                             b.origin_socket_id) ORDER BY b.id))::text
        INTO body
        FROM new_broadcasts b
        -- A row written with a transaction id of its own (restored, or by hand) is read.
        HAVING bool_and(b.tx = pg_current_xact_id());
        IF octet_length(body) < 8000 - 64 THEN
            SELECT encode(sha256(k.outer_key || sha256(k.inner_key || convert_to(body, 'UTF8'))),
                          'hex') || body
            INTO payload
            FROM pgcast_notify_key k;
        END IF;
    END IF;
    PERFORM pg_notify('pgcast_events', coalesce(payload, ''));
    RETURN NULL;
END
$$;

COMMENT ON FUNCTION pgcast_wake_listeners() IS
    'Tells every pgcast listener what a statement broadcast: its transaction and events, signed, when they fit in the payload, else nothing (the listener then reads broadcasts).';

CREATE OR REPLACE TRIGGER broadcasts_wake_listeners
    AFTER INSERT ON broadcasts REFERENCING NEW TABLE AS new_broadcasts
    FOR EACH STATEMENT EXECUTE FUNCTION pgcast_wake_listeners();

CREATE OR REPLACE TRIGGER users_touch_updated_at
    BEFORE UPDATE ON users
    FOR EACH ROW EXECUTE FUNCTION pgcast_touch_updated_at();

CREATE OR REPLACE TRIGGER messages_touch_updated_at
    BEFORE UPDATE ON messages
    FOR EACH ROW EXECUTE FUNCTION pgcast_touch_updated_at();

-- Makes a table broadcast: its three statement triggers, each running pgcast_broadcast_rows,
-- with the name of the table's mapping function as their argument, or with none when the
-- mapping is the table's pgcast_broadcasts_of (broadcasts_of NULL). Idempotent, like the
-- rest of this file; DBAs call it for tables of their own.
CREATE OR REPLACE FUNCTION pgcast_broadcast_table(target regclass, broadcasts_of regproc)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    name text := (SELECT relname FROM pg_class WHERE oid = target);
    argument text := coalesce(quote_literal(broadcasts_of::text), '');
BEGIN
    EXECUTE format(
        'CREATE OR REPLACE TRIGGER %I AFTER INSERT ON %s REFERENCING NEW TABLE AS new_rows '
        'FOR EACH STATEMENT EXECUTE FUNCTION pgcast_broadcast_rows(%s)',
        name || '_broadcast_insert', target, argument);
    EXECUTE format(
        'CREATE OR REPLACE TRIGGER %I AFTER UPDATE ON %s '
        'REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows '
        'FOR EACH STATEMENT EXECUTE FUNCTION pgcast_broadcast_rows(%s)',
        name || '_broadcast_update', target, argument);
    EXECUTE format(
        'CREATE OR REPLACE TRIGGER %I AFTER DELETE ON %s REFERENCING OLD TABLE AS old_rows '
        'FOR EACH STATEMENT EXECUTE FUNCTION pgcast_broadcast_rows(%s)',
        name || '_broadcast_delete', target, argument);
END
$$;

COMMENT ON FUNCTION pgcast_broadcast_table(regclass, regproc) IS
    'Makes a table broadcast what its rows become through broadcasts_of(row, operation) -> (channel, event, data): creates its INSERT, UPDATE and DELETE statement triggers. The table needs an id column. pgcast_broadcast_table(table) uses the table''s pgcast_broadcasts_of instead, planned once per session rather than on every statement.';

CREATE OR REPLACE FUNCTION pgcast_broadcast_table(target regclass) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    -- The row type has the table's name, as search_path shows it.
    mapping text := format('pgcast_broadcasts_of(%s, text)', target);
BEGIN
    IF to_regprocedure(mapping) IS NULL THEN
        RAISE EXCEPTION 'pgcast_broadcast_table(%): there is no function %', target, mapping
            USING ERRCODE = 'undefined_function',
                  HINT = format('CREATE FUNCTION pgcast_broadcasts_of(r %s, operation text) '
                                'RETURNS TABLE (channel text, event text, data jsonb) ..., '
                                'or name your function: pgcast_broadcast_table(%L, ''its_name'')',
                                target, target::text);
    END IF;
    PERFORM pgcast_broadcast_table(target, NULL);
END
$$;

COMMENT ON FUNCTION pgcast_broadcast_table(regclass) IS
    'Makes a table broadcast what its rows become through pgcast_broadcasts_of(row, operation) -> (channel, event, data), the overload for its row type: creates its INSERT, UPDATE and DELETE statement triggers, whose statements are planned once per session. The table needs an id column.';

CREATE OR REPLACE TRIGGER direct_messages_touch_updated_at
    BEFORE UPDATE ON direct_messages
    FOR EACH ROW EXECUTE FUNCTION pgcast_touch_updated_at();

SELECT pgcast_broadcast_table('messages');
SELECT pgcast_broadcast_table('direct_messages');
SELECT pgcast_broadcast_table('notifications');

-- Their names until each table's mapping became an overload of pgcast_broadcasts_of.
DROP FUNCTION IF EXISTS pgcast_broadcasts_of_messages(messages, text);
DROP FUNCTION IF EXISTS pgcast_broadcasts_of_direct_messages(direct_messages, text);
DROP FUNCTION IF EXISTS pgcast_broadcasts_of_notifications(notifications, text);

-- The audit trail, for DBAs: who broadcast what, when, and from where.
CREATE OR REPLACE VIEW broadcast_audit AS
SELECT e.id AS event_id,
       e.recorded_at,
       e.channel,
       e.event,
       e.data,
       e.db_role,
       e.application_name,
       e.client_addr,
       (e.application_name = 'pgcast') AS via_api,
       e.origin_socket_id,
       e.tx
FROM broadcasts e;

COMMENT ON VIEW broadcast_audit IS 'Who broadcast what, when, and from where, on every channel: one row per broadcast, newest last.';
COMMENT ON COLUMN broadcast_audit.event_id IS 'broadcasts.id.';
COMMENT ON COLUMN broadcast_audit.recorded_at IS 'When the writer recorded the broadcast (before its commit).';
COMMENT ON COLUMN broadcast_audit.channel IS 'The channel it went to.';
COMMENT ON COLUMN broadcast_audit.event IS 'Its event name.';
COMMENT ON COLUMN broadcast_audit.data IS 'The payload clients received.';
COMMENT ON COLUMN broadcast_audit.db_role IS 'Database role of the writer.';
COMMENT ON COLUMN broadcast_audit.application_name IS 'Writer''s application_name: "pgcast" for the API, "pgcast-cli" for pgcast send, "psql" for psql, ...';
COMMENT ON COLUMN broadcast_audit.client_addr IS 'Writer''s network address; NULL over a Unix socket.';
COMMENT ON COLUMN broadcast_audit.via_api IS 'True when the broadcast came through pgcast''s HTTP API.';
COMMENT ON COLUMN broadcast_audit.origin_socket_id IS 'The socket that wrote it through the API with X-Socket-ID, if any.';
COMMENT ON COLUMN broadcast_audit.tx IS 'Writer''s transaction id.';

-- The messages channel in the columns it had before channels existed. A deletion carries
-- only the message id, so its author columns are NULL.
CREATE OR REPLACE VIEW message_audit AS
SELECT e.id AS event_id,
       e.recorded_at,
       e.event AS kind,
       coalesce(m.message_id, d.message_id) AS message_id,
       m.user_id,
       u.email AS author_email,
       u.name AS author_name,
       m.content,
       e.db_role,
       e.application_name,
       e.client_addr,
       (e.application_name = 'pgcast') AS via_api,
       e.tx
FROM broadcasts e
-- jsonb_to_record yields NULL, not an error, for a key of another type: a row a DBA wrote
-- by hand on channel messages must not break the view.
LEFT JOIN LATERAL (
    SELECT * FROM jsonb_to_record(
        CASE WHEN jsonb_typeof(e.data -> 'message') = 'object' THEN e.data -> 'message' END
    ) AS r(id jsonb, user_id jsonb, content jsonb)
) raw ON true
LEFT JOIN LATERAL (
    SELECT CASE WHEN jsonb_typeof(raw.id) = 'number' THEN (raw.id #>> '{}')::numeric::bigint END
               AS message_id,
           CASE WHEN jsonb_typeof(raw.user_id) = 'number'
                THEN (raw.user_id #>> '{}')::numeric::bigint END AS user_id,
           raw.content #>> '{}' AS content
) m ON true
LEFT JOIN LATERAL (
    SELECT CASE WHEN jsonb_typeof(e.data -> 'id') = 'number'
                THEN (e.data ->> 'id')::numeric::bigint END AS message_id
) d ON true
LEFT JOIN users u ON u.id = m.user_id
WHERE e.channel = 'messages';

COMMENT ON VIEW message_audit IS 'Who broadcast what on channel messages, when, and from where: one row per event, newest last (broadcast_audit covers every channel).';
COMMENT ON COLUMN message_audit.event_id IS 'broadcasts.id.';
COMMENT ON COLUMN message_audit.recorded_at IS 'When the writer recorded the event.';
COMMENT ON COLUMN message_audit.kind IS 'new-message, message-updated or message-deleted.';
COMMENT ON COLUMN message_audit.message_id IS 'The message concerned.';
COMMENT ON COLUMN message_audit.user_id IS 'The message author (NULL for a deletion).';
COMMENT ON COLUMN message_audit.author_email IS 'Author e-mail (NULL once the user is deleted, and for a deletion).';
COMMENT ON COLUMN message_audit.author_name IS 'Author display name (NULL once the user is deleted, and for a deletion).';
COMMENT ON COLUMN message_audit.content IS 'Text written by the event; NULL for deletions.';
COMMENT ON COLUMN message_audit.db_role IS 'Database role of the writer.';
COMMENT ON COLUMN message_audit.application_name IS 'Writer''s application_name: "pgcast" for the API, "psql" for psql, ...';
COMMENT ON COLUMN message_audit.client_addr IS 'Writer''s network address; NULL over a Unix socket.';
COMMENT ON COLUMN message_audit.via_api IS 'True when the event came through pgcast''s HTTP API.';
COMMENT ON COLUMN message_audit.tx IS 'Writer''s transaction id.';

-- Private chat and notifications, one row per change: who, to whom, when, from where. A
-- direct message is broadcast twice (to each of its people); the audit shows it once.
CREATE OR REPLACE VIEW private_audit AS
SELECT e.id AS event_id,
       e.recorded_at,
       CASE WHEN e.event LIKE '%direct-message%' THEN 'direct message' ELSE 'notification' END
           AS kind,
       e.event,
       coalesce(e.data -> 'direct_message' ->> 'id', e.data -> 'notification' ->> 'id',
                e.data ->> 'id') AS item_id,
       CASE WHEN jsonb_typeof(e.data -> 'direct_message' -> 'sender_id') = 'number'
            THEN (e.data -> 'direct_message' ->> 'sender_id')::numeric::bigint END AS sender_id,
       e.data -> 'direct_message' -> 'sender' ->> 'name' AS sender_name,
       CASE WHEN e.event LIKE '%direct-message%'
            THEN CASE WHEN jsonb_typeof(e.data -> 'direct_message' -> 'recipient_id') = 'number'
                      THEN (e.data -> 'direct_message' ->> 'recipient_id')::numeric::bigint END
            ELSE substr(e.channel, 14)::bigint
       END AS recipient_id,
       coalesce(e.data -> 'direct_message' ->> 'content',
                e.data ->> 'type', e.data -> 'notification' ->> 'type') AS content_or_type,
       e.db_role,
       e.application_name,
       e.client_addr,
       (e.application_name = 'pgcast') AS via_api,
       e.tx
FROM broadcasts e
WHERE e.channel ~ '^private-user\.[0-9]{1,18}$'
  AND e.event IN ('new-direct-message', 'direct-message-updated', 'direct-message-deleted',
                  'Illuminate\Notifications\Events\BroadcastNotificationCreated',
                  'notification-updated', 'notification-deleted')
  -- The second copy of a direct message's broadcast follows the first in the same statement.
  AND NOT (e.event LIKE '%direct-message%' AND EXISTS (
      SELECT FROM broadcasts first
      WHERE first.id = e.id - 1 AND first.tx = e.tx AND first.event = e.event
        AND first.data = e.data));

COMMENT ON VIEW private_audit IS 'Direct messages and notifications as they were broadcast: who, to whom, when, from where; one row per change, newest last. Deletions carry only the id.';
COMMENT ON COLUMN private_audit.event_id IS 'broadcasts.id (of the first copy, for a direct message).';
COMMENT ON COLUMN private_audit.recorded_at IS 'When the writer recorded it.';
COMMENT ON COLUMN private_audit.kind IS 'direct message or notification.';
COMMENT ON COLUMN private_audit.event IS 'The event name clients received.';
COMMENT ON COLUMN private_audit.item_id IS 'direct_messages.id or notifications.id.';
COMMENT ON COLUMN private_audit.sender_id IS 'Who wrote the direct message (NULL for notifications and deletions).';
COMMENT ON COLUMN private_audit.sender_name IS 'Their name when it was written.';
COMMENT ON COLUMN private_audit.recipient_id IS 'Who it was for (NULL for a deleted direct message).';
COMMENT ON COLUMN private_audit.content_or_type IS 'The direct message''s text, or the notification''s type.';
COMMENT ON COLUMN private_audit.db_role IS 'Database role of the writer.';
COMMENT ON COLUMN private_audit.application_name IS 'Writer''s application_name: "pgcast" for the API, "pgcast-cli", "psql", ...';
COMMENT ON COLUMN private_audit.client_addr IS 'Writer''s network address; NULL over a Unix socket.';
COMMENT ON COLUMN private_audit.via_api IS 'True when it came through pgcast''s HTTP API.';
COMMENT ON COLUMN private_audit.tx IS 'Writer''s transaction id.';

-- Before channels, the messages triggers had a function of their own.
DROP FUNCTION IF EXISTS pgcast_record_message_events();

-- Sockets of a signed-out session or a deleted user are closed by every pgcast process:
-- they LISTEN on pgcast_revocations next to pgcast_events. A session ends when it is revoked,
-- deleted while in force, or has its expiry moved into the past; sockets also close by
-- themselves when the expiry they learned at sign-in passes, so deleting rows that have
-- already expired (as retention does) announces nothing.
CREATE OR REPLACE FUNCTION pgcast_announce_revocation() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_TABLE_NAME = 'users' THEN
        PERFORM pg_notify('pgcast_revocations', 'user:' || OLD.id);
    ELSIF TG_TABLE_NAME = 'channel_members' THEN
        -- Each process asks pgcast_may_listen again: the rule, not the row, has the last word.
        IF TG_OP = 'DELETE' OR (OLD.channel, OLD.user_id) IS DISTINCT FROM (NEW.channel, NEW.user_id) THEN
            PERFORM pg_notify('pgcast_revocations', 'membership:' || OLD.user_id || ':' || OLD.channel);
        END IF;
    ELSIF TG_OP = 'DELETE' THEN
        IF OLD.revoked_at IS NULL AND OLD.expires_at > now() THEN
            PERFORM pg_notify('pgcast_revocations', 'session:' || OLD.id);
        END IF;
    ELSIF (NEW.revoked_at IS NOT NULL AND OLD.revoked_at IS NULL)
       OR (NEW.expires_at <= now() AND OLD.expires_at > now()) THEN
        PERFORM pg_notify('pgcast_revocations', 'session:' || NEW.id);
    END IF;
    RETURN NULL;
END
$$;

COMMENT ON FUNCTION pgcast_announce_revocation() IS
    'Tells pgcast listeners to close the sockets of an ended session or a deleted user, and to re-check a revoked channel membership.';

CREATE OR REPLACE TRIGGER users_announce_deletion
    AFTER DELETE ON users
    FOR EACH ROW EXECUTE FUNCTION pgcast_announce_revocation();

CREATE OR REPLACE TRIGGER user_sessions_announce_revocation
    AFTER UPDATE OF revoked_at, expires_at ON user_sessions
    FOR EACH ROW EXECUTE FUNCTION pgcast_announce_revocation();

CREATE OR REPLACE TRIGGER channel_members_announce_revocation
    AFTER DELETE OR UPDATE ON channel_members
    FOR EACH ROW EXECUTE FUNCTION pgcast_announce_revocation();

CREATE OR REPLACE TRIGGER user_sessions_announce_deletion
    AFTER DELETE ON user_sessions
    FOR EACH ROW EXECUTE FUNCTION pgcast_announce_revocation();

-- The event log's transaction ids mean something only in the cluster that issued them. After
-- pg_dump/pg_restore into another cluster (or a file copy of its data), they may be ahead of
-- the new counter, or in the range it will pass later: events would be sent again and again,
-- or sent again as news. Run by `pgcast migrate` and by every pgcast process before it
-- issues or checks a cursor; returns what it did, or NULL when the log was in order.
--
-- "History" is transaction id 2 (FrozenTransactionId): below the xmin of every snapshot, so
-- every snapshot sees it as committed, and no read of the log returns it again.
CREATE OR REPLACE FUNCTION pgcast_adopt_event_log() RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    this_cluster bigint;
    recorded pgcast_instance%ROWTYPE;
    counter xid8;
    foreign_log boolean;
    moved bigint;
BEGIN
    BEGIN
        SELECT system_identifier INTO this_cluster FROM pg_control_system();
    EXCEPTION WHEN insufficient_privilege THEN
        -- Callable by every role by default (PostgreSQL 15 to 18); where an administrator
        -- revoked it, the transaction counter is the only witness.
        this_cluster := NULL;
    END;
    -- One process at a time; the counter is read after the lock, or a process that waited
    -- would compare an old counter with the one its predecessor just recorded.
    SELECT * INTO recorded FROM pgcast_instance FOR UPDATE;
    counter := pg_snapshot_xmax(pg_current_snapshot());
    foreign_log := coalesce(recorded.system_identifier <> this_cluster, false)
        OR coalesce(counter < recorded.checked_xmax, false)
        -- Never checked, or cannot be: ids this cluster has not reached say it is another.
        OR (recorded.system_identifier IS NULL
            AND EXISTS (SELECT 1 FROM broadcasts WHERE tx >= counter));
    IF foreign_log THEN
        UPDATE broadcasts SET tx = '2' WHERE tx <> '2';
        GET DIAGNOSTICS moved = ROW_COUNT;
        -- Old cursors name the other cluster's snapshots: a new instance_id refuses them,
        -- and what retention removed there says nothing about ids here.
        UPDATE pgcast_instance
        SET instance_id = gen_random_uuid(), system_identifier = this_cluster,
            checked_xmax = counter, pruned_tx = NULL;
        RAISE WARNING 'pgcast: the event log came from another PostgreSQL cluster; % event(s) moved into history', moved;
        RETURN format('the event log came from another PostgreSQL cluster (restored or copied); '
                      '%s event(s) moved into history, and cursors issued before are refused',
                      moved);
    END IF;
    -- Same cluster: an id it has not reached can only have been written by hand. No cursor
    -- was ever sent such an event (a read never returns one), so cursors stay valid.
    UPDATE broadcasts SET tx = '2' WHERE tx >= counter;
    GET DIAGNOSTICS moved = ROW_COUNT;
    UPDATE pgcast_instance
    SET system_identifier = coalesce(this_cluster, system_identifier),
        checked_xmax = greatest(checked_xmax, counter);
    IF moved > 0 THEN
        RAISE WARNING 'pgcast: % event(s) had a transaction id this cluster has not issued yet; moved into history', moved;
        RETURN format('%s event(s) had a transaction id this cluster has not issued yet '
                      '(written by hand?); moved into history', moved);
    END IF;
    RETURN NULL;
END
$$;

COMMENT ON FUNCTION pgcast_adopt_event_log() IS
    'Makes the event log''s transaction ids this cluster''s: after a restore into another cluster, every event becomes history and old cursors are refused. Returns what it did, or NULL.';

-- Presence (README, "Presence across processes"). Members are users: a user's first socket
-- on a channel announces member_added, their last one leaving announces member_removed, as
-- rows of broadcasts on that channel, so every process delivers them, in commit order, and
-- they are in the audit trail and replayed on resume. Two processes writing the same user's
-- rows at once take turns on an advisory lock per (channel, user) and so announce once: the
-- second one's check runs after the first committed (READ COMMITTED: each statement of the
-- function reads with a new snapshot). A statement that writes several users takes their
-- locks in (channel, user_id) order, so two such statements cannot deadlock.
CREATE OR REPLACE FUNCTION pgcast_presence_lock(channel text, user_id text) RETURNS void
LANGUAGE sql AS $$
    SELECT pg_advisory_xact_lock(hashtextextended('pgcast presence ' || channel || ' ' || user_id, 0))
$$;

COMMENT ON FUNCTION pgcast_presence_lock(text, text) IS
    'Serializes, until the end of the transaction, the presence changes of one user on one channel (a transaction-level advisory lock).';

CREATE OR REPLACE FUNCTION pgcast_presence_announce_joins() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    joined_user record;
BEGIN
    FOR joined_user IN
        SELECT j.channel, j.user_id, min(j.socket_id) AS socket_id,
               (array_agg(j.user_info ORDER BY j.joined_at DESC))[1] AS user_info
        FROM joined j
        GROUP BY j.channel, j.user_id
        ORDER BY j.channel, j.user_id
    LOOP
        PERFORM pgcast_presence_lock(joined_user.channel, joined_user.user_id);
        IF NOT EXISTS (
            SELECT FROM presence_members m
            WHERE m.channel = joined_user.channel AND m.user_id = joined_user.user_id
              AND m.socket_id NOT IN (
                  SELECT j.socket_id FROM joined j WHERE j.channel = joined_user.channel)
        ) THEN
            -- The joining socket gets the member list instead: it is not sent its own join.
            INSERT INTO broadcasts (channel, event, data, origin_socket_id)
            VALUES (joined_user.channel, 'member_added',
                    jsonb_build_object('user_id', joined_user.user_id,
                                       'user_info', joined_user.user_info),
                    joined_user.socket_id);
        END IF;
    END LOOP;
    RETURN NULL;
END
$$;

COMMENT ON FUNCTION pgcast_presence_announce_joins() IS
    'Statement trigger of presence_members: broadcasts member_added {"user_id", "user_info"} on the channel for each user whose first row there was inserted.';

CREATE OR REPLACE FUNCTION pgcast_presence_announce_leaves() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    gone record;
BEGIN
    FOR gone IN
        SELECT l.channel, l.user_id, min(l.socket_id) AS socket_id
        FROM departed l
        GROUP BY l.channel, l.user_id
        ORDER BY l.channel, l.user_id
    LOOP
        PERFORM pgcast_presence_lock(gone.channel, gone.user_id);
        IF NOT EXISTS (
            SELECT FROM presence_members m
            WHERE m.channel = gone.channel AND m.user_id = gone.user_id
        ) THEN
            INSERT INTO broadcasts (channel, event, data, origin_socket_id)
            VALUES (gone.channel, 'member_removed', jsonb_build_object('user_id', gone.user_id),
                    gone.socket_id);
        END IF;
    END LOOP;
    RETURN NULL;
END
$$;

COMMENT ON FUNCTION pgcast_presence_announce_leaves() IS
    'Statement trigger of presence_members: broadcasts member_removed {"user_id"} on the channel for each user whose last row there was deleted.';

CREATE OR REPLACE TRIGGER presence_members_announce_joins
    AFTER INSERT ON presence_members REFERENCING NEW TABLE AS joined
    FOR EACH STATEMENT EXECUTE FUNCTION pgcast_presence_announce_joins();

CREATE OR REPLACE TRIGGER presence_members_announce_leaves
    AFTER DELETE ON presence_members REFERENCING OLD TABLE AS departed
    FOR EACH STATEMENT EXECUTE FUNCTION pgcast_presence_announce_leaves();

-- Who is online, for DBAs: one row per user and presence channel, on every process.
CREATE OR REPLACE VIEW presence_online AS
SELECT m.channel,
       m.user_id,
       (array_agg(m.user_info ORDER BY m.left_at IS NOT NULL, m.joined_at DESC))[1] AS user_info,
       count(*) FILTER (WHERE m.left_at IS NULL) AS sockets,
       min(m.joined_at) AS since,
       bool_and(m.left_at IS NOT NULL) AS leaving
FROM presence_members m
GROUP BY m.channel, m.user_id;

COMMENT ON VIEW presence_online IS 'Who is on each presence channel, across every pgcast process: one row per channel and user (the members clients are shown).';
COMMENT ON COLUMN presence_online.channel IS 'The presence channel.';
COMMENT ON COLUMN presence_online.user_id IS 'The member''s user id.';
COMMENT ON COLUMN presence_online.user_info IS 'What the members are shown of them (from their newest connected socket).';
COMMENT ON COLUMN presence_online.sockets IS 'How many of their sockets are connected to the channel (tabs, devices); 0 while leaving.';
COMMENT ON COLUMN presence_online.since IS 'When the earliest of their sockets still listed joined.';
COMMENT ON COLUMN presence_online.leaving IS 'True when every socket has left (or its process died) and member_removed follows unless they come back within PGCAST_PRESENCE_GRACE.';
