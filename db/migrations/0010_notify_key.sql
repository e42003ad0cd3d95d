-- The key that signs the events a notification carries (db/triggers.sql,
-- pgcast_wake_listeners): anyone who can connect may NOTIFY pgcast_events, and pgcast takes a
-- payload as it is only if its HMAC-SHA256 is right. PostgreSQL has sha256() but no hmac()
-- without pgcrypto, so the key is kept as HMAC's two padded keys, (key XOR ipad) and
-- (key XOR opad), with which the trigger computes HMAC from two sha256() calls; pgcast
-- recovers the key from the inner one and checks with Python's hmac. Readable by its owner
-- only: the trigger reads it as its owner (SECURITY DEFINER). db/triggers.sql makes the key
-- (pgcast_new_notify_key()) when there is none.
-- depends: 0009_channel_rule_without_bounded_repetition

CREATE TABLE pgcast_notify_key (
    singleton   boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    inner_key   bytea NOT NULL CHECK (octet_length(inner_key) = 64),
    outer_key   bytea NOT NULL CHECK (octet_length(outer_key) = 64)
);

REVOKE ALL ON pgcast_notify_key FROM PUBLIC;

COMMENT ON TABLE pgcast_notify_key IS 'HMAC-SHA256 key signing the events pgcast_events notifications carry, as its two padded keys; readable by its owner only.';
COMMENT ON COLUMN pgcast_notify_key.singleton IS 'Always true: the table holds exactly one row.';
COMMENT ON COLUMN pgcast_notify_key.inner_key IS 'The key, zero-padded to 64 bytes, XOR 0x36 (HMAC''s ipad).';
COMMENT ON COLUMN pgcast_notify_key.outer_key IS 'The key, zero-padded to 64 bytes, XOR 0x5c (HMAC''s opad).';
