-- Rate limits counted in the database rather than in each process, so they hold however
-- many pgcast processes serve one database (`--workers N` or separate `pgcast serve`s).
-- depends: 0006_direct_messages_and_notifications

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
