"""Channel authorization: Pusher's published signature examples, and /broadcasting/auth and
/broadcasting/user-auth for pgcast's signed-in users, with their refusals."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import psycopg
import pytest

from server.transports.pusher.auth import (
    channel_auth,
    user_auth,
    valid_channel_auth,
    valid_user_auth,
)
from tests.conftest import Client, RunningServer
from tests.pusher_support import signed

# The worked examples of Pusher's "Authentication and authorization signatures" reference.
KEY, SECRET = "278d425bdf160c739803", "7ad3773142a6692b25b8"


def test_pushers_published_examples() -> None:
    assert channel_auth(KEY, SECRET, "1234.1234", "private-foobar") == (
        f"{KEY}:58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4"
    )
    assert user_auth(KEY, SECRET, "1234.1234", '{"id":"12345"}') == (
        f"{KEY}:4708d583dada6a56435fb8bc611c77c359a31eebde13337c16ab43aa6de336ba"
    )


def test_signatures_are_checked_over_the_exact_strings() -> None:
    data = '{"user_id":"1"}'
    auth = channel_auth(KEY, SECRET, "1.2", "presence-x", data)
    assert valid_channel_auth(KEY, SECRET, "1.2", "presence-x", data, auth)
    assert not valid_channel_auth(KEY, SECRET, "1.2", "presence-x", '{"user_id": "1"}', auth)
    assert not valid_channel_auth(KEY, SECRET, "1.3", "presence-x", data, auth)
    assert not valid_channel_auth(KEY, SECRET, "1.2", "presence-x", data, None)
    assert not valid_channel_auth(KEY, "other-secret", "1.2", "presence-x", data, auth)
    assert not valid_user_auth(KEY, SECRET, "1.2", data, auth)


async def auth_request(
    client: Client, path: str, fields: dict[str, str], **headers: str
) -> tuple[int, Any]:
    async with client.http.post(
        client.server.url + path, data=fields, headers={"Origin": client.server.origin, **headers}
    ) as response:
        return response.status, await response.json()


@pytest.fixture
async def alice(client_factory: Any) -> tuple[Client, int]:
    client: Client = client_factory()
    body = await client.sign_in("alice@example.com", "Alice")
    return client, int(body["user"]["id"])


async def test_broadcasting_auth_signs_what_the_listen_rule_allows(
    server: RunningServer, alice: tuple[Client, int]
) -> None:
    client, user_id = alice
    status, body = await auth_request(
        client,
        "/broadcasting/auth",
        {"socket_id": "1.2", "channel_name": f"private-user.{user_id}"},
    )
    assert status == 200
    assert body == {"auth": signed(server, f"1.2:private-user.{user_id}")}

    status, body = await auth_request(
        client, "/broadcasting/auth", {"socket_id": "1.2", "channel_name": "presence-room"}
    )
    assert status == 200
    assert json.loads(body["channel_data"]) == {
        "user_id": str(user_id),
        "user_info": {"name": "Alice", "avatar_url": None},
    }
    assert body["auth"] == signed(server, f"1.2:presence-room:{body['channel_data']}")

    status, body = await auth_request(client, "/broadcasting/user-auth", {"socket_id": "1.2"})
    assert status == 200
    assert json.loads(body["user_data"])["id"] == str(user_id)
    assert body["auth"] == signed(server, f"1.2::user::{body['user_data']}")
    assert server.config.pusher.secret.value not in json.dumps(body)


@pytest.mark.parametrize(
    ("fields", "status", "code"),
    [
        ({"socket_id": "nope", "channel_name": "private-x"}, 400, "invalid_socket_id"),
        ({"channel_name": "private-x"}, 400, "invalid_socket_id"),
        ({"socket_id": "1.2", "channel_name": "bad name"}, 400, "invalid_channel"),
        ({"socket_id": "1.2", "channel_name": "messages"}, 400, "public_channel"),
        ({"socket_id": "1.2", "channel_name": "private-team.ops"}, 403, "not_allowed"),
        ({"socket_id": "1.2", "channel_name": "private-user.99999"}, 403, "not_allowed"),
        ({"socket_id": "1.2", "channel_name": "private-encrypted-x"}, 403, "encrypted_channel"),
    ],
)
async def test_broadcasting_auth_refuses_with_a_json_error(
    server: RunningServer, alice: tuple[Client, int], fields: dict[str, str], status: int, code: str
) -> None:
    got, body = await auth_request(alice[0], "/broadcasting/auth", fields)
    assert (got, body["error"]["code"]) == (status, code)
    assert body["error"]["message"]


async def test_broadcasting_auth_needs_a_signed_in_caller_from_our_own_site(
    server: RunningServer, alice: tuple[Client, int], db: psycopg.AsyncConnection[Any]
) -> None:
    client, _ = alice
    fields = {"socket_id": "1.2", "channel_name": "presence-room"}
    status, body = await auth_request(
        client, "/broadcasting/auth", fields, Origin="https://evil.example"
    )
    assert (status, body["error"]["code"]) == (403, "cross_site_request")
    status, body = await auth_request(
        client, "/broadcasting/user-auth", {"socket_id": "1.2"}, Origin="https://evil.example"
    )
    assert status == 403
    async with (
        aiohttp.ClientSession() as anonymous,
        anonymous.post(server.url + "/broadcasting/auth", data=fields) as response,
    ):
        assert response.status == 401
    async with client.http.post(
        server.url + "/broadcasting/auth",
        data="socket_id=1.2",
        headers={"Origin": server.origin, "Content-Type": "text/plain"},
    ) as response:
        assert response.status == 415
