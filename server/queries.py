"""Every SQL statement the server runs, as named constants with parameters."""

from typing import Final, LiteralString

# Names pgcast gives its own connections; the audit view tells API posts apart by them.
APPLICATION_NAME: Final = "pgcast"
LISTENER_APPLICATION_NAME: Final = "pgcast-listener"
LISTENER_READER_APPLICATION_NAME: Final = "pgcast-listener-reader"
LISTEN_CHECK_APPLICATION_NAME: Final = "pgcast-listen-check"
CLI_APPLICATION_NAME: Final = "pgcast-cli"
HEARTBEAT_APPLICATION_NAME: Final = "pgcast-heartbeat"
NOTIFY_CHANNEL: Final = "pgcast_events"

REVOCATIONS_CHANNEL: Final = "pgcast_revocations"

# The connection's own backend: its own row of pg_stat_activity is always visible to it.
OWN_BACKEND: Final[LiteralString] = """
SELECT pid, backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid()
"""


DATABASE_IDENTITY: Final[LiteralString] = """
SELECT instance_id::text,
       (SELECT oid FROM pg_database WHERE datname = current_database())::bigint
FROM pgcast_instance
"""

# HMAC's inner padded key (migration 0010), from which the key itself is recovered.
NOTIFY_KEY: Final[LiteralString] = "SELECT inner_key FROM pgcast_notify_key"

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
# with these set, so each branch is an ordered index seek that stops at its LIMIT. One
# statement, as SET LOCAL of both would be two: a pipeline sends each on its own.
ORDERED_INDEX_SCANS_ONLY: Final[LiteralString] = (
    "SELECT set_config('enable_bitmapscan', 'off', true), set_config('enable_seqscan', 'off', true)"
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
# Posts per user in the last minute, counted across every process (pgcast_post_rates):
# the upsert locks the user's row, so concurrent posts take their turn and exactly
# `per_minute` of them get through. The row's own times are pruned in the same statement.
# Returns whether this post may go ahead, and when the oldest counted post leaves the
# window (seconds from now, rounded up).
TAKE_POST_SLOT: Final[LiteralString] = """
INSERT INTO pgcast_post_rates AS rate (user_id, recent, last_allowed)
VALUES (%(user_id)s, ARRAY[now()], true)
ON CONFLICT (user_id) DO UPDATE SET (recent, last_allowed) = (
    SELECT CASE WHEN cardinality(kept) < %(per_minute)s THEN kept || now() ELSE kept END,
           cardinality(kept) < %(per_minute)s
    FROM (
        SELECT ARRAY(
            SELECT hit FROM unnest(rate.recent) AS hit WHERE hit > now() - interval '1 minute'
        ) AS kept
    ) AS pruned
)
RETURNING last_allowed,
          ceil(extract(epoch FROM
              (SELECT min(hit) FROM unnest(recent) AS hit) + interval '1 minute' - now()
          ))::int
"""

# Users who have not posted for a minute need no row; the next post makes one again.
PRUNE_POST_RATES: Final[LiteralString] = """
DELETE FROM pgcast_post_rates
WHERE NOT EXISTS (SELECT FROM unnest(recent) AS hit WHERE hit > now() - interval '1 minute')
"""

# Open sockets, one row each in pgcast_sockets, on every process (server/pg/sockets.py).
# Opening one within the limits takes a transaction: advisory locks on the limited keys
# (`user:ID` before `address:ADDR`, in the order given: always the same order, so two
# openings never wait on each other in a circle) make openings for the same user or address
# take turns, and the statement after them counts with a snapshot taken once the previous
# opening committed. A two-key lock cannot meet the one-key lock of `pgcast migrate`; two keys
# with one hash only take turns they need not.
SOCKET_LOCK_CLASS: Final = 0x7067  # "pg"
LOCK_SOCKET_KEYS: Final[LiteralString] = """
SELECT pg_advisory_xact_lock(%(lock_class)s, hashtext(key))
FROM unnest(%(keys)s::text[]) AS key
"""

# Inserts the socket's row if the user (NULL: no pgcast user, counted per address only) and
# the address are under their limits (0: no limit); returns the user's open sockets before
# it (counted up to the limit: what tells which limit refused it), and whether it was
# inserted.
OPEN_SOCKET: Final[LiteralString] = """
WITH open_before AS (
    SELECT (SELECT count(*) FROM (
                SELECT FROM pgcast_sockets WHERE user_id = %(user_id)s LIMIT %(per_user)s
            ) AS of_user) AS of_user,
           (SELECT count(*) FROM (
                SELECT FROM pgcast_sockets WHERE address = %(address)s LIMIT %(per_address)s
            ) AS of_address) AS of_address
), opened AS (
    INSERT INTO pgcast_sockets (socket_id, process_id, protocol, user_id, address, channels)
    SELECT %(socket_id)s, %(process_id)s, %(protocol)s, %(user_id)s, %(address)s,
           %(channels)s::text[]
    FROM open_before
    WHERE (%(per_user)s = 0 OR of_user < %(per_user)s)
      AND (%(per_address)s = 0 OR of_address < %(per_address)s)
    RETURNING socket_id
)
SELECT of_user, EXISTS (SELECT FROM opened) FROM open_before
"""

# A socket's row as this process holds it, written again after this process's row (and so
# its sockets' rows) had been removed while it lived.
RESTORE_SOCKET: Final[LiteralString] = """
INSERT INTO pgcast_sockets (socket_id, process_id, protocol, user_id, address, channels)
VALUES (%(socket_id)s, %(process_id)s, %(protocol)s, %(user_id)s, %(address)s,
        %(channels)s::text[])
ON CONFLICT (socket_id) DO UPDATE SET channels = EXCLUDED.channels
"""

SET_SOCKET_CHANNELS: Final[LiteralString] = """
UPDATE pgcast_sockets SET channels = %(channels)s::text[]
WHERE socket_id = %(socket_id)s AND process_id = %(process_id)s
"""

CLOSE_SOCKETS: Final[LiteralString] = """
DELETE FROM pgcast_sockets
WHERE socket_id = ANY(%(socket_ids)s::text[]) AND process_id = %(process_id)s
"""

# Pusher's channel state, over every process's sockets. `channels &&` narrows the rows
# through the GIN index before they are unnested.
SUBSCRIPTION_COUNTS: Final[LiteralString] = """
SELECT channel, count(*)
FROM pgcast_sockets, unnest(channels) AS channel
WHERE channels && %(channels)s::text[] AND channel = ANY(%(channels)s::text[])
GROUP BY channel
"""

OCCUPIED_CHANNELS: Final[LiteralString] = """
SELECT channel, count(*)
FROM pgcast_sockets, unnest(channels) AS channel
WHERE starts_with(channel, %(prefix)s)
GROUP BY channel
ORDER BY channel
"""

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


# The pgcast processes sharing the database (server/pg/processes.py). A process registers
# under an id it keeps, again if its row was removed while it lived (it was paused, or cut
# off from the database for longer than the stale threshold).
REGISTER_PROCESS: Final[LiteralString] = """
INSERT INTO pgcast_processes (id, host, pid, port, listener_pid, listener_started_at)
VALUES (%(id)s, %(host)s, %(pid)s, %(port)s, %(listener_pid)s, %(listener_started_at)s)
ON CONFLICT (id) DO UPDATE
SET listener_pid = EXCLUDED.listener_pid, listener_started_at = EXCLUDED.listener_started_at,
    seen_at = now()
"""

RECORD_LISTENER: Final[LiteralString] = """
UPDATE pgcast_processes
SET listener_pid = %(listener_pid)s, listener_started_at = %(listener_started_at)s, seen_at = now()
WHERE id = %(id)s
"""

HEARTBEAT: Final[LiteralString] = """
UPDATE pgcast_processes SET seen_at = now() WHERE id = %(id)s RETURNING id
"""

# Processes found dead, locked so that concurrent sweeps by other processes skip them: a
# heartbeat older than the stale threshold (machine lost, process paused), or a LISTEN
# backend that is no longer in pg_stat_activity (process killed: PostgreSQL ends the
# backend as soon as the socket closes). backend_start is NULL in pg_stat_activity for
# backends of roles whose statistics this role may not read; the pid alone decides then.
# One scan of pgcast_processes and pg_stat_activity, whatever the number of members.
DEAD_PROCESSES: Final[LiteralString] = """
SELECT p.id FROM pgcast_processes p
WHERE p.id <> %(id)s
  AND (p.seen_at < now() - make_interval(secs => %(stale_seconds)s)
       OR (p.listener_pid IS NOT NULL AND NOT EXISTS (
           SELECT 1 FROM pg_stat_activity a
           WHERE a.pid = p.listener_pid
             AND (a.backend_start IS NULL OR a.backend_start = p.listener_started_at))))
FOR UPDATE OF p SKIP LOCKED
"""

DELETE_PROCESSES: Final[LiteralString] = """
DELETE FROM pgcast_processes WHERE id = ANY(%(ids)s::uuid[])
"""

# Presence (server/pg/presence.py, db/triggers.sql). A socket's row is written again as it
# was when its process registers again; a socket that joins a channel it left within the
# grace takes its row back.
JOIN_PRESENCE: Final[LiteralString] = """
INSERT INTO presence_members (channel, socket_id, user_id, user_info, process_id)
VALUES (%(channel)s, %(socket_id)s, %(user_id)s, %(user_info)s::jsonb, %(process_id)s)
ON CONFLICT (channel, socket_id) DO UPDATE
SET user_info = EXCLUDED.user_info, process_id = EXCLUDED.process_id, left_at = NULL
"""

# Ordered by (channel, user_id), the order the trigger takes its locks in.
RESTORE_PRESENCE: Final[LiteralString] = """
INSERT INTO presence_members (channel, socket_id, user_id, user_info, process_id)
SELECT r.channel, r.socket_id, r.user_id, r.user_info::jsonb, %(process_id)s
FROM unnest(%(channels)s::text[], %(socket_ids)s::text[], %(user_ids)s::text[],
            %(user_infos)s::text[]) AS r (channel, socket_id, user_id, user_info)
ORDER BY r.channel, r.user_id
ON CONFLICT (channel, socket_id) DO UPDATE
SET user_info = EXCLUDED.user_info, process_id = EXCLUDED.process_id, left_at = NULL
"""

LEAVE_PRESENCE: Final[LiteralString] = """
UPDATE presence_members SET left_at = now(), process_id = NULL
WHERE (channel, socket_id) IN (
    SELECT * FROM unnest(%(channels)s::text[], %(socket_ids)s::text[]))
  AND left_at IS NULL
"""

# The grace is counted on the database's clock, as left_at was set: a socket that left
# again since (its row taken back and left anew) keeps its row for a grace of its own.
EXPIRE_LEFT_SOCKET: Final[LiteralString] = """
DELETE FROM presence_members
WHERE channel = %(channel)s AND socket_id = %(socket_id)s
  AND left_at <= now() - make_interval(secs => %(grace_seconds)s)
"""

# The sweep's backstop: rows whose grace is over, whoever left them. Rows another sweep has
# locked are skipped rather than waited for.
EXPIRE_LEFT: Final[LiteralString] = """
DELETE FROM presence_members m
USING (
    SELECT channel, socket_id FROM presence_members
    WHERE left_at <= now() - make_interval(secs => %(grace_seconds)s)
    FOR UPDATE SKIP LOCKED
) expired
WHERE m.channel = expired.channel AND m.socket_id = expired.socket_id
"""

# The members of processes found dead (or shutting down) start their grace.
PROCESSES_LEFT: Final[LiteralString] = """
UPDATE presence_members SET left_at = now(), process_id = NULL
WHERE process_id = ANY(%(ids)s::uuid[])
"""

# One statement, so the snapshot returned is the one the members were read in.
ROSTER: Final[LiteralString] = """
SELECT pg_current_snapshot()::text, o.user_id, o.user_info::text
FROM (VALUES (1)) AS here (one)
LEFT JOIN LATERAL (
    SELECT user_id, user_info, since FROM presence_online WHERE channel = %(channel)s
) o ON true
ORDER BY o.since, o.user_id
"""

PRESENCE_USERS: Final[LiteralString] = """
SELECT channel, user_id FROM presence_online
WHERE channel = ANY(%(channels)s::text[])
ORDER BY channel, since, user_id
"""
