-- The channel rule accepts exactly the names it did (1-164 characters, all ASCII, of
-- a-z A-Z 0-9 - _ = @ , . ;) without the bounded repetition {1,164}: PostgreSQL's regular
-- expression engine expands it into 164 copies of the class, and matching one name took about
-- 12 us, on every broadcasts row written (bench/profile.md, "The broadcast trigger"). The
-- constraint keeps its name, so a bad name is refused with the same error as before.
-- depends: 0008_cluster_limits

ALTER TABLE broadcasts
    DROP CONSTRAINT broadcasts_channel_name_rule,
    ADD CONSTRAINT broadcasts_channel_name_rule
        CHECK (channel ~ '^[-a-zA-Z0-9_=@,.;]+$' AND char_length(channel) <= 164);

COMMENT ON CONSTRAINT broadcasts_channel_name_rule ON broadcasts IS 'A channel name is 1-164 characters of a-z A-Z 0-9 - _ = @ , . ;';
