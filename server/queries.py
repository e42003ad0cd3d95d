"""Every SQL statement the server runs, as named constants with parameters."""

from typing import Final, LiteralString

# Names pgcast gives its own connections; the audit view tells API posts apart by them.
APPLICATION_NAME: Final = "pgcast"
LISTENER_APPLICATION_NAME: Final = "pgcast-listener"
LISTENER_READER_APPLICATION_NAME: Final = "pgcast-listener-reader"
LISTEN_CHECK_APPLICATION_NAME: Final = "pgcast-listen-check"
CLI_APPLICATION_NAME: Final = "pgcast-cli"
NOTIFY_CHANNEL: Final = "pgcast_events"

REVOCATIONS_CHANNEL: Final = "pgcast_revocations"


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
# branch, ordered and limited on its own, so each is a short walk of an index whatever the
# table's statistics say; written as one OR, the planner may scan the table.
# For the same reason the rest of a batch starts from one row comparison, `(tx, id) >=` the
# first key still owed (eventlog.page_parameters): "tx >= xmax(prev), and no `after` or past
# it" is an OR too, which no index bound can express, so each page would walk (or scan and
# sort) the batch again from its start.
# EVENTS_PAGE reads every channel (the listener) through broadcasts_tx_idx;
# CHANNEL_EVENTS_PAGE reads only the channels asked for (a replay), each branch once per
# channel through broadcasts_channel_tx_idx, so a replay never walks other channels' events.
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
# The first row always carries `here`, even on an empty page.
_HERE: Final[LiteralString] = """
WITH here AS MATERIALIZED (
    SELECT s AS snapshot, pg_snapshot_xmax(s) AS xmax, s::text AS snap,
           (extract(epoch FROM statement_timestamp()) * 1000000)::bigint AS taken_at_us
    FROM pg_current_snapshot() AS s
),
"""

_PAGE: Final[LiteralString] = """
SELECT here.snap, here.taken_at_us,
       page.part, page.id, page.tx::text::bigint, page.channel, page.event, page.data::text,
       page.origin_socket_id
FROM here
LEFT JOIN page ON true
ORDER BY page.part, page.tx, page.id
LIMIT %(limit)s
"""

# Built from constants only (noqa below): there is nothing of a caller's in the text.
EVENTS_PAGE: Final[LiteralString] = (
    _HERE  # noqa: S608
    + """
rest_of_batch AS (
    (SELECT 1 AS part, e.* FROM broadcasts e
     WHERE %(in_batch)s
       AND (e.tx, e.id) >= (%(from_tx)s::text::xid8, %(from_id)s::bigint)
       AND e.tx < %(next_xmax)s::text::xid8
       AND pg_visible_in_snapshot(e.tx, %(next)s::pg_snapshot)
     ORDER BY e.tx, e.id
     LIMIT %(limit)s)
    UNION ALL
    (SELECT 1 AS part, e.* FROM broadcasts e
     WHERE %(in_batch)s
       AND e.tx = ANY (ARRAY(SELECT pg_snapshot_xip(%(prev)s::pg_snapshot)))
       AND (e.tx, e.id) >= (%(xip_from_tx)s::text::xid8, %(xip_from_id)s::bigint)
       AND pg_visible_in_snapshot(e.tx, %(next)s::pg_snapshot)
     ORDER BY e.tx, e.id
     LIMIT %(limit)s)
),
after_batch AS (
    (SELECT 2 AS part, e.* FROM broadcasts e
     WHERE e.tx >= %(next_xmax)s::text::xid8
       AND e.tx < (SELECT xmax FROM here)
       AND pg_visible_in_snapshot(e.tx, (SELECT snapshot FROM here))
     ORDER BY e.tx, e.id
     LIMIT %(limit)s)
    UNION ALL
    (SELECT 2 AS part, e.* FROM broadcasts e
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
"""
    + _PAGE
)

# Per channel the planner estimates rows by the channel alone, and for a small table or one
# big channel it may prefer a bitmap or sequential scan of the rest of the batch and a sort:
# the whole rest of a batch read for every page. CHANNEL_EVENTS_PAGE runs in a transaction
# with these set, so each branch is an ordered index seek that stops at its LIMIT.
ORDERED_INDEX_SCANS_ONLY: Final[LiteralString] = (
    "SET LOCAL enable_bitmapscan = off; SET LOCAL enable_seqscan = off"
)

CHANNEL_EVENTS_PAGE: Final[LiteralString] = (
    _HERE  # noqa: S608
    + """
wanted AS (SELECT DISTINCT unnest(%(channels)s::text[]) AS channel),
rest_of_batch AS (
    SELECT 1 AS part, e.* FROM wanted w, LATERAL (
        (SELECT * FROM broadcasts e
         WHERE %(in_batch)s
           AND (e.channel, e.tx, e.id) >= (w.channel, %(from_tx)s::text::xid8, %(from_id)s::bigint)
           AND (e.channel, e.tx) < (w.channel, %(next_xmax)s::text::xid8)
           AND pg_visible_in_snapshot(e.tx, %(next)s::pg_snapshot)
         ORDER BY e.channel, e.tx, e.id
         LIMIT %(limit)s)
        UNION ALL
        (SELECT * FROM broadcasts e
         WHERE %(in_batch)s
           AND e.channel = w.channel
           AND e.tx = ANY (ARRAY(SELECT pg_snapshot_xip(%(prev)s::pg_snapshot)))
           AND (e.channel, e.tx, e.id)
               >= (w.channel, %(xip_from_tx)s::text::xid8, %(xip_from_id)s::bigint)
           AND pg_visible_in_snapshot(e.tx, %(next)s::pg_snapshot)
         ORDER BY e.channel, e.tx, e.id
         LIMIT %(limit)s)
    ) e
),
after_batch AS (
    SELECT 2 AS part, e.* FROM wanted w, LATERAL (
        (SELECT * FROM broadcasts e
         WHERE (e.channel, e.tx) >= (w.channel, %(next_xmax)s::text::xid8)
           AND (e.channel, e.tx) < (w.channel, (SELECT xmax FROM here))
           AND pg_visible_in_snapshot(e.tx, (SELECT snapshot FROM here))
         ORDER BY e.channel, e.tx, e.id
         LIMIT %(limit)s)
        UNION ALL
        (SELECT * FROM broadcasts e
         WHERE e.channel = w.channel
           AND e.tx = ANY (ARRAY(SELECT pg_snapshot_xip(%(next)s::pg_snapshot)))
           AND pg_visible_in_snapshot(e.tx, (SELECT snapshot FROM here))
         ORDER BY e.channel, e.tx, e.id
         LIMIT %(limit)s)
    ) e
),
page AS (
    SELECT * FROM rest_of_batch
    UNION ALL
    SELECT * FROM after_batch
)
"""
    + _PAGE
)

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
# User id 0 is no user: a Pusher socket without a pgcast session (open mode), which no
# user's deletion can end.
ENDED_AMONG: Final[LiteralString] = """
SELECT 'user', u.id::text, 'account deleted'
FROM unnest(%(user_ids)s::bigint[]) AS u(id)
WHERE u.id <> 0 AND NOT EXISTS (SELECT 1 FROM users WHERE users.id = u.id)
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
    DELETE FROM broadcasts
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

# The start-up checks of the connections (server/pg/listener.py, server/app.py): a hot
# standby can neither LISTEN nor take pgcast's writes, and a LISTEN that gets no
# notification of its own is one that goes through a transaction-mode pooler.
IN_RECOVERY: Final[LiteralString] = "SELECT pg_is_in_recovery()"
NOTIFY_ONE: Final[LiteralString] = "SELECT pg_notify(%(channel)s, %(payload)s)"

# Who may listen: the rule is the database's own function (db/migrations/0005_channels.sql).
FORBIDDEN_CHANNELS: Final[LiteralString] = """
SELECT c.name
FROM unnest(%(channels)s::text[]) WITH ORDINALITY AS c(name, position)
WHERE NOT pgcast_may_listen(%(user_id)s, c.name)
ORDER BY c.position
"""

# Which of a process's open subscriptions the listen rule no longer allows: checked when a
# membership is revoked, and after the LISTEN connection was down (with ENDED_AMONG).
FORBIDDEN_SUBSCRIPTIONS: Final[LiteralString] = """
SELECT s.user_id, s.channel
FROM unnest(%(user_ids)s::bigint[], %(channels)s::text[]) AS s(user_id, channel)
WHERE s.user_id <> 0 AND NOT pgcast_may_listen(s.user_id, s.channel)
"""

# Direct messages. The JSON shapes come from the same SQL functions the broadcasts use.
# The recipient must exist; the CHECK refuses writing to yourself.
INSERT_DIRECT_MESSAGE: Final[LiteralString] = """
WITH inserted AS (
    INSERT INTO direct_messages (sender_id, recipient_id, content)
    SELECT %(sender_id)s, u.id, %(content)s FROM users u WHERE u.id = %(recipient_id)s
    RETURNING *
)
SELECT pgcast_direct_message_json(inserted)::text FROM inserted
"""

CONVERSATION_PAGE: Final[LiteralString] = """
SELECT d.id, pgcast_direct_message_json(d)::text
FROM direct_messages d
WHERE ((d.sender_id = %(me)s AND d.recipient_id = %(other)s)
       OR (d.sender_id = %(other)s AND d.recipient_id = %(me)s))
  AND (%(before)s::bigint IS NULL OR d.id < %(before)s::bigint)
ORDER BY d.id DESC
LIMIT %(limit)s
"""

# One row per person the user has written with: them, the last message, what is unread.
CONVERSATIONS: Final[LiteralString] = """
WITH latest AS (
    SELECT other, max(id) AS last_id
    FROM (
        SELECT recipient_id AS other, id FROM direct_messages WHERE sender_id = %(me)s
        UNION ALL
        SELECT sender_id, id FROM direct_messages WHERE recipient_id = %(me)s
    ) mine
    GROUP BY other
)
SELECT pgcast_public_user(latest.other)::text,
       pgcast_direct_message_json(d)::text,
       (SELECT count(*) FROM direct_messages unread
        WHERE unread.recipient_id = %(me)s AND unread.sender_id = latest.other
          AND unread.read_at IS NULL)
FROM latest
JOIN direct_messages d ON d.id = latest.last_id
ORDER BY latest.last_id DESC
"""

MARK_CONVERSATION_READ: Final[LiteralString] = """
UPDATE direct_messages SET read_at = now()
WHERE recipient_id = %(me)s AND sender_id = %(other)s AND read_at IS NULL
"""

# Notifications, newest first; `before` is a notification id (a uuid) from the previous page.
# The unread count comes from the same statement, so from the same snapshot as the page: read
# apart, a notification committed in between was counted but not listed.
NOTIFICATIONS_PAGE: Final[LiteralString] = """
WITH unread AS (
    SELECT count(*) AS unread_count FROM notifications
    WHERE user_id = %(me)s AND read_at IS NULL
)
SELECT unread.unread_count, page.id, page.notification
FROM unread
LEFT JOIN LATERAL (
    SELECT n.id::text AS id, pgcast_notification_json(n)::text AS notification,
           n.created_at, n.id AS uuid
    FROM notifications n
    WHERE n.user_id = %(me)s
      AND (%(before)s::uuid IS NULL
           OR (n.created_at, n.id) < (SELECT b.created_at, b.id FROM notifications b
                                      WHERE b.id = %(before)s::uuid AND b.user_id = %(me)s))
    ORDER BY n.created_at DESC, n.id DESC
    LIMIT %(limit)s
) page ON true
ORDER BY page.created_at DESC, page.uuid DESC
"""

# Marking read touches (and so broadcasts) only what was unread.
MARK_NOTIFICATION_READ: Final[LiteralString] = """
WITH mine AS (
    SELECT id FROM notifications WHERE id = %(id)s::uuid AND user_id = %(me)s
),
marked AS (
    UPDATE notifications n SET read_at = now()
    FROM mine WHERE n.id = mine.id AND n.read_at IS NULL
    RETURNING n.*
)
SELECT pgcast_notification_json(marked)::text FROM marked
UNION ALL
SELECT pgcast_notification_json(n)::text FROM notifications n, mine
WHERE n.id = mine.id AND NOT EXISTS (SELECT FROM marked)
"""

MARK_ALL_NOTIFICATIONS_READ: Final[LiteralString] = """
UPDATE notifications SET read_at = now() WHERE user_id = %(me)s AND read_at IS NULL
"""

INSERT_NOTIFICATION: Final[LiteralString] = """
INSERT INTO notifications (user_id, type, data) VALUES (%(user_id)s, %(type)s, %(data)s)
RETURNING pgcast_notification_json(notifications)::text
"""

# People to write to: names only, never e-mails. `pattern` is already LIKE-escaped.
SEARCH_USERS: Final[LiteralString] = """
SELECT pgcast_public_user(u.id)::text
FROM users u
WHERE u.id <> %(me)s AND u.name ILIKE %(pattern)s
ORDER BY lower(u.name), u.id
LIMIT %(limit)s
"""

# The Pusher HTTP API's publish: a row per event and channel, in the order given, in one
# statement (so one transaction). Each row names its own origin socket: the events of a
# batch may each leave out another socket.
INSERT_PUSHER_EVENTS: Final[LiteralString] = """
INSERT INTO broadcasts (channel, event, data, origin_socket_id)
SELECT p.channel, p.event, p.data::jsonb, p.origin_socket_id
FROM unnest(%(channels)s::text[], %(events)s::text[], %(data)s::text[], %(origins)s::text[])
     WITH ORDINALITY AS p(channel, event, data, origin_socket_id, position)
ORDER BY p.position
"""

# Tells every process's listener to close something (server/pg/revocations.py).
ANNOUNCE_REVOCATION: Final[LiteralString] = "SELECT pg_notify(%(channel)s, %(payload)s)"

# Client events (Pusher `client-…`) travel between processes as notifications and are never
# stored: each process LISTENs here and hands them to its hub.
CLIENT_EVENTS_CHANNEL: Final = "pgcast_client_events"

NOTIFY_CLIENT_EVENT: Final[LiteralString] = "SELECT pg_notify('pgcast_client_events', %(payload)s)"
