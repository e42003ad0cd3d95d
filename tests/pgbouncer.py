"""A real PgBouncer (Debian's `pgbouncer` package) in front of the test database, for the
tests of what a connection pooler between pgcast and PostgreSQL allows."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

STARTUP_TIMEOUT = 20.0


def pgbouncer_binary() -> str:
    """The pgbouncer binary, or a skip: `make test` installs Debian's package."""
    found = shutil.which("pgbouncer") or shutil.which("pgbouncer", path="/usr/sbin:/sbin")
    if found is None:
        pytest.skip("pgbouncer is not installed (make test installs Debian's package)")
    return found


def _run_as(host: str) -> str | None:
    """PgBouncer will not run as root; it then takes the user that may reach PostgreSQL's
    Unix socket directory (the embedded server's owner), or nobody for a TCP host."""
    if os.geteuid() != 0:
        return None
    if host.startswith("/"):
        owner = Path(host).stat().st_uid
        import pwd

        return pwd.getpwuid(owner).pw_name
    return "nobody"


def _quoted(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


@contextlib.contextmanager
def running_pgbouncer(database_url: str, port: int, pool_mode: str) -> Iterator[str]:
    """PgBouncer on 127.0.0.1:`port` in `pool_mode`, in front of `database_url`'s database;
    yields the conninfo a client uses to reach that database through it."""
    binary = pgbouncer_binary()
    params = {key: str(value) for key, value in conninfo_to_dict(database_url).items()}
    host = params.get("host", "127.0.0.1")
    user = params.get("user") or "postgres"
    dbname = params["dbname"]
    server = " ".join(
        f"{key}={_quoted(params[key])}"
        for key in ("host", "port", "user", "password")
        if key in params
    )
    # pytest's temporary directories are private to their owner; PgBouncer may run as
    # another user, who must read its own files.
    directory = Path(tempfile.mkdtemp(prefix="pgcast-pgbouncer-"))
    try:
        directory.chmod(0o755)
        auth_file = directory / "users.txt"
        auth_file.write_text(f'"{user}" ""\n')
        config = directory / "pgbouncer.ini"
        config.write_text(
            "[databases]\n"
            f"{dbname} = {server} dbname={_quoted(dbname)}\n"
            "[pgbouncer]\n"
            "listen_addr = 127.0.0.1\n"
            f"listen_port = {port}\n"
            "unix_socket_dir =\n"
            "auth_type = trust\n"
            f"auth_file = {auth_file}\n"
            f"pool_mode = {pool_mode}\n"
            # Transaction mode: a few server connections shared by many clients, so that
            # statements of one client land on different backends, as in production. Session
            # mode gives a client connection its backend for the connection's life: room for
            # all of pgcast's (LISTEN, its reader, the heartbeat, the probe, the pool), or a
            # pool connection waits in PgBouncer's queue while the machine is slow.
            f"default_pool_size = {4 if pool_mode == 'transaction' else 20}\n"
            "max_client_conn = 200\n"
            "log_connections = 0\n"
            "log_disconnections = 0\n"
        )
        for path in (auth_file, config):
            path.chmod(0o644)
        run_as = _run_as(host)
        command = [binary, *(["-u", run_as] if run_as else []), str(config)]
        log = directory / "pgbouncer.log"
        with log.open("wb") as log_file:
            process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log_file)
        try:
            _wait_accepting(process, port, log)
            yield make_conninfo("", host="127.0.0.1", port=str(port), user=user, dbname=dbname)
        finally:
            stop_process(process)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def stop_process(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL if it has not ended within 10 s."""
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _wait_accepting(process: subprocess.Popen[bytes], port: int, log: Path) -> None:
    # It says nothing when it is ready: ask the port, within a deadline.
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while True:
        if process.poll() is not None:
            raise RuntimeError("pgbouncer exited: " + log.read_text()[-2000:])
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
