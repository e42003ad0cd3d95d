"""`pgcast`: serve, migrate, send, tail, psql. Exit 0 ok, 1 user error (one line), 2 bad usage."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import gc
import json
import logging
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Coroutine, Iterator, Sequence
from dataclasses import replace
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import psycopg
from aiohttp import web
from psycopg.conninfo import conninfo_to_dict
from psycopg.types.json import Jsonb

from server import queries
from server.api.messages import validated_content
from server.background import running
from server.config import Config, ConfigError, load_config
from server.core.cursor import CursorError
from server.core.events import Event
from server.core.hub import Hub
from server.db import create_pool, describe
from server.embedded import bundled_psql, embedded_database
from server.logs import AccessLogger, configure_logging, log_settings
from server.migrate import migrate
from server.pg.eventlog import current_position, database_identity, notify_key
from server.pg.feed import EventFeed
from server.pg.listener import Listener, check_listen_connection
from server.pg.replay import catch_up
from server.protocol import message_json, to_json
from server.text import text_problem
from server.transports.native.codec import CODEC, event_text
from server.wire import text_of

log = logging.getLogger("pgcast")

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# In-flight requests get this long to finish once shutdown starts.
SHUTDOWN_TIMEOUT_SECONDS = 10.0
# aiohttp's default of 128 overflows when thousands of clients reconnect at once.
LISTEN_BACKLOG = 4096

ENVIRONMENT_HELP = """\
environment (README.md, section Configuration, gives each default and meaning):
  DATABASE_URL                  libpq URL; unset: an embedded PostgreSQL in PGCAST_DATA_DIR
  PGCAST_LISTEN_DATABASE_URL    a direct connection for LISTEN and migrations, when
                                DATABASE_URL goes through a pooler in transaction mode
  PGCAST_DATA_DIR               embedded database and session key (./.pgcast)
  PGCAST_HOST, PGCAST_PORT      listen address (127.0.0.1, 8080; port 0: any free port)
  PGCAST_PUBLIC_URL             the origin users see (http://{host}:{port})
  PGCAST_SESSION_KEY            Fernet key for session cookies (generated into the data dir)
  PGCAST_SESSION_MAX_AGE        session lifetime in seconds
  PGCAST_DEV_LOGIN              1: sign in as any e-mail, loopback only; 0: off
  PGCAST_MAX_MESSAGE_CHARS      longest message accepted
  PGCAST_EVENT_RETENTION        how long broadcasts stay replayable (7d)
  PGCAST_SOCKET_BACKLOG_BYTES   unsent bytes before a socket is closed with 1013
  PGCAST_BATCH_WINDOW_MS        under load, write sockets at most once per this many ms (5)
  PGCAST_EVENT_LOOP             uvloop (default) or asyncio
  PGCAST_RATE_POSTS_PER_MINUTE, PGCAST_RATE_SOCKETS_PER_USER, PGCAST_RATE_SOCKETS_PER_IP
                                rate limits, over every process; 0 turns one off
  PGCAST_PRESENCE_TIMEOUT       seconds within which a dead process's presence members go (10)
  PGCAST_PRESENCE_GRACE         seconds a leaving member may come back unannounced (3)
  PGCAST_LOG_LEVEL              debug, info (default), warning or error
  PGCAST_LOG_FORMAT             text (default) or json: one JSON object per line
  WORKOS_API_KEY, WORKOS_CLIENT_ID, WORKOS_WEBHOOK_SECRET, WORKOS_BASE_URL, WORKOS_ISSUER
                                sign-in through WorkOS AuthKit
  PGCAST_PUSHER_APP_ID, PGCAST_PUSHER_KEY, PGCAST_PUSHER_SECRET
                                Pusher protocol credentials (generated into the data dir)
  PGCAST_PUSHER_PUBLIC_CHANNELS signed-in (default) or open: who may join public channels
"""


class UserError(Exception):
    """Something the user can fix; printed as one line, exit status 1."""


@contextlib.contextmanager
def database(config: Config) -> Iterator[str]:
    if config.listen_database_url is not None:
        check_database_url(config.listen_database_url, "PGCAST_LISTEN_DATABASE_URL")
    if config.database_url is not None:
        check_database_url(config.database_url)
        yield config.database_url
    else:
        with embedded_database(config.data_dir) as conninfo:
            yield conninfo


_URI_USERINFO = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://([^@/]*)@")
_KEYWORD_PASSWORD = re.compile(r"\bpassword\s*=\s*('(?:[^'\\]|\\.)*'|[^\s&]+)")


def check_database_url(url: str, setting: str = "DATABASE_URL") -> None:
    try:
        conninfo_to_dict(url)
    except psycopg.ProgrammingError as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else "unreadable"
        raise UserError(
            f"{setting} is not a valid libpq URL ({_without_password(reason, url)}); "
            "expected e.g. postgresql://user:password@host:5432/dbname"
        ) from None


def _without_password(text: str, url: str) -> str:
    # libpq quotes the part it could not parse, which can be the password itself.
    secrets = [match.group(1).strip("'") for match in _KEYWORD_PASSWORD.finditer(url)]
    if userinfo := _URI_USERINFO.match(url):
        secrets.append(userinfo.group(1).partition(":")[2])
    for secret in filter(None, secrets):
        text = text.replace(secret, "********")
    return text


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def listening_sockets(host: str, port: int, reuse_port: bool) -> list[socket.socket]:
    """Bind (not yet listen on) every address `host` names, as aiohttp would.

    Binding first turns a taken port into one line before anything has started, and tells
    the port the kernel chose for port 0 before the app, which must know its origin, exists.
    """
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as error:
        raise UserError(f"cannot listen on {_host_port(host, port)}: {error.strerror}") from None
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(addresses):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            if port == 0 and len(sockets) > 1:
                address = (address[0], sockets[0].getsockname()[1], *address[2:])
            sock.bind(address)
    except OSError as error:
        for sock in sockets:
            sock.close()
        reason = (error.strerror or str(error)).lower()
        hint = (
            " (choose another with --port or PGCAST_PORT)"
            if error.errno == errno.EADDRINUSE
            else ""
        )
        raise UserError(f"cannot listen on {_host_port(host, port)}: {reason}{hint}") from None
    return sockets


def _raise_open_file_limit() -> None:
    # Each socket is a file descriptor; the default soft limit (often 1024) is far too low.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def command_serve(args: argparse.Namespace) -> int:
    env = dict(os.environ)
    if args.host is not None:
        env["PGCAST_HOST"] = args.host
    if args.port is not None:
        env["PGCAST_PORT"] = str(args.port)
    config = load_config(env)
    sockets = listening_sockets(config.host, config.port, args.reuse_port or args.workers > 1)
    try:
        bound_port: int = sockets[0].getsockname()[1]
        if bound_port != config.port:
            # Port 0: the default public URL (Origin checks, redirects) names the real port.
            env["PGCAST_PORT"] = str(bound_port)
            config = load_config(env)
        if args.workers > 1:
            # Each worker binds the port again (SO_REUSEPORT); this check has done its part.
            for sock in sockets:
                sock.close()
        _raise_open_file_limit()
        code = 0
        try:
            with database(config) as conninfo:
                config = replace(config, database_url=conninfo)
                if not args.no_migrate:
                    _migrate(config)
                if args.workers > 1:
                    code = _run_workers(config, args.workers)
                else:
                    with asyncio.Runner(loop_factory=_loop_factory(config)) as runner:
                        code = runner.run(_serve(config, sockets, describe(conninfo)))
        except KeyboardInterrupt:
            # SIGINT or SIGTERM before the server was up (see main): stopping is what was asked.
            pass
        log.info("pgcast stopped")
        return code
    finally:
        for sock in sockets:
            sock.close()


def _loop_factory(config: Config) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop unless PGCAST_EVENT_LOOP=asyncio: its transports, timers and polling are C, and
    each broadcast is a write per socket and a query (bench/profile.md)."""
    if config.event_loop == "uvloop":
        import uvloop

        return uvloop.new_event_loop
    return None


async def _serve(config: Config, sockets: list[socket.socket], database_name: str) -> int:
    """Serve until SIGINT or SIGTERM; a second one stops at once. Returns the exit status."""
    from server.app import create_app

    stopping = asyncio.Event()
    hurrying = asyncio.Event()

    def on_signal(signum: signal.Signals) -> None:
        if not stopping.is_set():
            stopping.set()
        elif not hurrying.is_set():
            log.warning(
                "%s during shutdown: stopping at once, without waiting for open requests",
                signum.name,
            )
            hurrying.set()

    runner = web.AppRunner(
        create_app(config),
        handle_signals=False,
        shutdown_timeout=SHUTDOWN_TIMEOUT_SECONDS,
        keepalive_timeout=75.0,
        access_log_class=AccessLogger,
    )
    with _on_stop_signals(on_signal):
        try:
            if await _unless(stopping, runner.setup()):
                for sock in sockets:
                    await web.SockSite(runner, sock, backlog=LISTEN_BACKLOG).start()
                _log_serving(config, sockets, database_name)
                # What start-up made (modules, the SDKs' models, routes) lives as long as the
                # process: out of the collector's way, a full collection scans only what
                # serving allocates (replay builds an object per event).
                gc.freeze()
                await stopping.wait()
            log.info("pgcast shutting down")
        finally:
            finished = await _unless(hurrying, runner.cleanup())
            if not finished:
                # All that shutdown had left but waiting for open requests: the listener,
                # the pool and the other resources of cleanup_ctx, each with its own bound.
                await runner.app.cleanup()
    return 0 if finished else 1


async def _unless(event: asyncio.Event, work: Coroutine[Any, Any, None]) -> bool:
    """Await `work`, unless `event` is set first: then cancel it. True if it finished."""
    job = asyncio.ensure_future(work)
    waiter = asyncio.ensure_future(event.wait())
    try:
        await asyncio.wait({job, waiter}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
    if job.done():
        job.result()
        return True
    job.cancel()
    # Whatever it holds is let go before anything else starts (its own steps are bounded).
    await asyncio.wait({job})
    if not job.cancelled():
        job.result()
    return False


@contextlib.contextmanager
def _on_stop_signals(callback: Callable[[signal.Signals], None]) -> Iterator[None]:
    """Call `callback` from the event loop on SIGINT or SIGTERM, instead of raising."""
    loop = asyncio.get_running_loop()
    previous = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    for signum in STOP_SIGNALS:
        loop.add_signal_handler(signum, callback, signum)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            loop.remove_signal_handler(signum)
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)


def _log_serving(config: Config, sockets: list[socket.socket], database_name: str) -> None:
    listening = [_host_port(*sock.getsockname()[:2]) for sock in sockets]
    methods = [
        name
        for enabled, name in ((config.workos_enabled, "WorkOS"), (config.dev_login, "dev login"))
        if enabled
    ]
    sign_in = " and ".join(methods) or "none"
    fields = {
        "public_url": config.public_url,
        "listening": listening,
        "database": database_name,
        "sign_in": sign_in,
        "event_loop": type(asyncio.get_running_loop()).__module__.partition(".")[0],
    }
    where = f"pgcast serving {config.public_url} (listening on {', '.join(listening)}; "
    where += f"database {database_name}; sign-in: "
    if methods:
        log.info("%s%s)", where, sign_in, extra=fields)
    else:
        log.warning(
            "%snone, so nobody can sign in: set WORKOS_API_KEY and WORKOS_CLIENT_ID)",
            where,
            extra=fields,
        )


def _run_workers(config: Config, workers: int) -> int:
    assert config.database_url is not None
    env = dict(
        os.environ,
        DATABASE_URL=config.database_url,
        PGCAST_HOST=config.host,
        PGCAST_PORT=str(config.port),
        PGCAST_PUBLIC_URL=config.public_url,
        PGCAST_SESSION_KEY=config.session_key.value,
    )
    command = [sys.executable, "-m", "server", "serve", "--no-migrate", "--reuse-port"]
    children = [subprocess.Popen(command, env=env) for _ in range(workers)]

    def forward(signum: int, _frame: object) -> None:
        for child in children:
            child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    codes = [child.wait() for child in children]
    return max(codes, default=0)


def _migrate(config: Config) -> list[str]:
    """Migrations hold a session-level advisory lock, so they go where LISTEN goes, once
    that is known to be a session of its own."""
    assert config.listen_conninfo is not None
    asyncio.run(check_listen_connection(config.listen_conninfo, config.listen_setting))
    return migrate(config.listen_conninfo)


def command_migrate(args: argparse.Namespace) -> int:
    config = load_config()
    with database(config) as conninfo:
        applied = _migrate(replace(config, database_url=conninfo))
    print(f"applied {len(applied)} migration(s); triggers up to date")
    return 0


def _existing_user(conn: psycopg.Connection[Any], email: str) -> int:
    user = conn.execute(queries.USER_BY_EMAIL, {"email": email}).fetchone()
    if user is None:
        raise UserError(f"no user with e-mail {email}; they must sign in once first")
    return int(user[0])


def command_send(args: argparse.Namespace) -> int:
    """A message to everyone, or with --to a direct message to one person."""
    config = load_config()
    try:
        content = validated_content(args.text, config.max_message_chars)
    except ValueError as error:
        raise UserError(str(error)) from None
    with (
        database(config) as conninfo,
        psycopg.connect(conninfo, application_name=queries.CLI_APPLICATION_NAME) as conn,
    ):
        sender = _existing_user(conn, args.email)
        if args.to is None:
            row = conn.execute(
                queries.INSERT_MESSAGE, {"user_id": sender, "content": content}
            ).fetchone()
            assert row is not None
            print(to_json(message_json(*row)))
            return 0
        recipient = _existing_user(conn, args.to)
        if recipient == sender:
            raise UserError("--to names the sender; nobody writes to themselves")
        row = conn.execute(
            queries.INSERT_DIRECT_MESSAGE,
            {"sender_id": sender, "recipient_id": recipient, "content": content},
        ).fetchone()
    assert row is not None
    print(to_json({"direct_message": json.loads(row[0])}))
    return 0


def command_notify(args: argparse.Namespace) -> int:
    config = load_config()
    notification_type = args.type.strip()
    if not 0 < len(notification_type) <= 255 or text_problem(notification_type) is not None:
        raise UserError("--type must be 1 to 255 characters, without control characters")
    try:
        data = json.loads(args.data)
    except (ValueError, RecursionError):
        raise UserError("--data is not valid JSON") from None
    if not isinstance(data, dict):
        raise UserError("--data must be a JSON object, like '{\"amount\": 12}'")
    with (
        database(config) as conninfo,
        psycopg.connect(conninfo, application_name=queries.CLI_APPLICATION_NAME) as conn,
    ):
        user_id = _existing_user(conn, args.email)
        row = conn.execute(
            queries.INSERT_NOTIFICATION,
            {"user_id": user_id, "type": notification_type, "data": Jsonb(data)},
        ).fetchone()
    assert row is not None
    print(to_json({"notification": json.loads(row[0])}))
    return 0


def command_tail(args: argparse.Namespace) -> int:
    config = load_config()
    # Stopping it (Ctrl-C, SIGTERM) is how tail ends, at any point; so is its reader going
    # away (`pgcast tail | head`).
    try:
        with contextlib.suppress(KeyboardInterrupt), database(config) as conninfo:
            asyncio.run(_until_stopped(_tail(replace(config, database_url=conninfo), args.after)))
    except BrokenPipeError:
        # Python flushes stdout once more on exit: that write must not fail too.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


async def _until_stopped(work: Coroutine[Any, Any, None]) -> None:
    """Run `work` until it ends or SIGINT/SIGTERM cancels it, so that its cleanup runs."""
    stopping = asyncio.Event()
    with _on_stop_signals(lambda _signum: stopping.set()):
        await _unless(stopping, work)


async def _tail(config: Config, after: str | None) -> None:
    conninfo, listen_conninfo = config.database_url, config.listen_conninfo
    assert conninfo is not None
    assert listen_conninfo is not None
    await check_listen_connection(listen_conninfo, config.listen_setting)
    async with create_pool(
        conninfo,
        queries.CLI_APPLICATION_NAME,
        max_size=2,
        prepare=not config.pooled_database_url,
    ) as pool:
        async with pool.connection() as conn:
            database_id = await database_identity(conn)
            start = await current_position(conn, database_id)
            key = await notify_key(conn)
        # The path a WebSocket takes, on every channel: subscribed before the catch-up, so
        # nothing falls between the replay and the live events.
        hub = Hub(max_backlog_bytes=1 << 62)
        connection = hub.subscribe_to_everything("tail", CODEC)
        feed = EventFeed(listen_conninfo, hub, start, key)
        listener = Listener(listen_conninfo)
        feed.listen_with(listener)

        async def started(_cursor: str) -> None:
            pass

        async def print_events(events: list[Event]) -> None:
            for event in events:
                sys.stdout.write(event_text(event, event.cursor) + "\n")
            sys.stdout.flush()

        async with running(feed.run(), "event feed"), running(listener.run(), "listener"):
            try:
                await catch_up(
                    pool, database_id, connection, after, None, started=started, send=print_events
                )
            except CursorError as error:
                raise UserError(f"--after: {error}") from None
            while True:
                frames, _ = await connection.take()
                for frame in frames:
                    sys.stdout.write(text_of(frame) + "\n")
                sys.stdout.flush()


def command_psql(args: argparse.Namespace) -> int:
    config = load_config()
    with database(config) as conninfo:
        psql = str(bundled_psql()) if config.database_url is None else shutil.which("psql")
        if psql is None:
            psql = str(bundled_psql())
        return _run_in_foreground([psql, conninfo, *args.psql_args])


def _run_in_foreground(command: list[str]) -> int:
    """Run an interactive program to its end and return its exit status.

    Ctrl-C is the program's own (psql cancels the query); SIGTERM is passed on to it, so it
    ends first and this process then leaves the embedded server as it should.
    """
    child = subprocess.Popen(command)
    previous = {
        signal.SIGINT: signal.signal(signal.SIGINT, signal.SIG_IGN),
        signal.SIGTERM: signal.signal(
            signal.SIGTERM, lambda signum, _frame: child.send_signal(signum)
        ),
    }
    try:
        code = child.wait()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)
    return code if code >= 0 else 128 - code


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pgcast",
        description="Realtime broadcasts of PostgreSQL's messages table.",
        epilog=ENVIRONMENT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"pgcast {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="apply migrations, then serve HTTP and WebSocket")
    serve.add_argument("--host", help="listen address (default PGCAST_HOST or 127.0.0.1)")
    serve.add_argument("--port", type=int, help="listen port (default PGCAST_PORT or 8080)")
    serve.add_argument("--workers", type=_positive, default=1, help="processes on one port")
    serve.add_argument("--no-migrate", action="store_true", help="skip applying migrations")
    serve.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)
    serve.set_defaults(run=command_serve)

    commands.add_parser("migrate", help="apply db/migrations and db/triggers.sql").set_defaults(
        run=command_migrate
    )

    send = commands.add_parser(
        "send", help="insert one message as an existing user (--to: a direct message)"
    )
    send.add_argument("text")
    send.add_argument("--as", dest="email", required=True, metavar="EMAIL")
    send.add_argument("--to", metavar="EMAIL", help="send it to this user only")
    send.set_defaults(run=command_send)

    notify = commands.add_parser("notify", help="insert one notification for an existing user")
    notify.add_argument("email", metavar="EMAIL")
    notify.add_argument("--type", required=True, help="what kind of notification it is")
    notify.add_argument("--data", default="{}", metavar="JSON", help="its payload, an object")
    notify.set_defaults(run=command_notify)

    tail = commands.add_parser("tail", help="print every broadcast as one JSON line")
    tail.add_argument("--after", metavar="CURSOR", help="resume after this cursor")
    tail.set_defaults(run=command_tail)

    # Its arguments never reach argparse (see main), so `-h` is psql's host, not help.
    psql = commands.add_parser(
        "psql", help="open psql on the configured database (further arguments go to psql)"
    )
    psql.set_defaults(run=command_psql)
    return parser


def _version() -> str:
    try:
        return version("pgcast")
    except PackageNotFoundError:
        return "unknown (not installed)"


def _split_psql_arguments(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """Cut everything after `psql` off, for psql; pgcast's own options take no values."""
    for position, argument in enumerate(argv):
        if not argument.startswith("-"):
            if argument == "psql":
                return list(argv[: position + 1]), list(argv[position + 1 :])
            break
    return list(argv), []


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    own, psql_args = _split_psql_arguments(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(own)
    args.psql_args = psql_args
    # SIGTERM unwinds like Ctrl-C, so every `finally` runs, the embedded server's above all:
    # a process killed outright stays on its list of users and keeps it running.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        configure_logging(log_settings(os.environ))
        code: int = args.run(args)
    except (UserError, ConfigError) as error:
        print(f"pgcast: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("pgcast: interrupted", file=sys.stderr)
        return 1
    except psycopg.errors.UndefinedTable:
        print("pgcast: the database has no pgcast tables; run `pgcast migrate`", file=sys.stderr)
        return 1
    except psycopg.OperationalError as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else "unknown"
        print(f"pgcast: cannot reach the database: {first_line}", file=sys.stderr)
        return 1
    return code
