"""Connections to PostgreSQL: typing, the pool, and conninfo helpers."""

from __future__ import annotations

from typing import Any, TypeAlias

from psycopg import AsyncConnection
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg_pool import AsyncConnectionPool

DbConnection: TypeAlias = AsyncConnection[tuple[Any, ...]]
DbPool: TypeAlias = AsyncConnectionPool[DbConnection]


def with_database(conninfo: str, dbname: str) -> str:
    return make_conninfo(conninfo, dbname=dbname)


def describe(conninfo: str) -> str:
    """Where a conninfo points, without its password, for log lines and errors."""
    params = conninfo_to_dict(conninfo)
    host = params.get("host") or "localhost"
    port = params.get("port") or "5432"
    return f"{params.get('user') or ''}@{host}:{port}/{params.get('dbname') or ''}"


def create_pool(conninfo: str, application_name: str, max_size: int = 10) -> DbPool:
    return AsyncConnectionPool(
        conninfo,
        min_size=1,
        max_size=max_size,
        # Autocommit: a single statement needs no BEGIN/COMMIT round trips; writes that
        # need a transaction open one explicitly with `conn.transaction()`.
        kwargs={"application_name": application_name, "autocommit": True},
        # A connection that died with a database restart is replaced, not handed out.
        check=AsyncConnectionPool.check_connection,
        # While the database is away, requests fail fast with 503 instead of queueing.
        timeout=5.0,
        open=False,
    )
