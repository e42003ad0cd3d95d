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
-- they LISTEN on pgcast_revocations next to pgcast_events.
CREATE OR REPLACE FUNCTION pgcast_announce_revocation() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_TABLE_NAME = 'users' THEN
        PERFORM pg_notify('pgcast_revocations', 'user:' || OLD.id);
    ELSIF NEW.revoked_at IS NOT NULL AND OLD.revoked_at IS NULL THEN
        PERFORM pg_notify('pgcast_revocations', 'session:' || NEW.id);
    END IF;
    RETURN NULL;
END
$$;

COMMENT ON FUNCTION pgcast_announce_revocation() IS
    'Tells pgcast listeners to close the sockets of a revoked session or a deleted user.';

CREATE OR REPLACE TRIGGER users_announce_deletion
    AFTER DELETE ON users
    FOR EACH ROW EXECUTE FUNCTION pgcast_announce_revocation();

CREATE OR REPLACE TRIGGER user_sessions_announce_revocation
    AFTER UPDATE OF revoked_at ON user_sessions
    FOR EACH ROW EXECUTE FUNCTION pgcast_announce_revocation();
