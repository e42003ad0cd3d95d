"""Presence across processes, with PostgreSQL as the only bus: several `pgcast serve`
processes on one database, real pusher-js (Laravel Echo) clients on each, and native
sockets. Every client gets the same member list; a user with tabs on two processes is one
member; a killed process's members are removed everywhere within PGCAST_PRESENCE_TIMEOUT; a
reconnect within PGCAST_PRESENCE_GRACE announces nothing."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pusher
import pytest

from server.config import Config, load_config
from server.keys import PROCESS
from tests.conftest import Client, Endpoint, RunningServer, Socket, server_config, start_server
from tests.pusher_support import (
    EchoClient,
    RawPusher,
    Record,
    cookie_of,
    raw_pusher,
    signed,
    start_echo,
)
from tests.test_cli import PGCAST, cli_env
from tests.test_pusher_api import call, close_sdk, error_code, sdk_for

STARTUP_TIMEOUT = 60.0
EVENT_TIMEOUT = 20.0
ROOM = "presence-room"
# heartbeat (6 - 1.5) / 6 = 0.75 s, stale after 2.25 s; a dead process's members go within 6 s.
FAST = {"PGCAST_PRESENCE_TIMEOUT": "6", "PGCAST_PRESENCE_GRACE": "1.5"}
# Long enough a grace for a Node client to reconnect on a busy machine.
ROOMY_GRACE = {"PGCAST_PRESENCE_TIMEOUT": "8", "PGCAST_PRESENCE_GRACE": "3"}


@dataclass
class Pgcast:
    """A `pgcast serve` process (with --workers, the supervisor of its workers)."""

    process: asyncio.subprocess.Process
    config: Config
    log: list[str] = field(default_factory=list)
    reader: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return self.config.public_url

    async def stop(self) -> None:
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), 30)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        if self.reader is not None:
            await asyncio.gather(self.reader, return_exceptions=True)

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)


async def start_pgcast(
    database_url: str, data_dir: Path, port: int, settings: dict[str, str], workers: int = 1
) -> Pgcast:
    # One data directory: the processes share the session key and the Pusher credentials,
    # as processes behind one load balancer share their settings.
    env = cli_env(
        database_url,
        data_dir,
        PGCAST_PORT=str(port),
        PGCAST_RATE_SOCKETS_PER_USER="0",
        PGCAST_RATE_SOCKETS_PER_IP="0",
        **settings,
    )
    config = load_config(env)
    command = [*PGCAST, "serve", "--no-migrate"]
    if workers > 1:
        command += ["--workers", str(workers)]
    process = await asyncio.create_subprocess_exec(
        *command, env=env, stderr=asyncio.subprocess.PIPE
    )
    node = Pgcast(process, config)
    assert process.stderr is not None
    async with asyncio.timeout(STARTUP_TIMEOUT):
        serving = 0
        while serving < workers:
            line = (await process.stderr.readline()).decode()
            assert line, "pgcast serve exited before serving:\n" + "".join(node.log[-20:])
            node.log.append(line)
            serving += "pgcast serving" in line

    async def drain() -> None:
        # A pipe nobody reads fills up and stalls the server's logging.
        assert process.stderr is not None
        async for raw in process.stderr:
            node.log.append(raw.decode())

    node.reader = asyncio.create_task(drain())
    return node


Launch = Callable[..., Awaitable[Pgcast]]


@pytest.fixture
async def launch(
    database_url: str, tmp_path: Path, unused_tcp_port_factory: Callable[[], int]
) -> AsyncIterator[Launch]:
    started: list[Pgcast] = []

    async def start(settings: dict[str, str] | None = None, workers: int = 1) -> Pgcast:
        node = await start_pgcast(
            database_url, tmp_path / "data", unused_tcp_port_factory(), settings or {}, workers
        )
        started.append(node)
        return node

    yield start
    await asyncio.gather(*(node.stop() for node in started))


@dataclass
class People:
    """Signed-in users and their Echo clients, closed at the end."""

    clients: list[EchoClient] = field(default_factory=list)
    http: list[Client] = field(default_factory=list)
    cookies: dict[str, str] = field(default_factory=dict)

    async def sign_in(self, node: Pgcast, name: str) -> str:
        client = Client(Endpoint(node.url))
        self.http.append(client)
        body = await client.sign_in(f"{name.lower()}@example.com", name)
        self.cookies[name] = cookie_of(client)
        return str(body["user"]["id"])

    async def echo(self, node: Pgcast, name: str) -> EchoClient:
        client = await start_echo(node, cookie=self.cookies[name])
        self.clients.append(client)
        return client


@pytest.fixture
async def people() -> AsyncIterator[People]:
    crowd = People()
    yield crowd
    await asyncio.gather(*(client.close() for client in crowd.clients))
    for client in crowd.http:
        await client.close()


async def join(client: EchoClient, channel: str = ROOM) -> list[str]:
    """Join through Echo; the member ids pusher-js holds once subscribed."""
    client.send("join", channel=channel.removeprefix("presence-"))
    client.send("listenOn", channel=channel, event=".marker")
    listed = await client.wait_for(
        lambda r: r["type"] == "member_list" and r["channel"] == channel, EVENT_TIMEOUT
    )
    ids: list[str] = listed["ids"]
    return ids


async def members_now(client: EchoClient, channel: str = ROOM) -> list[str]:
    start = len(client.seen)
    client.send("members", channel=channel)
    listed = await client.wait_for(
        lambda r: r["type"] == "member_list" and r.get("now") is True, start=start
    )
    ids: list[str] = listed["ids"]
    return ids


def announced(client: EchoClient, kind: str, channel: str = ROOM) -> list[str]:
    return [r["id"] for r in client.seen if r["type"] == kind and r["channel"] == channel]


async def wait_announced(
    client: EchoClient, kind: str, user_id: str, timeout: float = EVENT_TIMEOUT
) -> Record:
    return await client.wait_for(
        lambda r: r["type"] == kind and r["channel"] == ROOM and r["id"] == user_id, timeout
    )


async def everyone_got_marker(
    db: psycopg.AsyncConnection[Any], clients: list[EchoClient], n: int
) -> None:
    """A broadcast on the room after whatever came before it: once every client has it, each
    has been sent every member change committed earlier (delivery is in commit order)."""
    await db.execute(
        "INSERT INTO broadcasts (channel, event, data) VALUES (%s, 'marker', %s)",
        [ROOM, json.dumps({"n": n})],
    )
    for client in clients:
        await client.wait_for(
            lambda r: r["type"] == "event" and r["event"] == ".marker" and r["data"]["n"] == n,
            EVENT_TIMEOUT,
        )


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 30.0) -> float:
    """Poll a database condition until true (a row going has no event); the seconds taken."""
    started = time.monotonic()
    while not await check():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not within {timeout} s")
        await asyncio.sleep(0.05)
    return time.monotonic() - started


async def rows_of_sockets(db: psycopg.AsyncConnection[Any], socket_ids: list[str]) -> int:
    cursor = await db.execute(
        "SELECT count(*) FROM presence_members WHERE socket_id = ANY(%s)", [socket_ids]
    )
    row = await cursor.fetchone()
    assert row is not None
    return int(row[0])


async def test_three_processes_give_every_client_the_same_members_one_per_user(
    launch: Launch, people: People, db: psycopg.AsyncConnection[Any]
) -> None:
    a, b, c = await asyncio.gather(launch(FAST), launch(FAST), launch(FAST))
    alice_id = await people.sign_in(a, "Alice")
    bob_id = await people.sign_in(b, "Bob")
    carol_id = await people.sign_in(c, "Carol")

    alice = await people.echo(a, "Alice")
    assert await join(alice) == [alice_id]
    bob_on_b = await people.echo(b, "Bob")
    assert await join(bob_on_b) == sorted([alice_id, bob_id])
    await wait_announced(alice, "member_added", bob_id)
    carol = await people.echo(c, "Carol")
    everyone = sorted([alice_id, bob_id, carol_id])
    assert await join(carol) == everyone
    # Bob's second tab, on a third process: already a member, so nobody is told.
    bob_on_c = await people.echo(c, "Bob")
    assert await join(bob_on_c) == everyone
    clients = [alice, bob_on_b, carol, bob_on_c]
    await everyone_got_marker(db, clients, 1)

    assert announced(alice, "member_added") == [bob_id, carol_id]
    assert announced(bob_on_b, "member_added") == [carol_id]
    assert announced(carol, "member_added") == []
    assert announced(bob_on_c, "member_added") == []
    for client in clients:
        assert await members_now(client) == everyone
    # A native socket and the HTTP API of every process say the same.
    native_client = Client(Endpoint(a.url))
    people.http.append(native_client)
    await native_client.sign_in("alice@example.com", "Alice")
    native = await native_client.connect(channels=[ROOM])
    assert sorted(m["user_id"] for m in native.members[ROOM]) == everyone
    for node in (a, b, c):
        sdk = sdk_for(node)
        try:
            users = await call(sdk.users_info, ROOM)
            assert sorted(u["id"] for u in users["users"]) == everyone
            state = await call(sdk.channel_info, ROOM, ["user_count"])
            assert state["user_count"] == 3
        finally:
            close_sdk(sdk)
    cursor = await db.execute(
        "SELECT user_id, sockets, leaving, user_info->>'name' FROM presence_online"
        " WHERE channel = %s ORDER BY user_id",
        [ROOM],
    )
    assert await cursor.fetchall() == sorted(
        [(alice_id, 2, False, "Alice"), (bob_id, 2, False, "Bob"), (carol_id, 1, False, "Carol")]
    )
    await native.close()

    # Bob closes one tab: once its grace is over and its row gone, still nobody was told.
    first_tab = bob_on_b.socket_id
    await bob_on_b.close()
    clients.remove(bob_on_b)

    async def first_tab_gone() -> bool:
        return await rows_of_sockets(db, [first_tab]) == 0

    await eventually(first_tab_gone)
    await everyone_got_marker(db, clients, 2)
    for client in clients:
        assert announced(client, "member_removed") == []

    # His last tab leaves: one member_removed, on every process, after the grace.
    left_at = time.monotonic()
    bob_on_c.send("leave", channel=ROOM)
    for client in (alice, carol):
        await wait_announced(client, "member_removed", bob_id)
    print(f"member_removed reached both processes {time.monotonic() - left_at:.2f} s after")
    await everyone_got_marker(db, [alice, carol], 3)
    for client in (alice, carol):
        assert announced(client, "member_removed") == [bob_id]
        assert await members_now(client) == sorted([alice_id, carol_id])


async def test_a_killed_process_has_its_members_removed_everywhere_within_the_timeout(
    launch: Launch, people: People, db: psycopg.AsyncConnection[Any]
) -> None:
    # The defaults: PGCAST_PRESENCE_TIMEOUT=10, PGCAST_PRESENCE_GRACE=3.
    a, b, c = await asyncio.gather(launch(), launch(), launch())
    alice_id = await people.sign_in(a, "Alice")
    bob_id = await people.sign_in(b, "Bob")
    carol_id = await people.sign_in(c, "Carol")
    dave_id = await people.sign_in(a, "Dave")
    alice = await people.echo(a, "Alice")
    bob = await people.echo(b, "Bob")
    carol = await people.echo(c, "Carol")
    # Dave has a tab on the process that dies and one on a process that lives.
    dave_on_b = await people.echo(b, "Dave")
    dave_on_c = await people.echo(c, "Dave")
    for client in (alice, bob, carol, dave_on_b, dave_on_c):
        await join(client)
    await everyone_got_marker(db, [alice, carol, dave_on_c], 1)
    everyone = sorted([alice_id, bob_id, carol_id, dave_id])
    for client in (alice, carol, dave_on_c):
        assert await members_now(client) == everyone
    cursor = await db.execute(
        "SELECT id::text FROM pgcast_processes WHERE port = %s", [b.config.port]
    )
    row = await cursor.fetchone()
    assert row is not None
    b_id = row[0]

    killed_at = time.monotonic()
    b.kill()
    seconds = []
    for client in (alice, carol, dave_on_c):
        await wait_announced(client, "member_removed", bob_id, timeout=30)
        seconds.append(time.monotonic() - killed_at)
    print(
        "SIGKILL to member_removed on the other processes:",
        ", ".join(f"{s:.2f} s" for s in seconds),
        "(bound: PGCAST_PRESENCE_TIMEOUT=10 s)",
    )
    assert max(seconds) < 10.0
    await everyone_got_marker(db, [alice, carol, dave_on_c], 2)
    for client in (alice, carol, dave_on_c):
        assert announced(client, "member_removed") == [bob_id]
        assert await members_now(client) == sorted([alice_id, carol_id, dave_id])
    cursor = await db.execute(
        "SELECT (SELECT count(*) FROM pgcast_processes WHERE id = %s::uuid),"
        " (SELECT count(*) FROM presence_members WHERE socket_id = ANY(%s))",
        [b_id, [bob.socket_id, dave_on_b.socket_id]],
    )
    assert await cursor.fetchone() == (0, 0)


async def test_a_reconnect_within_the_grace_announces_nothing(
    launch: Launch, people: People, db: psycopg.AsyncConnection[Any]
) -> None:
    a, b, c = await asyncio.gather(launch(ROOMY_GRACE), launch(ROOMY_GRACE), launch(ROOMY_GRACE))
    alice_id = await people.sign_in(a, "Alice")
    bob_id = await people.sign_in(b, "Bob")
    alice = await people.echo(a, "Alice")
    await join(alice)
    bob = await people.echo(b, "Bob")
    await join(bob)
    await wait_announced(alice, "member_added", bob_id)
    first_socket = bob.socket_id

    # The network drops and pusher-js reconnects (a new socket, to the same process).
    bob.send("disconnect")
    await bob.wait_for(lambda r: r["type"] == "state" and r["current"] == "disconnected")
    bob.send("connect")
    await bob.wait_for(
        lambda r: r["type"] == "member_list" and r["channel"] == ROOM, start=len(bob.seen) - 1
    )
    # Then Bob's browser comes back through another process (a load balancer's choice).
    moved = await people.echo(c, "Bob")
    second_socket = bob.socket_id
    await bob.close()
    assert await join(moved) == sorted([alice_id, bob_id])

    async def old_sockets_gone() -> bool:
        return await rows_of_sockets(db, [first_socket, second_socket]) == 0

    await eventually(old_sockets_gone)
    await everyone_got_marker(db, [alice, moved], 1)
    assert announced(alice, "member_added") == [bob_id]
    assert announced(alice, "member_removed") == []
    assert await members_now(alice) == sorted([alice_id, bob_id])


async def test_workers_share_presence_as_separate_processes_do(
    launch: Launch, people: People, db: psycopg.AsyncConnection[Any]
) -> None:
    node = await launch(FAST, workers=3)

    async def three_registered() -> bool:
        cursor = await db.execute(
            "SELECT count(*) FROM pgcast_processes WHERE port = %s", [node.config.port]
        )
        row = await cursor.fetchone()
        return row is not None and row[0] == 3

    await eventually(three_registered)
    names = ["Alice", "Bob", "Carol", "Dave"]
    ids = {name: await people.sign_in(node, name) for name in names}
    clients: dict[str, list[EchoClient]] = {name: [] for name in names}
    for name in names:
        client = await people.echo(node, name)
        await join(client)
        clients[name].append(client)

    async def workers_of(client_list: list[EchoClient]) -> set[str]:
        cursor = await db.execute(
            "SELECT DISTINCT process_id::text FROM presence_members WHERE socket_id = ANY(%s)",
            [[client.socket_id for client in client_list]],
        )
        return {row[0] for row in await cursor.fetchall()}

    # More tabs of Alice's until her tabs are on two workers (the kernel picks the worker).
    for _ in range(20):
        if len(await workers_of(clients["Alice"])) >= 2:
            break
        tab = await people.echo(node, "Alice")
        await join(tab)
        clients["Alice"].append(tab)
    assert len(await workers_of(clients["Alice"])) >= 2
    every_client = [client for tabs in clients.values() for client in tabs]
    await everyone_got_marker(db, every_client, 1)
    everyone = sorted(ids.values())
    for client in every_client:
        assert await members_now(client) == everyone
    first = clients["Alice"][0]
    assert announced(first, "member_added") == [ids[n] for n in names[1:]]

    # Erin's socket is a native one, which does not reconnect by itself: killing its
    # worker removes her for everyone. The Echo clients on that worker reconnect to the
    # others, and end up with the same list as the rest.
    erin = Client(Endpoint(node.url))
    people.http.append(erin)
    erin_id = str((await erin.sign_in("erin@example.com", "Erin"))["user"]["id"])
    erin_socket = await erin.connect(channels=[ROOM])
    for client in every_client:
        await wait_announced(client, "member_added", erin_id)
    cursor = await db.execute(
        "SELECT p.pid, p.id::text FROM presence_members m JOIN pgcast_processes p"
        " ON p.id = m.process_id WHERE m.socket_id = %s",
        [erin_socket.socket_id],
    )
    row = await cursor.fetchone()
    assert row is not None
    pid, worker = row
    reconnecting = [c for c in every_client if worker in await workers_of([c])]

    def subscribed_lists(client: EchoClient) -> list[Record]:
        return [r for r in client.seen if r["type"] == "member_list" and not r.get("now")]

    lists_before = {id(c): len(subscribed_lists(c)) for c in reconnecting}
    killed_at = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    for client in every_client:
        await wait_announced(client, "member_removed", erin_id, timeout=30)
    print(f"a killed worker's member was removed {time.monotonic() - killed_at:.2f} s later")
    for client in reconnecting:
        await client.wait_count(
            lambda r: r["type"] == "member_list" and not r.get("now"),
            lists_before[id(client)] + 1,
            timeout=30,
        )
    await everyone_got_marker(db, every_client, 2)
    for client in every_client:
        assert await members_now(client) == everyone


# --- in one test process: several servers on one database ---------------------------------

ServerFactory = Callable[..., Awaitable[list[RunningServer]]]


@pytest.fixture
async def servers(
    database_url: str, tmp_path: Path, unused_tcp_port_factory: Callable[[], int]
) -> AsyncIterator[ServerFactory]:
    started: list[RunningServer] = []

    async def start(settings: dict[str, str], count: int = 2) -> list[RunningServer]:
        for _ in range(count):
            config = server_config(database_url, tmp_path, unused_tcp_port_factory(), **settings)
            started.append(await start_server(config))
        return started[-count:]

    yield start
    for running in started:
        await running.runner.cleanup()


@pytest.fixture
async def clients() -> AsyncIterator[Callable[[RunningServer], Client]]:
    made: list[Client] = []

    def make(server: RunningServer) -> Client:
        client = Client(server.endpoint)
        made.append(client)
        return client

    yield make
    for client in made:
        await client.close()


async def native_marker(db: psycopg.AsyncConnection[Any], n: int) -> None:
    await db.execute(
        "INSERT INTO broadcasts (channel, event, data) VALUES (%s, 'marker', %s)",
        [ROOM, json.dumps({"n": n})],
    )


async def frames_until_marker(socket: Socket, n: int) -> list[dict[str, Any]]:
    frames = []
    while True:
        frame = await socket.next_frame(EVENT_TIMEOUT)
        if frame["event"] == "marker" and frame["data"] == {"n": n}:
            return frames
        frames.append(frame)


async def test_native_sockets_get_the_member_list_then_member_frames_and_resume(
    servers: ServerFactory,
    clients: Callable[[RunningServer], Client],
    db: psycopg.AsyncConnection[Any],
) -> None:
    one, two = await servers(FAST)
    alice_client, bob_client = clients(one), clients(two)
    alice_id = str((await alice_client.sign_in("alice@example.com", "Alice"))["user"]["id"])
    bob_id = str((await bob_client.sign_in("bob@example.com", "Bob"))["user"]["id"])
    alice_info = {"name": "Alice", "avatar_url": None}
    bob_info = {"name": "Bob", "avatar_url": None}

    alice = await alice_client.connect(channels=["messages", ROOM])
    assert alice.members == {ROOM: [{"user_id": alice_id, "user_info": alice_info}]}
    before_bob = alice.cursor
    bob = await bob_client.connect(channels=[ROOM])
    assert bob.members[ROOM] == [
        {"user_id": alice_id, "user_info": alice_info},
        {"user_id": bob_id, "user_info": bob_info},
    ]
    added = await alice.next_frame()
    assert added == {
        "event": "member_added",
        "channel": ROOM,
        "data": {"user_id": bob_id, "user_info": bob_info},
        "cursor": added["cursor"],
    }
    # Bob's second socket, on the other server: nothing to announce.
    bob_again = await bob_client.connect(channels=[ROOM])
    await bob.close()
    await bob_again.close()
    removed = await alice.next_frame()
    assert removed == {
        "event": "member_removed",
        "channel": ROOM,
        "data": {"user_id": bob_id},
        "cursor": removed["cursor"],
    }

    # A resume replays the member changes it missed, then gives the list as it is now.
    await alice.close()
    resumed = await alice_client.connect(after=before_bob, channels=["messages", ROOM])
    replayed = await resumed.frames(3)
    assert [(f["event"], f["data"].get("user_id")) for f in replayed] == [
        ("member_added", bob_id),
        ("member_removed", bob_id),
        ("presence", None),
    ]
    assert replayed[2] == {
        "event": "presence",
        "channel": ROOM,
        "data": {"members": [{"user_id": alice_id, "user_info": alice_info}]},
    }
    await native_marker(db, 1)
    assert await frames_until_marker(resumed, 1) == []


async def test_a_joining_socket_gets_no_member_added_for_someone_already_listed(
    servers: ServerFactory,
    clients: Callable[[RunningServer], Client],
    db: psycopg.AsyncConnection[Any],
    database_url: str,
) -> None:
    """Users join (rows written with SQL, as fast as the database takes them) while sockets
    of both protocols join: each socket's list, then its member_added frames, must name
    every user once."""
    (server,) = await servers(FAST, count=1)
    alice_client = clients(server)
    alice_id = str((await alice_client.sign_in("alice@example.com", "Alice"))["user"]["id"])
    joiners = 150

    async def join_by_sql() -> None:
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
            for i in range(joiners):
                await conn.execute(
                    "INSERT INTO presence_members (channel, socket_id, user_id)"
                    " VALUES (%s, %s, %s)",
                    [ROOM, f"sql-{i}", f"u{i}"],
                )

    natives: list[Socket] = []
    pushers: list[tuple[RawPusher, dict[str, Any]]] = []
    writing = asyncio.create_task(join_by_sql())
    k = 0
    while not writing.done():
        natives.append(await alice_client.connect(channels=[ROOM]))
        raw = await raw_pusher(alice_client.http, server)
        channel_data = json.dumps({"user_id": f"p{k}", "user_info": {"n": k}})
        succeeded = await raw.subscribe(
            ROOM,
            auth=signed(server, f"{raw.socket_id}:{ROOM}:{channel_data}"),
            channel_data=channel_data,
        )
        assert succeeded["event"] == "pusher_internal:subscription_succeeded", succeeded
        pushers.append((raw, json.loads(succeeded["data"])["presence"]))
        k += 1
    await writing
    await native_marker(db, 1)
    everyone = {alice_id} | {f"u{i}" for i in range(joiners)} | {f"p{i}" for i in range(k)}
    print(f"{len(natives)} native and {len(pushers)} Pusher sockets joined among {joiners} users")

    for socket in natives:
        listed = [m["user_id"] for m in socket.members[ROOM]]
        frames = await frames_until_marker(socket, 1)
        added = [f["data"]["user_id"] for f in frames if f["event"] == "member_added"]
        assert [f for f in frames if f["event"] != "member_added"] == []
        assert set(listed) & set(added) == set()
        assert len(listed) == len(set(listed))
        assert len(added) == len(set(added))
        assert set(listed) | set(added) == everyone
    for raw, presence in pushers:
        listed = list(presence["ids"])
        added = []
        while True:
            frame = await raw.next(EVENT_TIMEOUT)
            if frame["event"] == "marker":
                break
            assert frame["event"] == "pusher_internal:member_added", frame
            added.append(json.loads(frame["data"])["user_id"])
        assert set(listed) & set(added) == set()
        assert len(added) == len(set(added))
        assert set(listed) | set(added) == everyone
        await raw.close()
    for socket in natives:
        await socket.close()


async def test_a_process_taken_for_dead_writes_its_members_back_and_nobody_is_told(
    servers: ServerFactory,
    clients: Callable[[RunningServer], Client],
    db: psycopg.AsyncConnection[Any],
) -> None:
    one, two = await servers(ROOMY_GRACE)
    alice_client, bob_client = clients(one), clients(two)
    alice_id = str((await alice_client.sign_in("alice@example.com", "Alice"))["user"]["id"])
    await bob_client.sign_in("bob@example.com", "Bob")
    alice = await alice_client.connect(channels=[ROOM])
    bob = await bob_client.connect(channels=[ROOM])
    assert (await alice.next_frame())["event"] == "member_added"
    process_id = one.app[PROCESS].id
    # As if its listener had gone (a paused process, a network partition): the other
    # server's sweep takes it for dead and marks its members as leaving.
    await db.execute(
        "UPDATE pgcast_processes SET listener_pid = 0 WHERE id = %s::uuid", [process_id]
    )

    async def written_back() -> bool:
        cursor = await db.execute(
            "SELECT m.left_at IS NULL, p.listener_pid <> 0 FROM presence_members m"
            " JOIN pgcast_processes p ON p.id = m.process_id"
            " WHERE m.socket_id = %s AND p.id = %s::uuid",
            [alice.socket_id, process_id],
        )
        return await cursor.fetchone() == (True, True)

    print(f"registered again and written back within {await eventually(written_back):.2f} s")
    assert one.app[PROCESS].id == process_id
    # Back in place, no row is leaving: nothing can be announced later either.
    cursor = await db.execute("SELECT count(*) FROM presence_members WHERE left_at IS NOT NULL")
    assert await cursor.fetchone() == (0,)
    await native_marker(db, 1)
    assert await frames_until_marker(bob, 1) == []
    assert await frames_until_marker(alice, 1) == []
    cursor = await db.execute(
        "SELECT sockets, leaving FROM presence_online WHERE user_id = %s", [alice_id]
    )
    assert await cursor.fetchone() == (1, False)


async def test_a_graceful_shutdown_starts_its_members_grace_and_others_announce_the_leave(
    servers: ServerFactory,
    clients: Callable[[RunningServer], Client],
    db: psycopg.AsyncConnection[Any],
) -> None:
    one, two = await servers(FAST)
    alice_client, bob_client = clients(one), clients(two)
    alice_id = str((await alice_client.sign_in("alice@example.com", "Alice"))["user"]["id"])
    await bob_client.sign_in("bob@example.com", "Bob")
    await alice_client.connect(channels=[ROOM])
    bob = await bob_client.connect(channels=[ROOM])
    process_id = one.app[PROCESS].id
    await one.runner.cleanup()
    cursor = await db.execute(
        "SELECT sockets, leaving FROM presence_online WHERE channel = %s AND user_id = %s",
        [ROOM, alice_id],
    )
    assert await cursor.fetchone() == (0, True)
    cursor = await db.execute(
        "SELECT count(*) FROM pgcast_processes WHERE id = %s::uuid", [process_id]
    )
    assert await cursor.fetchone() == (0,)
    removed = await bob.next_frame()
    assert (removed["event"], removed["data"]) == ("member_removed", {"user_id": alice_id})


async def test_the_http_api_refuses_member_events_on_presence_channels_only(
    servers: ServerFactory, db: psycopg.AsyncConnection[Any]
) -> None:
    (server,) = await servers(FAST, count=1)
    sdk = sdk_for(server)
    try:
        for name in ("member_added", "member_removed"):
            with pytest.raises(pusher.errors.PusherBadRequest) as refused:
                await call(sdk.trigger, ROOM, name, {"user_id": "1"})
            assert error_code(refused.value) == "invalid_event_name"
            with pytest.raises(pusher.errors.PusherBadRequest):
                await call(sdk.trigger, ["news", ROOM], name, {"user_id": "1"})
        # Elsewhere the names mean nothing special: a public channel carries them as sent.
        assert await call(sdk.trigger, "news", "member_added", {"user_id": "1"}) == {}
    finally:
        close_sdk(sdk)
    cursor = await db.execute("SELECT channel, event FROM broadcasts ORDER BY id")
    assert await cursor.fetchall() == [("news", "member_added")]


@pytest.mark.parametrize(
    ("member", "reason"),
    [
        ({"user_id": "u" * 201, "user_info": {}}, "1 to 200 characters"),
        ({"user_id": "7", "user_info": {"name": "a\u0000b"}}, "NUL"),
        ({"user_id": "7\u0000", "user_info": None}, "NUL"),
    ],
)
async def test_a_presence_member_the_database_cannot_store_is_refused_and_the_socket_goes_on(
    servers: ServerFactory,
    clients: Callable[[RunningServer], Client],
    member: dict[str, Any],
    reason: str,
) -> None:
    (server,) = await servers(FAST, count=1)
    alice = clients(server)
    await alice.sign_in("alice@example.com", "Alice")
    raw = await raw_pusher(alice.http, server)
    channel_data = json.dumps(member)
    refused = await raw.subscribe(
        ROOM,
        auth=signed(server, f"{raw.socket_id}:{ROOM}:{channel_data}"),
        channel_data=channel_data,
    )
    assert refused["event"] == "pusher:subscription_error", refused
    error = json.loads(refused["data"])
    assert error["status"] == 400
    assert reason in error["error"]
    channel_data = json.dumps({"user_id": "7", "user_info": {"name": "Seven"}})
    accepted = await raw.subscribe(
        ROOM,
        auth=signed(server, f"{raw.socket_id}:{ROOM}:{channel_data}"),
        channel_data=channel_data,
    )
    assert accepted["event"] == "pusher_internal:subscription_succeeded", accepted
    await raw.close()
