"""Every SQL statement the server runs, as named constants with parameters."""

from typing import Final, LiteralString

# Names pgcast gives its own connections; the audit view tells API posts apart by them.
APPLICATION_NAME: Final = "pgcast"
LISTENER_APPLICATION_NAME: Final = "pgcast-listener"
LISTENER_READER_APPLICATION_NAME: Final = "pgcast-listener-reader"
CLI_APPLICATION_NAME: Final = "pgcast-cli"
NOTIFY_CHANNEL: Final = "pgcast_events"

REVOCATIONS_CHANNEL: Final = "pgcast_revocations"

LISTEN: Final[LiteralString] = "LISTEN pgcast_events; LISTEN pgcast_revocations"

DATABASE_IDENTITY: Final[LiteralString] = """
SELECT instance_id::text,
       (SELECT oid FROM pg_database WHERE datname = current_database())::bigint
FROM pgcast_instance
"""

CURRENT_POSITION: Final[LiteralString] = """
SELECT pg_current_snapshot()::text,
       (extract(epoch FROM statement_timestamp()) * 1000000)::bigint
"""

# Makes sure the event log's transaction ids are this cluster's (db/triggers.sql); what it
# did, or NULL.
ADOPT_EVENT_LOG: Final[LiteralString] = "SELECT pgcast_adopt_event_log()"

# What a cursor is checked against: the current snapshot, and the newest transaction among
# the events that retention removed.
CURSOR_LIMITS: Final[LiteralString] = """
SELECT pg_current_snapshot()::text, pruned_tx::text::bigint
FROM pgcast_instance
"""

# One page of events after a position, read under a single statement snapshot (`here`).
# rest_of_batch: events the position's batch (prev -> next) still owes, after `after`.
# after_batch: events committed after `next` and before `here`.
# "Not visible in snapshot s" means tx >= xmax(s), or tx in xip(s). Each is its own
# branch, ordered and limited on its own, so each is a short walk of the (tx, id) index
# whatever the table's statistics say; written as one OR, the planner may scan the table.
# For the same reason the rest of a batch starts from one row comparison, `(tx, id) >=` the
# first key still owed (eventlog.page_parameters): "tx >= xmax(prev), and no `after` or past
# it" is an OR too, which no index bound can express, so each page would walk (or scan and
# sort) the batch again from its start.
# No event whose tx `here` does not see is returned. A row the triggers wrote is visible to
# this statement only once its transaction committed, so this drops only rows that carry
# someone else's tx (written by hand, or restored from another cluster). Returned, such a row
# would come back on every read while its tx stays ahead of the counter or in progress: the
# page would end at `here` and the next read would find it again, and with a page of them the
# listener would never finish. after_batch tests it (the upper bound keeps the range branch an
# index range); rest_of_batch is bounded by `next`, which is never ahead of `here`
# (eventlog.resumable_position refuses a cursor whose `next` sees what is still in progress).
# Testing it there too changed the plan on a small table never analyzed to a scan and sort.
# `here` is MATERIALIZED: inlined, the snapshot and its text were computed again per row.
# Timestamps are formatted here, as protocol.iso_timestamp formats them, whatever the
# session's TimeZone (`FMYYYY` leaves years below 1000 unpadded, like strftime's "%Y").
# Those Python's datetime cannot hold come out NULL: the event is skipped as unreadable.
# The first row always carries `here`, even on an empty page.
EVENTS_PAGE: Final[LiteralString] = """
WITH here AS MATERIALIZED (
    SELECT s AS snapshot, pg_snapshot_xmax(s) AS xmax, s::text AS snap,
           (extract(epoch FROM statement_timestamp()) * 1000000)::bigint AS taken_at_us
    FROM pg_current_snapshot() AS s
),
rest_of_batch AS (
    (SELECT 1 AS part, e.* FROM message_events e
     WHERE %(in_batch)s
       AND (e.tx, e.id) >= (%(from_tx)s::text::xid8, %(from_id)s::bigint)
       AND e.tx < %(next_xmax)s::text::xid8
       AND pg_visible_in_snapshot(e.tx, %(next)s::pg_snapshot)
     ORDER BY e.tx, e.id
     LIMIT %(limit)s)
    UNION ALL
    (SELECT 1 AS part, e.* FROM message_events e
     WHERE %(in_batch)s
       AND e.tx = ANY (ARRAY(SELECT pg_snapshot_xip(%(prev)s::pg_snapshot)))
       AND (e.tx, e.id) >= (%(xip_from_tx)s::text::xid8, %(xip_from_id)s::bigint)
       AND pg_visible_in_snapshot(e.tx, %(next)s::pg_snapshot)
     ORDER BY e.tx, e.id
     LIMIT %(limit)s)
),
after_batch AS (
    (SELECT 2 AS part, e.* FROM message_events e
     WHERE e.tx >= %(next_xmax)s::text::xid8
       AND e.tx < (SELECT xmax FROM here)
       AND pg_visible_in_snapshot(e.tx, (SELECT snapshot FROM here))
     ORDER BY e.tx, e.id
     LIMIT %(limit)s)
    UNION ALL
    (SELECT 2 AS part, e.* FROM message_events e
     WHERE e.tx = ANY (ARRAY(SELECT pg_snapshot_xip(%(next)s::pg_snapshot)))
       AND pg_visible_in_snapshot(e.tx, (SELECT snapshot FROM here))
     ORDER BY e.tx, e.id
     LIMIT %(limit)s)
),
page AS (
    SELECT * FROM rest_of_batch
    UNION ALL
    SELECT * FROM after_batch
)
SELECT here.snap, here.taken_at_us,
       page.part, page.id, page.tx::text::bigint, page.kind, page.message_id, page.user_id,
       page.content,
       CASE WHEN page.message_created_at >= '0001-01-01Z'
             AND page.message_created_at < '10000-01-01Z'
            THEN to_char(page.message_created_at AT TIME ZONE 'UTC',
                         'FMYYYY-MM-DD"T"HH24:MI:SS.US"Z"')
       END,
       CASE WHEN page.message_updated_at >= '0001-01-01Z'
             AND page.message_updated_at < '10000-01-01Z'
            THEN to_char(page.message_updated_at AT TIME ZONE 'UTC',
                         'FMYYYY-MM-DD"T"HH24:MI:SS.US"Z"')
       END,
       page.origin_socket_id, u.name, u.avatar_url
FROM here
LEFT JOIN page ON true
LEFT JOIN users u ON u.id = page.user_id
ORDER BY page.part, page.tx, page.id
LIMIT %(limit)s
"""

# Marks the writing transaction so the poster's own socket is skipped (X-Socket-ID).
SET_ORIGIN_SOCKET: Final[LiteralString] = (
    "SELECT set_config('pgcast.origin_socket_id', %(socket_id)s, true)"
)

INSERT_MESSAGE: Final[LiteralString] = """
WITH inserted AS (
    INSERT INTO messages (user_id, content)
    VALUES (%(user_id)s, %(content)s)
    RETURNING id, user_id, content, created_at, updated_at
)
SELECT inserted.*, u.name, u.avatar_url
FROM inserted JOIN users u ON u.id = inserted.user_id
"""

LIST_MESSAGES: Final[LiteralString] = """
SELECT m.id, m.user_id, m.content, m.created_at, m.updated_at, u.name, u.avatar_url
FROM messages m
JOIN users u ON u.id = m.user_id
WHERE %(before)s::bigint IS NULL OR m.id < %(before)s::bigint
ORDER BY m.id DESC
LIMIT %(limit)s
"""

CREATE_SESSION: Final[LiteralString] = """
INSERT INTO user_sessions (id, user_id, workos_session_id, expires_at)
VALUES (%(session_id)s, %(user_id)s, %(workos_session_id)s,
        now() + %(max_age)s * interval '1 second')
"""

# A cookie is only as good as its row: revoked, expired, or its user deleted means signed out.
# The time it has left is measured on the database's clock, which decided it is valid.
SESSION_USER: Final[LiteralString] = """
SELECT u.id, u.name, u.avatar_url, u.email, s.workos_session_id,
       extract(epoch FROM s.expires_at - now())::float8
FROM user_sessions s
JOIN users u ON u.id = s.user_id
WHERE s.id = %(session_id)s AND s.revoked_at IS NULL AND s.expires_at > now()
"""

# Of the sessions and users with sockets in this process, those that ended: what a listener
# that was away missed of pgcast_revocations. Users first, so their sockets say why.
ENDED_AMONG: Final[LiteralString] = """
SELECT 'user', u.id::text, 'account deleted'
FROM unnest(%(user_ids)s::bigint[]) AS u(id)
WHERE NOT EXISTS (SELECT 1 FROM users WHERE users.id = u.id)
UNION ALL
SELECT 'session', s.id,
       CASE WHEN us.id IS NOT NULL AND us.revoked_at IS NULL THEN 'session expired'
            ELSE 'signed out' END
FROM unnest(%(session_ids)s::text[]) AS s(id)
LEFT JOIN user_sessions us ON us.id = s.id
WHERE us.id IS NULL OR us.revoked_at IS NOT NULL OR us.expires_at <= now()
ORDER BY 1 DESC
"""

REVOKE_SESSION: Final[LiteralString] = """
UPDATE user_sessions SET revoked_at = now()
WHERE id = %(session_id)s AND revoked_at IS NULL
"""

PRUNE_SESSIONS: Final[LiteralString] = """
DELETE FROM user_sessions WHERE expires_at < now() - interval '1 day'
"""

USER_BY_WORKOS_ID: Final[LiteralString] = """
SELECT id, name, avatar_url, email FROM users WHERE workos_id = %(workos_id)s
"""

# Sign-in always applies what WorkOS just returned.
UPSERT_WORKOS_USER: Final[LiteralString] = """
INSERT INTO users (workos_id, email, name, avatar_url, workos_updated_at)
VALUES (%(workos_id)s, %(email)s, %(name)s, %(avatar_url)s, %(workos_updated_at)s)
ON CONFLICT (workos_id) DO UPDATE
SET email = EXCLUDED.email, name = EXCLUDED.name, avatar_url = EXCLUDED.avatar_url,
    workos_updated_at = greatest(users.workos_updated_at, EXCLUDED.workos_updated_at)
RETURNING id, name, avatar_url, email
"""

# Webhooks may arrive late or twice: an update older than what was applied is ignored.
APPLY_WORKOS_USER_UPDATE: Final[LiteralString] = """
UPDATE users
SET email = %(email)s, name = %(name)s, avatar_url = %(avatar_url)s,
    workos_updated_at = %(workos_updated_at)s
WHERE workos_id = %(workos_id)s
  AND (workos_updated_at IS NULL OR workos_updated_at <= %(workos_updated_at)s)
"""

DELETE_WORKOS_USER: Final[LiteralString] = """
DELETE FROM users WHERE workos_id = %(workos_id)s
"""

USER_BY_EMAIL: Final[LiteralString] = """
SELECT id, name, avatar_url, email FROM users
WHERE lower(email) = lower(%(email)s)
ORDER BY workos_id NULLS FIRST, id
LIMIT 1
"""

UPSERT_LOCAL_USER: Final[LiteralString] = """
INSERT INTO users (email, name)
VALUES (%(email)s, %(name)s)
ON CONFLICT (lower(email)) WHERE workos_id IS NULL
DO UPDATE SET name = EXCLUDED.name
RETURNING id, name, avatar_url, email
"""

# Retention: drop old events and remember the newest transaction dropped, so a cursor that
# may still need one of them is refused (4400) instead of silently skipping it. An event whose
# tx this snapshot does not see yet (written by hand with a tx from the future) was never
# sent to anyone, and a read never would have returned it before its tx came round: it must
# not make every cursor look too old.
PRUNE_EVENTS: Final[LiteralString] = """
WITH pruned AS (
    DELETE FROM message_events
    WHERE recorded_at < now() - %(retention)s::interval
    RETURNING recorded_at, tx
)
UPDATE pgcast_instance
SET pruned_through = greatest(pruned_through, (SELECT max(recorded_at) FROM pruned)),
    pruned_tx = greatest(pruned_tx, (
        SELECT max(tx) FROM pruned WHERE pg_visible_in_snapshot(tx, pg_current_snapshot())
    ))
WHERE EXISTS (SELECT 1 FROM pruned)
"""

NOTIFY_QUEUE_USAGE: Final[LiteralString] = "SELECT pg_notification_queue_usage()"
