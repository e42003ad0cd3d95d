"""Applies db/migrations/ (yoyo) and then db/triggers.sql, one process at a time, and makes
sure the event log belongs to this cluster (a restored database gets it rebased)."""

from __future__ import annotations

import logging
from urllib.parse import urlencode

import psycopg
from psycopg.conninfo import conninfo_to_dict
from yoyo import get_backend, read_migrations

from server import queries
from server.resources import DB_DIR

# Any constant works; it only has to be the same in every pgcast process.
MIGRATION_LOCK_KEY = 0x70676361_7374  # "pgcast"

log = logging.getLogger(__name__)


def _yoyo_uri(conninfo: str) -> str:
    # yoyo passes query arguments straight to psycopg.connect, so every libpq parameter
    # (including a Unix socket directory as host) survives the trip.
    params = {key: str(value) for key, value in conninfo_to_dict(conninfo).items()}
    params["application_name"] = queries.CLI_APPLICATION_NAME
    return "postgresql+psycopg:///?" + urlencode(params)


def migrate(conninfo: str) -> list[str]:
    """Apply what is pending; return the ids of the migrations applied now."""
    with psycopg.connect(
        conninfo, autocommit=True, application_name=queries.CLI_APPLICATION_NAME
    ) as lock_conn:
        # yoyo's own lock table is created by the first process in; the advisory lock makes
        # concurrent `pgcast migrate` runs queue up instead of racing to create it.
        lock_conn.execute("SELECT pg_advisory_lock(%s)", [MIGRATION_LOCK_KEY])
        try:
            backend = get_backend(_yoyo_uri(conninfo))
            try:
                migrations = read_migrations(str(DB_DIR / "migrations"))
                with backend.lock():
                    pending = backend.to_apply(migrations)
                    backend.apply_migrations(pending)
            finally:
                backend.connection.close()
            with lock_conn.transaction():
                lock_conn.execute((DB_DIR / "triggers.sql").read_text())
                adopted = lock_conn.execute(queries.ADOPT_EVENT_LOG).fetchone()
            if adopted is not None and adopted[0] is not None:
                log.warning("%s", adopted[0])
        finally:
            lock_conn.execute("SELECT pg_advisory_unlock(%s)", [MIGRATION_LOCK_KEY])
    applied = [migration.id for migration in pending]
    for migration_id in applied:
        log.info("applied migration %s", migration_id)
    return applied
