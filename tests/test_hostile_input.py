"""Input that decodes but is not text (lone surrogates, invalid UTF-8 in headers, non-ASCII
where ASCII is expected, nesting deeper than the parser's stack): each is a clear 4xx with the
JSON error body, never a 500 with a traceback, with or without signing in."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
import pytest
from yarl import URL

from tests.conftest import Client, RunningServer, count_rows, server_config, start_server
from tests.fake_workos import FakeWorkOS
from tests.rawhttp import raw_request

WEBHOOK_SECRET = "whsec_test_secret"


@pytest.fixture(autouse=True)
def no_tracebacks(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    caplog.set_level(logging.INFO)
    yield
    logged = [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert not logged, [r.getMessage() for r in logged]


def cookie_header(client: Client) -> bytes:
    cookies = client.http.cookie_jar.filter_cookies(URL(client.server.url))
    return "; ".join(f"{name}={morsel.value}" for name, morsel in cookies.items()).encode()


def assert_json_error(status: int, body: Any, expected_status: int, code: str) -> None:
    assert status == expected_status, body
    assert body["error"]["code"] == code
    assert body["error"]["message"]


@pytest.mark.parametrize(
    "content",
    [b'"\\ud800"', b'"before \\udfff after"', b'"\\ud83d"', b'"\\udc00\\ud800"'],
)
async def test_a_lone_surrogate_in_message_content_is_422(
    client_factory: Any, db: psycopg.AsyncConnection[Any], content: bytes
) -> None:
    alice = client_factory()
    await alice.sign_in("alice@example.com", "Alice")
    async with alice.http.post(
        alice.server.url + "/api/messages",
        data=b'{"content": ' + content + b"}",
        headers={"Origin": alice.server.origin, "Content-Type": "application/json"},
    ) as response:
        assert_json_error(response.status, await response.json(), 422, "invalid_text")
    assert await count_rows(db, "messages") == 0
    # A real pair is one character and fine.
    assert (await alice.post_message("smile \U0001f600")).status == 201


@pytest.mark.parametrize(
    "body",
    [
        b'{"email": "a\\ud800@example.com", "name": "A"}',
        b'{"email": "a@example.com", "name": "\\udfffA"}',
        b'{"email": "a@example.com", "name": "A", "\\ud800": 1}',
    ],
)
async def test_a_lone_surrogate_in_dev_login_is_refused_without_signing_in(
    server: RunningServer, db: psycopg.AsyncConnection[Any], body: bytes
) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            server.url + "/auth/dev-login",
            data=body,
            headers={"Origin": server.origin, "Content-Type": "application/json"},
        ) as response,
    ):
        assert response.status in (400, 422)
        error = (await response.json())["error"]
    assert error["code"] in ("invalid_text", "invalid_email", "invalid_name")
    assert "surrogate" in error["message"]
    assert await count_rows(db, "users") == 0


@pytest.mark.parametrize(
    "cookie",
    [
        b"pgcast_session=\xff\xfe\xfd",
        b"pgcast_session=gAAAA\xc3\x28",
        b"other=\x80; pgcast_session=x",
    ],
)
async def test_invalid_utf8_in_the_cookie_header_is_no_session(
    server: RunningServer, cookie: bytes
) -> None:
    response = await raw_request(server.url, "GET", "/api/me", [(b"Cookie", cookie)])
    assert_json_error(response.status, response.json(), 401, "not_signed_in")
    # Signing in with such a cookie replaces it with a good one.
    body = b'{"email": "alice@example.com", "name": "Alice"}'
    response = await raw_request(
        server.url,
        "POST",
        "/auth/dev-login",
        [
            (b"Cookie", cookie),
            (b"Origin", server.origin.encode()),
            (b"Content-Type", b"application/json"),
        ],
        body,
    )
    assert response.status == 200, response.body
    assert "pgcast_session=" in response.headers["set-cookie"]


async def test_non_ascii_headers_where_ascii_is_expected_are_refused_cleanly(
    client_factory: Any, server: RunningServer
) -> None:
    alice = client_factory()
    await alice.sign_in("alice@example.com", "Alice")
    signed_in = [(b"Cookie", cookie_header(alice)), (b"Content-Type", b"application/json")]
    cases: list[tuple[list[tuple[bytes, bytes]], int]] = [
        ([(b"Origin", b"http://\xc3\xa9.example"), *signed_in], 403),
        ([(b"Origin", b"\xff"), *signed_in], 403),
        ([(b"Referer", b"http://127.0.0.1/\xff"), *signed_in], 403),
        ([(b"Sec-Fetch-Site", b"same-origin\xff"), *signed_in], 403),
        ([(b"Origin", server.origin.encode()), (b"X-Socket-ID", b"\xc3\xa9"), *signed_in], 400),
        ([(b"Authorization", b"Bearer \xc3\xa9.\xff.x")], 401),
        ([(b"Authorization", b"\xff\xfe")], 401),
    ]
    for headers, status in cases:
        response = await raw_request(
            server.url, "POST", "/api/messages", headers, b'{"content": "hi"}'
        )
        assert response.status == status, (headers, response.body)
        assert response.json()["error"]["message"]


@pytest.fixture
async def fake() -> AsyncIterator[FakeWorkOS]:
    async with FakeWorkOS() as running:
        yield running


@pytest.fixture
async def workos_server(
    database_url: str, tmp_path: Path, unused_tcp_port: int, fake: FakeWorkOS
) -> AsyncIterator[RunningServer]:
    config = server_config(
        database_url,
        tmp_path,
        unused_tcp_port,
        **fake.pgcast_env(WORKOS_WEBHOOK_SECRET=WEBHOOK_SECRET),
    )
    running = await start_server(config)
    yield running
    await running.runner.cleanup()


@pytest.mark.parametrize(
    "signature",
    [
        b"t={now}, v1=\xc3\xa9\xc3\xa9",
        "t={now}, v1=é".encode(),
        b"t={now}, v1=\xff",
        b"t=\xd9\xa1\xd9\xa2, v1=00",
        b"t=\xff, v1=\xfe",
        b"t=" + b"9" * 400 + b", v1=00",
        b"t=-" + b"9" * 400 + b", v1=00",
    ],
)
async def test_an_unreadable_webhook_signature_is_401(
    workos_server: RunningServer, signature: bytes
) -> None:
    # A current timestamp, so the signature itself is what gets looked at.
    signature = signature.replace(b"{now}", str(int(time.time() * 1000)).encode())
    body = b'{"event": "user.deleted", "data": {"id": "user_01"}}'
    response = await raw_request(
        workos_server.url,
        "POST",
        "/webhooks/workos",
        [(b"Content-Type", b"application/json"), (b"WorkOS-Signature", signature)],
        body,
    )
    assert_json_error(response.status, response.json(), 401, "invalid_signature")


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 30_000 + b"]" * 30_000,
        b'{"event": "user.updated", "data": ' + b'{"a": ' * 10_000 + b"1" + b"}" * 10_001,
    ],
)
async def test_a_signed_webhook_nested_too_deep_is_400(
    workos_server: RunningServer, fake: FakeWorkOS, body: bytes
) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            workos_server.url + "/webhooks/workos",
            data=body,
            headers=fake.webhook_headers(body, secret=WEBHOOK_SECRET),
        ) as response,
    ):
        assert_json_error(response.status, await response.json(), 400, "invalid_event")


async def test_a_signed_webhook_with_a_lone_surrogate_is_400(
    workos_server: RunningServer, fake: FakeWorkOS, db: psycopg.AsyncConnection[Any]
) -> None:
    user = fake.add_user("grace@example.com", "Grace")
    event = json.loads(fake.user_event("user.updated", dict(user, first_name="\ud800")))
    body = json.dumps(event).encode()
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            workos_server.url + "/webhooks/workos",
            data=body,
            headers=fake.webhook_headers(body, secret=WEBHOOK_SECRET),
        ) as response,
    ):
        assert_json_error(response.status, await response.json(), 400, "invalid_event")


@pytest.mark.parametrize(
    "query",
    [
        b"/auth/callback?code=x&state=%C3%A9",
        b"/auth/callback?code=%FF&state=%FF",
        b"/auth/login?return_to=/%FF",
        b"/auth/login?return_to=/%ED%A0%80",
    ],
)
async def test_sign_in_urls_with_non_ascii_or_undecodable_bytes_are_not_500(
    workos_server: RunningServer, query: bytes
) -> None:
    # A login in progress, so the callback gets as far as comparing the state.
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        async with http.get(workos_server.url + "/auth/login", allow_redirects=False) as r:
            assert r.status == 302
        cookies = http.cookie_jar.filter_cookies(URL(workos_server.url))
        cookie = "; ".join(f"{k}={v.value}" for k, v in cookies.items()).encode()
    response = await raw_request(workos_server.url, "GET", query, [(b"Cookie", cookie)])
    if query.startswith(b"/auth/login"):
        assert response.status == 302, response.body
        assert response.headers["location"].startswith(fake_base(workos_server))
    else:
        assert_json_error(response.status, response.json(), 400, "invalid_login_state")


def fake_base(server: RunningServer) -> str:
    base = server.config.workos_base_url
    assert base is not None
    return base
