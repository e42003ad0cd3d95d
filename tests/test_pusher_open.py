"""PGCAST_PUSHER_PUBLIC_CHANNELS=open: an external backend's users, who have no pgcast
session, join public channels with the key alone and private and presence channels with
the backend's signatures, as on Pusher."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
import pytest

from tests.conftest import Client, RunningServer, server_config, start_server
from tests.pusher_support import EchoClient, cookie_of, echo_clients, raw_pusher, signed

TIMEOUT = 15.0


@pytest.fixture
async def open_server(
    database_url: str, tmp_path: Path, unused_tcp_port: int
) -> AsyncIterator[RunningServer]:
    config = server_config(
        database_url, tmp_path, unused_tcp_port, PGCAST_PUSHER_PUBLIC_CHANNELS="open"
    )
    running = await start_server(config)
    yield running
    await running.runner.cleanup()


async def test_an_external_backends_users_use_every_kind_of_channel(
    open_server: RunningServer, db: psycopg.AsyncConnection[Any]
) -> None:
    secret = open_server.config.pusher.secret.value
    async with echo_clients(open_server) as start:
        ann: EchoClient = await start(signing_secret=secret)
        ben: EchoClient = await start(signing_secret=secret)
        ann.send("externalUser", user={"id": "ann-1", "info": {"name": "Ann"}})
        ben.send("externalUser", user={"id": "ben-2", "info": {"name": "Ben"}})
        for client in (ann, ben):
            client.send("listen", channel="messages", event=".new-message")
            client.send("private", channel="orders.7", event=".shipped")
            client.send("join", channel="room.1")
            client.send("listenForWhisper", channel="private-orders.7", event="typing")
            await client.wait_count(lambda r: r["type"] == "subscribed", 3, TIMEOUT)
        here = await ben.wait_for(lambda r: r["type"] == "here")
        assert {"name": "Ann"} in here["members"]
        assert {"name": "Ben"} in here["members"]

        await db.execute(
            "INSERT INTO broadcasts (channel, event, data) VALUES"
            " ('private-orders.7', 'shipped', '{\"order\": 7}')"
        )
        for client in (ann, ben):
            record = await client.wait_for(lambda r: r.get("event") == ".shipped", TIMEOUT)
            assert record["data"] == {"order": 7}
        ann.send("whisper", channel="private-orders.7", event="typing", data={"who": "ann"})
        record = await ben.wait_for(lambda r: r.get("event") == "client-typing", TIMEOUT)
        assert record["data"] == {"who": "ann"}
        assert "user_id" not in record  # only presence channels name the sender


async def test_without_a_valid_signature_private_and_presence_are_refused(
    open_server: RunningServer,
) -> None:
    async with aiohttp.ClientSession() as http:
        socket = await raw_pusher(http, open_server, headers={})
        bad = await socket.subscribe("private-orders.7", auth=f"{open_server.config.pusher.key}:00")
        assert bad["event"] == "pusher:subscription_error"
        assert bad["channel"] == "private-orders.7"
        assert json.loads(bad["data"])["status"] == 401
        channel_data = json.dumps({"user_id": "u1"})
        # Signed over other bytes than those sent: refused, however alike they parse.
        auth = signed(
            open_server,
            f"{socket.socket_id}:presence-room:{json.dumps({'user_id': 'u1'}, indent=1)}",
        )
        bad = await socket.subscribe("presence-room", auth=auth, channel_data=channel_data)
        assert bad["event"] == "pusher:subscription_error"
        auth = signed(open_server, f"{socket.socket_id}:presence-room:{channel_data}")
        good = await socket.subscribe("presence-room", auth=auth, channel_data=channel_data)
        assert good["event"] == "pusher_internal:subscription_succeeded"
        assert json.loads(good["data"])["presence"] == {
            "ids": ["u1"],
            "hash": {"u1": None},
            "count": 1,
        }


async def test_a_revocation_recheck_leaves_sockets_without_a_pgcast_user_open(
    open_server: RunningServer, db: psycopg.AsyncConnection[Any]
) -> None:
    bob = Client(open_server.endpoint)
    try:
        await bob.sign_in("bob@example.com", "Bob")
        async with aiohttp.ClientSession() as http:
            anonymous = await raw_pusher(http, open_server, headers={})
            auth = signed(open_server, f"{anonymous.socket_id}:private-orders.7")
            ok = await anonymous.subscribe("private-orders.7", auth=auth)
            assert ok["event"] == "pusher_internal:subscription_succeeded"
            member = await raw_pusher(bob.http, open_server)
            assert (await member.subscribe("closed-now"))["event"].endswith("succeeded")
            # A DBA closes a public channel, and has every process check again.
            await db.execute(
                """
                CREATE OR REPLACE FUNCTION pgcast_may_listen(listener_id bigint, channel text)
                RETURNS boolean LANGUAGE sql STABLE AS $$
                    SELECT channel <> 'closed-now' AND (channel NOT LIKE 'private-%' OR EXISTS (
                        SELECT FROM channel_members m
                        WHERE m.channel = pgcast_may_listen.channel AND m.user_id = listener_id))
                $$
                """
            )
            await db.execute("SELECT pg_notify('pgcast_revocations', 'recheck')")
            code, reason = await member.expect_close(TIMEOUT)
            assert (code, reason) == (4200, "no longer allowed to listen to closed-now")
            # The same check saw the anonymous socket: it is still open and answering.
            await anonymous.send("pusher:ping")
            assert (await anonymous.next())["event"] == "pusher:pong"
    finally:
        await bob.close()


async def test_a_cross_site_page_gets_an_anonymous_socket_whatever_its_cookie(
    open_server: RunningServer, db: psycopg.AsyncConnection[Any]
) -> None:
    alice = Client(open_server.endpoint)
    try:
        body = await alice.sign_in("alice@example.com", "Alice")
        evil = await raw_pusher(alice.http, open_server, headers={"Origin": "https://evil.example"})
        own = f"private-user.{body['user']['id']}"
        # Signed in, alice's own channel would be open to her; from another site, the
        # socket is nobody's, and only a signature opens a private channel.
        refused = await evil.subscribe(own, auth="x:y")
        assert refused["event"] == "pusher:subscription_error"
        assert cookie_of(alice)
    finally:
        await alice.close()
