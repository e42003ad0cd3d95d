-- Broadcast triggers. Applied by `pgcast migrate` after the migrations; safe to re-apply.
--
-- Every statement that writes `messages` records one event per row in `message_events`
-- (in the writer's own transaction, so events commit or roll back with the rows) and
-- sends one empty NOTIFY. PostgreSQL folds identical notifications within a transaction,
-- so a transaction costs one notification however many statements it runs; the payload
-- carries nothing because the listener reads the event log, which has no size limit.

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

CREATE OR REPLACE FUNCTION pgcast_record_message_events() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    origin text := nullif(current_setting('pgcast.origin_socket_id', true), '');
    recorded bigint;
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO message_events
            (kind, message_id, user_id, content, message_created_at, message_updated_at, origin_socket_id)
        SELECT 'new-message', n.id, n.user_id, n.content, n.created_at, n.updated_at, origin
        FROM new_rows n ORDER BY n.id;
    ELSIF TG_OP = 'UPDATE' THEN
        -- A statement trigger cannot pair old rows with new ones, so an UPDATE that changes
        -- ids is told by id: an id that is gone is a deletion, one that appeared is a new
        -- message, and one in both is an update. Clients keyed by id end up with the table.
        INSERT INTO message_events
            (kind, message_id, user_id, content, message_created_at, message_updated_at, origin_socket_id)
        SELECT 'message-deleted', o.id, o.user_id, NULL, o.created_at, o.updated_at, origin
        FROM old_rows o
        WHERE NOT EXISTS (SELECT 1 FROM new_rows n WHERE n.id = o.id)
        ORDER BY o.id;
        INSERT INTO message_events
            (kind, message_id, user_id, content, message_created_at, message_updated_at, origin_socket_id)
        -- IN, not EXISTS: a hashed subplan, not a scan of old_rows per row.
        SELECT CASE WHEN n.id IN (SELECT o.id FROM old_rows o)
                    THEN 'message-updated' ELSE 'new-message' END,
               n.id, n.user_id, n.content, n.created_at, n.updated_at, origin
        FROM new_rows n ORDER BY n.id;
    ELSE
        INSERT INTO message_events
            (kind, message_id, user_id, content, message_created_at, message_updated_at, origin_socket_id)
        SELECT 'message-deleted', o.id, o.user_id, NULL, o.created_at, o.updated_at, origin
        FROM old_rows o ORDER BY o.id;
    END IF;
    GET DIAGNOSTICS recorded = ROW_COUNT;
    -- The last INSERT's count: for an UPDATE, its new rows, as many as its old ones.
    IF recorded > 0 THEN
        PERFORM pg_notify('pgcast_events', '');
    END IF;
    RETURN NULL;
END
$$;

COMMENT ON FUNCTION pgcast_record_message_events() IS
    'Records one message_events row per written messages row and wakes pgcast listeners.';
COMMENT ON FUNCTION pgcast_touch_updated_at() IS
    'Sets updated_at on UPDATE unless the statement set it explicitly.';

CREATE OR REPLACE TRIGGER users_touch_updated_at
    BEFORE UPDATE ON users
    FOR EACH ROW EXECUTE FUNCTION pgcast_touch_updated_at();

CREATE OR REPLACE TRIGGER messages_touch_updated_at
    BEFORE UPDATE ON messages
    FOR EACH ROW EXECUTE FUNCTION pgcast_touch_updated_at();

CREATE OR REPLACE TRIGGER messages_broadcast_insert
    AFTER INSERT ON messages
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION pgcast_record_message_events();

CREATE OR REPLACE TRIGGER messages_broadcast_update
    AFTER UPDATE ON messages
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION pgcast_record_message_events();

CREATE OR REPLACE TRIGGER messages_broadcast_delete
    AFTER DELETE ON messages
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION pgcast_record_message_events();

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
    'Tells pgcast listeners to close the sockets of an ended session or a deleted user.';

CREATE OR REPLACE TRIGGER users_announce_deletion
    AFTER DELETE ON users
    FOR EACH ROW EXECUTE FUNCTION pgcast_announce_revocation();

CREATE OR REPLACE TRIGGER user_sessions_announce_revocation
    AFTER UPDATE OF revoked_at, expires_at ON user_sessions
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
            AND EXISTS (SELECT 1 FROM message_events WHERE tx >= counter));
    IF foreign_log THEN
        UPDATE message_events SET tx = '2' WHERE tx <> '2';
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
    UPDATE message_events SET tx = '2' WHERE tx >= counter;
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
