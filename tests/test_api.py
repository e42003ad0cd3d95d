"""REST: posting writes a row and the database broadcasts it; every bad input is refused."""

from __future__ import annotations

from typing import Any

import aiohttp
import psycopg
import pytest

from tests.conftest import Client, RunningServer, count_rows, create_user


async def test_post_reaches_other_sockets_but_not_the_posters_own(
    client_factory: Any, db: psycopg.AsyncConnection[Any]
) -> None:
    alice = client_factory()
    await alice.sign_in("alice@example.com", "Alice")
    bob = client_factory()
    await bob.sign_in("bob@example.com", "Bob")
    alice_socket = await alice.connect()
    bob_socket = await bob.connect()

    response = await alice.post_message("hello bob", socket_id=alice_socket.socket_id)
    assert response.status == 201
    async with alice.http.get(alice.server.url + "/api/messages") as listing:
        posted = (await listing.json())["messages"][-1]

    frame = await bob_socket.next_frame()
    assert frame["event"] == "new-message"
    assert frame["data"]["message"] == posted
    assert posted["content"] == "hello bob"
    assert posted["user"]["name"] == "Alice"
    assert "email" not in posted["user"]

    # Alice's socket skipped her own post: the next thing it sees is a later message.
    await bob.post_message("hello alice", socket_id=bob_socket.socket_id)
    assert (await alice_socket.next_frame())["data"]["message"]["content"] == "hello alice"
    assert await count_rows(db, "messages") == 2


async def test_post_returns_the_message_as_201(client_factory: Any) -> None:
    alice = client_factory()
    me = await alice.sign_in("alice@example.com", "Alice")
    async with alice.http.post(
        alice.server.url + "/api/messages",
        json={"content": "line one\nline two"},
        headers={"Origin": alice.server.origin},
    ) as response:
        assert response.status == 201
        body = await response.json()
    assert body["content"] == "line one\nline two"
    assert body["user"] == me["user"]
    assert body["user_id"] == me["user"]["id"]
    assert set(body) == {"id", "user_id", "content", "created_at", "updated_at", "user"}


async def test_me_shows_the_signed_in_user_and_401_otherwise(client_factory: Any) -> None:
    stranger = client_factory()
    async with stranger.http.get(stranger.server.url + "/api/me") as response:
        assert response.status == 401
        assert (await response.json())["error"]["code"] == "not_signed_in"
    alice = client_factory()
    await alice.sign_in("alice@example.com", "Alice")
    async with alice.http.get(alice.server.url + "/api/me") as response:
        assert response.status == 200
        assert (await response.json())["user"]["name"] == "Alice"


@pytest.mark.parametrize(
    ("body", "content_type", "status", "code"),
    [
        (b"{not json", "application/json", 400, "malformed_json"),
        (b"\xff\xfe{}", "application/json", 400, "malformed_json"),
        (b"[1, 2]", "application/json", 400, "invalid_shape"),
        (b'{"content": 42}', "application/json", 400, "invalid_shape"),
        (b'{"text": "hi"}', "application/json", 400, "invalid_shape"),
        (b"[" * 30_000 + b"]" * 30_000, "application/json", 400, "malformed_json"),
        (b'{"content": "   "}', "application/json", 422, "content_empty"),
        (b'{"content": ""}', "application/json", 422, "content_empty"),
        (b'{"content": "nul \\u0000 byte"}', "application/json", 422, "content_invalid"),
        (b'{"content": "' + b"x" * 10_001 + b'"}', "application/json", 422, "content_too_long"),
        (b'{"content": "hi"}', "text/plain", 415, "unsupported_media_type"),
        (b'{"content": "' + b"x" * 200_000 + b'"}', "application/json", 413, "body_too_large"),
    ],
)
async def test_bad_post_bodies_are_refused_and_nothing_is_written(
    client_factory: Any,
    db: psycopg.AsyncConnection[Any],
    body: bytes,
    content_type: str,
    status: int,
    code: str,
) -> None:
    alice = client_factory()
    await alice.sign_in("alice@example.com", "Alice")
    async with alice.http.post(
        alice.server.url + "/api/messages",
        data=body,
        headers={"Origin": alice.server.origin, "Content-Type": content_type},
    ) as response:
        assert response.status == status
        error = (await response.json())["error"]
    assert error["code"] == code
    assert error["message"]
    assert await count_rows(db, "messages") == 0


async def test_longest_allowed_message_is_accepted(client_factory: Any) -> None:
    alice = client_factory()
    await alice.sign_in("alice@example.com", "Alice")
    response = await alice.post_message("é" * 10_000)
    assert response.status == 201


async def test_post_without_signing_in_is_401_and_writes_nothing(
    client_factory: Any, db: psycopg.AsyncConnection[Any]
) -> None:
    stranger = client_factory()
    response = await stranger.post_message("hello")
    assert response.status == 401
    assert await count_rows(db, "messages") == 0


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "https://evil.example"},
        {"Origin": "null"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Referer": "https://evil.example/page"},
        {},
    ],
)
async def test_cross_site_post_is_403_and_writes_nothing(
    client_factory: Any, db: psycopg.AsyncConnection[Any], headers: dict[str, str]
) -> None:
    alice = client_factory()
    await alice.sign_in("alice@example.com", "Alice")
    async with alice.http.post(
        alice.server.url + "/api/messages", json={"content": "forged"}, headers=headers
    ) as response:
        assert response.status == 403
        assert (await response.json())["error"]["code"] == "cross_site_request"
    assert await count_rows(db, "messages") == 0


async def test_same_origin_by_fetch_metadata_or_referer_is_accepted(client_factory: Any) -> None:
    alice = client_factory()
    await alice.sign_in("alice@example.com", "Alice")
    for headers in ({"Sec-Fetch-Site": "same-origin"}, {"Referer": alice.server.url + "/"}):
        async with alice.http.post(
            alice.server.url + "/api/messages", json={"content": "ok"}, headers=headers
        ) as response:
            assert response.status == 201


async def test_bad_socket_id_header_is_400(
    client_factory: Any, db: psycopg.AsyncConnection[Any]
) -> None:
    alice = client_factory()
    await alice.sign_in("alice@example.com", "Alice")
    response = await alice.post_message("hi", socket_id="not a socket id!")
    assert response.status == 400
    assert await count_rows(db, "messages") == 0


async def test_history_pages_oldest_first_with_next_before(
    client_factory: Any, db: psycopg.AsyncConnection[Any]
) -> None:
    user_id = await create_user(db)
    await db.execute(
        "INSERT INTO messages (user_id, content) "
        "SELECT %s, 'm' || n FROM generate_series(1, 7) AS n",
        [user_id],
    )
    alice = client_factory()
    await alice.sign_in("alice@example.com", "Alice")
    url = alice.server.url + "/api/messages"

    async with alice.http.get(url, params={"limit": "3"}) as response:
        page = await response.json()
    assert [m["content"] for m in page["messages"]] == ["m5", "m6", "m7"]
    async with alice.http.get(
        url, params={"limit": "3", "before": str(page["next_before"])}
    ) as response:
        page = await response.json()
    assert [m["content"] for m in page["messages"]] == ["m2", "m3", "m4"]
    async with alice.http.get(
        url, params={"limit": "3", "before": str(page["next_before"])}
    ) as response:
        page = await response.json()
    assert [m["content"] for m in page["messages"]] == ["m1"]
    assert page["next_before"] is None

    async with alice.http.get(url) as response:
        everything = await response.json()
    assert len(everything["messages"]) == 7


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ({"limit": "0"}, "invalid_limit"),
        ({"limit": "201"}, "invalid_limit"),
        ({"limit": "ten"}, "invalid_limit"),
        ({"limit": "-1"}, "invalid_limit"),
        ({"before": "0"}, "invalid_before"),
        ({"before": "abc"}, "invalid_before"),
        ({"before": "99999999999999999999999"}, "invalid_before"),
        ({"before": "١٢"}, "invalid_before"),
    ],
)
async def test_bad_history_queries_are_400(
    client_factory: Any, query: dict[str, str], code: str
) -> None:
    alice = client_factory()
    await alice.sign_in("alice@example.com", "Alice")
    async with alice.http.get(alice.server.url + "/api/messages", params=query) as response:
        assert response.status == 400
        assert (await response.json())["error"]["code"] == code


async def test_history_needs_sign_in(client_factory: Any) -> None:
    stranger = client_factory()
    async with stranger.http.get(stranger.server.url + "/api/messages") as response:
        assert response.status == 401


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"email": "not-an-email", "name": "X"}, 422),
        ({"email": "a@example.com", "name": ""}, 422),
        ({"email": "a@example.com"}, 400),
        ({"email": "a@example.com", "name": "x" * 101}, 422),
    ],
)
async def test_bad_dev_login_is_refused(
    client_factory: Any, db: psycopg.AsyncConnection[Any], body: dict[str, str], status: int
) -> None:
    client = client_factory()
    async with client.http.post(
        client.server.url + "/auth/dev-login", json=body, headers={"Origin": client.server.origin}
    ) as response:
        assert response.status == status
        assert "error" in await response.json()
    cursor = await db.execute("SELECT count(*) FROM users")
    assert await cursor.fetchone() == (0,)


async def test_dev_login_twice_updates_rather_than_duplicates(
    client_factory: Any, db: psycopg.AsyncConnection[Any]
) -> None:
    first = await client_factory().sign_in("Alice@Example.com", "Alice")
    second = await client_factory().sign_in("alice@example.com", "Alice L.")
    assert first["user"]["id"] == second["user"]["id"]
    cursor = await db.execute("SELECT name FROM users")
    assert await cursor.fetchall() == [("Alice L.",)]


async def test_logout_ends_the_session(client_factory: Any) -> None:
    alice: Client = client_factory()
    await alice.sign_in("alice@example.com", "Alice")
    async with alice.http.post(
        alice.server.url + "/auth/logout",
        headers={"Origin": alice.server.origin},
        allow_redirects=False,
    ) as response:
        assert response.status == 303
        assert response.headers["Location"] == "/"
    async with alice.http.get(alice.server.url + "/api/me") as response:
        assert response.status == 401


async def test_session_cookie_is_httponly_and_samesite(server: RunningServer) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            server.url + "/auth/dev-login",
            json={"email": "a@example.com", "name": "A"},
            headers={"Origin": server.origin},
        ) as response,
    ):
        cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie
    assert "SameSite=Lax" in cookie
    assert "pgcast_session=" in cookie


async def test_tampered_cookie_is_401_not_500(server: RunningServer) -> None:
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(cookie_jar=jar) as http:
        jar.update_cookies({"pgcast_session": "gAAAAABtampered"})
        async with http.get(server.url + "/api/me") as response:
            assert response.status == 401


async def test_health_and_readiness(server: RunningServer) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(server.url + "/healthz") as response:
            assert response.status == 200
        async with http.get(server.url + "/readyz") as response:
            assert response.status == 200
            body = await response.json()
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["listener"] == "listening"


async def test_unknown_api_route_is_json_404(server: RunningServer) -> None:
    async with aiohttp.ClientSession() as http, http.get(server.url + "/api/nope") as response:
        assert response.status == 404
        assert (await response.json())["error"]["code"] == "not_found"
