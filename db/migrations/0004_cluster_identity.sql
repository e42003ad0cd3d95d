-- Which PostgreSQL cluster the event log's transaction ids belong to, and what retention
-- removed, counted in transaction ids rather than in time (docs/delivery.md).
-- depends: 0003_user_sessions

ALTER TABLE pgcast_instance
    ADD COLUMN system_identifier bigint,
    ADD COLUMN checked_xmax xid8,
    ADD COLUMN pruned_tx xid8;

-- Events pruned before this migration are known only by the time they were recorded, which
-- says nothing certain about their transaction ids. Every one of them is below this
-- transaction's xmax: cursors issued before now are refused once (clients reload), rather
-- than one of them resuming past events that are gone.
UPDATE pgcast_instance
SET pruned_tx = pg_snapshot_xmax(pg_current_snapshot())
WHERE pruned_through IS NOT NULL;

COMMENT ON COLUMN pgcast_instance.system_identifier IS 'system_identifier (pg_control_system()) of the cluster the event log''s transaction ids come from; another value means the database was restored or copied into another cluster, and pgcast_adopt_event_log() rebases the log. NULL while unknown (the function may not be callable).';
COMMENT ON COLUMN pgcast_instance.checked_xmax IS 'The cluster''s transaction counter (snapshot xmax) when pgcast last checked the log; a lower counter later means the database now lives in another cluster.';
COMMENT ON COLUMN pgcast_instance.pruned_tx IS 'Newest transaction id among the events retention removed; a cursor whose snapshot may not have seen it (xmin at or below it) is refused.';
COMMENT ON COLUMN pgcast_instance.pruned_through IS 'Latest recorded_at of events removed by retention (for people; cursors are checked against pruned_tx).';
COMMENT ON COLUMN pgcast_instance.instance_id IS 'Random id baked into cursors, so a cursor from another database is refused; replaced when the log is rebased after a restore into another cluster.';
