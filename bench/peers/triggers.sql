-- NOTIFY triggers of the comparison peers (bench/peers/README.md); safe to re-apply.
--
-- The usual pattern for LISTEN/NOTIFY servers: a row-level trigger that sends the new row, as
-- JSON, in the notification payload. The payload is a Message as pgcast shows it (the message
-- and its author), compact JSON from row_to_json. Each peer has its own trigger and channel
-- (the function's argument), so a bench can turn on only the trigger of the server it runs.
--
-- Limits, inherent to this pattern: a NOTIFY payload must be shorter than 8000 bytes, so an
-- INSERT of a message whose JSON is longer fails ("payload string too long"); only INSERTs are
-- broadcast; a client that is not connected when the transaction commits never gets the row.

CREATE OR REPLACE FUNCTION peer_notify_new_message() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify(TG_ARGV[0], row_to_json(m)::text)
    FROM (
        SELECT NEW.id AS id,
               NEW.user_id AS user_id,
               NEW.content AS content,
               NEW.created_at AS created_at,
               NEW.updated_at AS updated_at,
               author AS "user"
        FROM (SELECT u.id, u.name, u.avatar_url FROM users u WHERE u.id = NEW.user_id) author
    ) m;
    RETURN NULL;
END
$$;

COMMENT ON FUNCTION peer_notify_new_message() IS
    'Comparison peers only (bench/peers): NOTIFY TG_ARGV[0] with the new message and its author as JSON.';

CREATE OR REPLACE TRIGGER broadcaster_notify_insert
    AFTER INSERT ON messages
    FOR EACH ROW EXECUTE FUNCTION peer_notify_new_message('broadcaster_messages');

CREATE OR REPLACE TRIGGER node_notify_insert
    AFTER INSERT ON messages
    FOR EACH ROW EXECUTE FUNCTION peer_notify_new_message('node_messages');
