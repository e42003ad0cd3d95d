"""The database a scenario runs on, and the trigger set-ups it compares."""

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import psycopg
from psycopg import sql

from server.db import with_database
from server.embedded import embedded_database
from server.migrate import migrate

PGCAST_TRIGGERS = tuple(f"messages_broadcast_{op}" for op in ("insert", "update", "delete"))
BARE_TRIGGER, BARE_CHANNEL = "pgcast_bench_bare_notify", "pgcast_bench_bare"
# What each set-up enables on `messages` among pgcast's triggers and the bare one.
VARIANTS = {"none": (), "notify": (BARE_TRIGGER,), "pgcast": PGCAST_TRIGGERS}
BARE_TRIGGER_SQL = f"""
CREATE OR REPLACE FUNCTION {BARE_TRIGGER}() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('{BARE_CHANNEL}', '');
    RETURN NULL;
END
$$;

CREATE OR REPLACE TRIGGER {BARE_TRIGGER}
    AFTER INSERT ON messages
    FOR EACH STATEMENT EXECUTE FUNCTION {BARE_TRIGGER}();
"""


@contextlib.contextmanager
def bench_database(workdir: Path) -> Iterator[tuple[str, psutil.Process | None]]:
    """A migrated, empty database: a fresh one on DATABASE_URL's server (its role needs
    CREATEDB; dropped at the end), or the embedded one. Also yields the local postmaster
    (for CPU figures) when it is known."""
    if configured := os.environ.get("DATABASE_URL"):
        with create_database(configured, f"pgcast_bench_{uuid.uuid4().hex[:12]}") as conninfo:
            migrate(conninfo)
            yield conninfo, None
        return
    with embedded_database(workdir / "embedded") as conninfo:
        migrate(conninfo)
        postmaster: psutil.Process | None = None
        with contextlib.suppress(OSError, ValueError, psutil.Error):
            pid = (workdir / "embedded" / "pgdata" / "postmaster.pid").read_text()
            postmaster = psutil.Process(int(pid.splitlines()[0]))
        yield conninfo, postmaster


@contextlib.contextmanager
def create_database(conninfo: str, name: str) -> Iterator[str]:
    """A new, empty database `name` on `conninfo`'s server, dropped at the end."""

    def admin(statement: str) -> None:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute(sql.SQL(statement).format(sql.Identifier(name)))

    admin("CREATE DATABASE {}")
    try:
        yield with_database(conninfo, name)
    finally:
        admin("DROP DATABASE {} WITH (FORCE)")


def create_user(conn: psycopg.Connection[Any], email: str, name: str) -> int:
    """The id of the user with `email` (no WorkOS id), created when there is none."""
    query = "SELECT id FROM users WHERE lower(email) = lower(%s) AND workos_id IS NULL"
    row = conn.execute(query, [email]).fetchone()
    insert = "INSERT INTO users (email, name) VALUES (%s, %s) RETURNING id"
    row = row or conn.execute(insert, [email, name]).fetchone()
    assert row is not None
    conn.commit()  # nothing to commit in autocommit
    return int(row[0])


def set_triggers(
    conn: psycopg.Connection[Any], wanted: tuple[str, ...], among: tuple[str, ...]
) -> list[str]:
    """Enable the triggers `wanted` on `messages` and disable the rest of `among`; returns
    every trigger then enabled on it."""
    for name in among:
        conn.execute(
            sql.SQL("ALTER TABLE messages {} TRIGGER {}").format(
                sql.SQL("ENABLE" if name in wanted else "DISABLE"), sql.Identifier(name)
            )
        )
    rows = conn.execute(
        "SELECT tgname FROM pg_trigger WHERE tgrelid = 'messages'::regclass "
        "AND NOT tgisinternal AND tgenabled <> 'D' ORDER BY tgname"
    ).fetchall()
    return [str(row[0]) for row in rows]


def set_variant(conn: psycopg.Connection[Any], variant: str) -> list[str]:
    """One of VARIANTS (the bare NOTIFY trigger installed first when it is not yet)."""
    conn.execute(BARE_TRIGGER_SQL)
    return set_triggers(conn, VARIANTS[variant], (*PGCAST_TRIGGERS, BARE_TRIGGER))


def reset_tables(conn: psycopg.Connection[Any]) -> bool:
    """Empty the tables so every measurement starts at the same size; CHECKPOINT so none
    starts in the middle of one. False when the role may not CHECKPOINT."""
    conn.execute("TRUNCATE messages, broadcasts")
    try:
        conn.execute("CHECKPOINT")
    except psycopg.errors.InsufficientPrivilege:
        return False
    return True
