"""Sign-in with WorkOS AuthKit, user sync by webhook, revocable sessions and bearer tokens.

The real `workos` SDK talks to a fake WorkOS server on 127.0.0.1 (tests/fake_workos.py)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import psycopg
import pytest
from cryptography.fernet import Fernet
from yarl import URL

from server.config import ConfigError, load_config
from tests.conftest import Client, RunningServer, count_rows, server_config, start_server
from tests.fake_workos import FakeWorkOS

WEBHOOK_SECRET = "whsec_test_secret"


@pytest.fixture
async def fake() -> AsyncIterator[FakeWorkOS]:
    async with FakeWorkOS() as running:
        # pgcast retries a failing WorkOS once; answer that retry at once.
        running.fail_authenticate_retry_after = "0"
        yield running


@pytest.fixture
async def server(
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


async def sign_in_with_workos(client: Client, return_to: str | None = None) -> str:
    """Follow /auth/login -> WorkOS authorize -> /auth/callback; return where it landed."""
    params = {} if return_to is None else {"return_to": return_to}
    async with client.http.get(
        client.server.url + "/auth/login", params=params, allow_redirects=False
    ) as response:
        assert response.status == 302
        authorize_url = response.headers["Location"]
    async with client.http.get(authorize_url, allow_redirects=False) as response:
        assert response.status == 302
        callback_url = response.headers["Location"]
    assert callback_url.startswith(client.server.url + "/auth/callback?")
    async with client.http.get(callback_url, allow_redirects=False) as response:
        assert response.status == 302, await response.text()
        return response.headers["Location"]


async def me(client: Client, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    async with client.http.get(client.server.url + "/api/me", headers=headers) as response:
        return response.status, await response.json()


async def test_workos_sign_in_creates_the_user_and_a_second_sign_in_updates_it(
    client_factory: Any, fake: FakeWorkOS, db: psycopg.AsyncConnection[Any]
) -> None:
    user = fake.add_user(
        "grace@example.com", "Grace", "Hopper", profile_picture_url="https://img.example/g.png"
    )
    browser = client_factory()
    assert await sign_in_with_workos(browser) == "/"
    status, body = await me(browser)
    assert status == 200
    assert body["user"]["name"] == "Grace Hopper"
    assert body["user"]["avatar_url"] == "https://img.example/g.png"

    fake.update_user(user["id"], first_name="Rear Admiral Grace")
    await sign_in_with_workos(client_factory())
    cursor = await db.execute("SELECT workos_id, email, name FROM users")
    assert await cursor.fetchall() == [
        (user["id"], "grace@example.com", "Rear Admiral Grace Hopper")
    ]


async def test_name_falls_back_to_the_email_when_workos_has_none(
    client_factory: Any, fake: FakeWorkOS
) -> None:
    fake.add_user("anon@example.com")
    browser = client_factory()
    await sign_in_with_workos(browser)
    assert (await me(browser))[1]["user"]["name"] == "anon"


@pytest.mark.parametrize(
    "return_to",
    ["//evil.com", "https://evil.com", "/\\evil.com", "http:/evil.com", "evil.com", "/\r\nX: y"],
)
async def test_return_to_that_could_leave_the_site_lands_on_root(
    client_factory: Any, fake: FakeWorkOS, return_to: str
) -> None:
    fake.add_user("grace@example.com", "Grace")
    landed = await sign_in_with_workos(client_factory(), return_to=return_to)
    assert landed == "/"


async def test_return_to_a_local_path_is_kept(client_factory: Any, fake: FakeWorkOS) -> None:
    fake.add_user("grace@example.com", "Grace")
    assert await sign_in_with_workos(client_factory(), return_to="/?room=ops") == "/?room=ops"


async def start_login(client: Client) -> tuple[str, str]:
    """Begin a sign-in and return the callback's code and state, without calling back."""
    async with client.http.get(client.server.url + "/auth/login", allow_redirects=False) as r:
        authorize_url = r.headers["Location"]
    async with client.http.get(authorize_url, allow_redirects=False) as r:
        query = parse_qs(urlsplit(r.headers["Location"]).query)
    return query["code"][0], query["state"][0]


@pytest.mark.parametrize(
    ("case", "status", "code"),
    [
        ("wrong_state", 400, "invalid_login_state"),
        ("no_state", 400, "invalid_login_state"),
        ("no_code", 400, "invalid_login_state"),
        ("other_browser", 400, "invalid_login_state"),
        ("bad_code", 400, "invalid_login_code"),
        ("workos_500", 502, "workos_unavailable"),
        ("refused", 400, "login_refused"),
    ],
)
async def test_bad_callbacks_start_no_session_and_create_no_user(
    client_factory: Any,
    fake: FakeWorkOS,
    db: psycopg.AsyncConnection[Any],
    case: str,
    status: int,
    code: str,
) -> None:
    fake.add_user("grace@example.com", "Grace")
    browser = client_factory()
    good_code, state = await start_login(browser)
    params = {"code": good_code, "state": state}
    if case == "wrong_state":
        params["state"] = "not-the-state"
    elif case == "no_state":
        del params["state"]
    elif case == "no_code":
        del params["code"]
    elif case == "other_browser":
        browser = client_factory()  # has no login in progress
    elif case == "bad_code":
        params["code"] = "01FAKECODE"
    elif case == "workos_500":
        fake.fail_authenticate_with_status = 500
    elif case == "refused":
        params = {"error": "access_denied", "state": state}
    async with browser.http.get(
        browser.server.url + "/auth/callback", params=params, allow_redirects=False
    ) as response:
        assert response.status == status
        assert (await response.json())["error"]["code"] == code
    assert (await me(browser))[0] == 401
    assert await count_rows(db, "users") == 0


async def test_a_used_state_cannot_be_used_again(
    client_factory: Any, fake: FakeWorkOS, db: psycopg.AsyncConnection[Any]
) -> None:
    fake.add_user("grace@example.com", "Grace")
    browser = client_factory()
    code, state = await start_login(browser)
    url = browser.server.url + "/auth/callback"
    params = {"code": code, "state": state}
    async with browser.http.get(url, params=params, allow_redirects=False) as response:
        assert response.status == 302
    async with browser.http.post(
        browser.server.url + "/auth/logout",
        headers={"Origin": browser.server.origin},
        allow_redirects=False,
    ):
        pass
    async with browser.http.get(url, params=params, allow_redirects=False) as response:
        assert response.status == 400
    assert (await me(browser))[0] == 401


async def test_logout_revokes_the_cookie_and_signs_out_of_workos(
    client_factory: Any, fake: FakeWorkOS
) -> None:
    fake.add_user("grace@example.com", "Grace")
    browser = client_factory()
    await sign_in_with_workos(browser)
    socket = await browser.connect()
    old_cookie = browser.http.cookie_jar.filter_cookies(URL(browser.server.url))["pgcast_session"]

    async with browser.http.post(
        browser.server.url + "/auth/logout",
        headers={"Origin": browser.server.origin},
        allow_redirects=False,
    ) as response:
        assert response.status == 303
        location = response.headers["Location"]
    assert location.startswith(fake.base_url + "user_management/sessions/logout?")
    assert parse_qs(urlsplit(location).query)["session_id"][0] in fake.sessions

    code, reason = await socket.expect_close()
    assert code == 4401
    assert reason == "signed out"

    # Replaying the old cookie value gets nowhere: the session row is revoked.
    replay = client_factory()
    replay.http.cookie_jar.update_cookies({"pgcast_session": old_cookie.value})
    assert (await me(replay))[0] == 401
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await replay.connect()
    assert refused.value.status == 401


async def test_cookie_from_another_key_is_401(
    client_factory: Any,
    fake: FakeWorkOS,
    database_url: str,
    tmp_path: Path,
    unused_tcp_port_factory: Any,
) -> None:
    fake.add_user("grace@example.com", "Grace")
    browser = client_factory()
    await sign_in_with_workos(browser)
    cookie = browser.http.cookie_jar.filter_cookies(URL(browser.server.url))["pgcast_session"]
    other = await start_server(
        server_config(
            database_url,
            tmp_path,
            unused_tcp_port_factory(),
            PGCAST_SESSION_KEY=Fernet.generate_key().decode(),
        )
    )
    try:
        stranger = Client(other.endpoint)
        stranger.http.cookie_jar.update_cookies({"pgcast_session": cookie.value})
        assert (await me(stranger))[0] == 401
        await stranger.close()
    finally:
        await other.runner.cleanup()


async def post_webhook(
    server: RunningServer, body: bytes, signature: str | None
) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json"}
    if signature is not None:
        headers["WorkOS-Signature"] = signature
    async with (
        aiohttp.ClientSession() as http,
        http.post(server.url + "/webhooks/workos", data=body, headers=headers) as response,
    ):
        return response.status, await response.json()


async def test_webhook_user_updated_renames_and_replays_are_harmless(
    client_factory: Any, fake: FakeWorkOS, server: RunningServer, db: psycopg.AsyncConnection[Any]
) -> None:
    user = fake.add_user("grace@example.com", "Grace")
    browser = client_factory()
    await sign_in_with_workos(browser)
    old = fake.user_event("user.updated", dict(user))
    renamed = fake.update_user(user["id"], first_name="Amazing", last_name="Grace")
    new = fake.user_event("user.updated", renamed)

    assert await post_webhook(server, new, fake.sign_webhook(new, secret=WEBHOOK_SECRET)) == (
        200,
        {"received": True},
    )
    assert (await me(browser))[1]["user"]["name"] == "Amazing Grace"
    # A late or repeated delivery of the older event does not undo the rename.
    for body in (old, new):
        status, _ = await post_webhook(server, body, fake.sign_webhook(body, secret=WEBHOOK_SECRET))
        assert status == 200
    assert (await me(browser))[1]["user"]["name"] == "Amazing Grace"

    response = await browser.post_message("posted after the rename")
    assert response.status == 201


async def test_webhook_user_deleted_removes_user_messages_sockets_and_session(
    client_factory: Any, fake: FakeWorkOS, server: RunningServer, db: psycopg.AsyncConnection[Any]
) -> None:
    grace = fake.add_user("grace@example.com", "Grace")
    fake.add_user("alan@example.com", "Alan")
    grace_browser = client_factory()
    await sign_in_with_workos(grace_browser)
    fake.next_login_user = next(uid for uid in fake.users if uid != grace["id"])
    alan_browser = client_factory()
    await sign_in_with_workos(alan_browser)
    grace_socket = await grace_browser.connect()
    alan_socket = await alan_browser.connect()
    response = await grace_browser.post_message("soon gone")
    assert response.status == 201
    posted = (await alan_socket.next_frame())["data"]["message"]
    await grace_socket.next_frame()

    body = fake.user_event("user.deleted", grace)
    status, _ = await post_webhook(server, body, fake.sign_webhook(body, secret=WEBHOOK_SECRET))
    assert status == 200

    deleted = await alan_socket.next_frame()
    assert deleted["event"] == "message-deleted"
    assert deleted["data"] == {"id": posted["id"]}
    seen_by_grace = []
    while True:
        message = await grace_socket.ws.receive(timeout=10)
        if message.type != aiohttp.WSMsgType.TEXT:
            break
        seen_by_grace.append(message.json()["event"])
    assert message.type == aiohttp.WSMsgType.CLOSE
    assert message.data == 4401
    assert set(seen_by_grace) <= {"message-deleted"}
    assert (await me(grace_browser))[0] == 401
    cursor = await db.execute("SELECT email FROM users")
    assert await cursor.fetchall() == [("alan@example.com",)]
    assert await count_rows(db, "messages") == 0

    # Replaying the deletion is harmless.
    status, _ = await post_webhook(server, body, fake.sign_webhook(body, secret=WEBHOOK_SECRET))
    assert status == 200


@pytest.mark.parametrize("case", ["bad_signature", "no_signature", "stale", "future", "tampered"])
async def test_webhook_with_a_bad_signature_is_401_and_changes_nothing(
    client_factory: Any,
    fake: FakeWorkOS,
    server: RunningServer,
    db: psycopg.AsyncConnection[Any],
    case: str,
) -> None:
    user = fake.add_user("grace@example.com", "Grace")
    await sign_in_with_workos(client_factory())
    body = fake.user_event("user.deleted", user)
    now_ms = int(time.time() * 1000)
    signature: str | None = {
        "bad_signature": fake.sign_webhook(body, secret="whsec_wrong"),
        "no_signature": None,
        "stale": fake.sign_webhook(body, secret=WEBHOOK_SECRET, timestamp_ms=now_ms - 600_000),
        "future": fake.sign_webhook(body, secret=WEBHOOK_SECRET, timestamp_ms=now_ms + 600_000),
        "tampered": fake.sign_webhook(body, secret=WEBHOOK_SECRET),
    }[case]
    if case == "tampered":
        body = body.replace(b"user.deleted", b"user.updated")
    status, error = await post_webhook(server, body, signature)
    assert status == 401
    assert error["error"]["code"] == "invalid_signature"
    assert await count_rows(db, "users") == 1


async def test_webhook_with_a_signed_but_malformed_body_is_400(
    client_factory: Any, fake: FakeWorkOS, server: RunningServer, db: psycopg.AsyncConnection[Any]
) -> None:
    fake.add_user("grace@example.com", "Grace")
    await sign_in_with_workos(client_factory())
    for body in (b"{not json", b'{"event": "user.deleted"}', b"[]"):
        status, error = await post_webhook(
            server, body, fake.sign_webhook(body, secret=WEBHOOK_SECRET)
        )
        assert status == 400
        assert error["error"]["code"] == "invalid_event"
    assert await count_rows(db, "users") == 1


async def test_webhook_of_an_unknown_event_type_is_acknowledged_and_ignored(
    fake: FakeWorkOS, server: RunningServer
) -> None:
    body = (
        b'{"object":"event","id":"event_01","event":"organization.created",'
        b'"data":{"id":"org_01"},"created_at":"2026-01-01T00:00:00.000Z"}'
    )
    status, _ = await post_webhook(server, body, fake.sign_webhook(body, secret=WEBHOOK_SECRET))
    assert status == 200


async def test_bearer_token_works_for_api_and_websocket_without_csrf(
    client_factory: Any, fake: FakeWorkOS, db: psycopg.AsyncConnection[Any]
) -> None:
    user = fake.add_user("grace@example.com", "Grace")
    await sign_in_with_workos(client_factory())
    token = fake.issue_access_token(user["id"])
    app = client_factory()  # no cookie, no Origin: a script
    headers = {"Authorization": f"Bearer {token}"}

    assert (await me(app, headers))[1]["user"]["name"] == "Grace"
    ws = await app.http.ws_connect(app.server.ws_url, headers=headers)
    connected = await ws.receive_json(timeout=10)
    assert connected["event"] == "connected"
    async with app.http.post(
        app.server.url + "/api/messages", json={"content": "from a script"}, headers=headers
    ) as response:
        assert response.status == 201
    frame = await ws.receive_json(timeout=10)
    assert frame["data"]["message"]["content"] == "from a script"
    await ws.close()
    assert await count_rows(db, "messages") == 1


@pytest.mark.parametrize(
    "kind",
    [
        "expired",
        "foreign_key",
        "foreign_kid",
        "unsigned",
        "garbage",
        "wrong_issuer",
        "other_client",
        "other_clients",
        "no_audience",
        "other_client_issuer",
        "unknown_user",
        "not_bearer",
    ],
)
async def test_bad_bearer_tokens_are_401(
    client_factory: Any, fake: FakeWorkOS, db: psycopg.AsyncConnection[Any], kind: str
) -> None:
    user = fake.add_user("grace@example.com", "Grace")
    await sign_in_with_workos(client_factory())
    token = {
        "expired": lambda: fake.expired_token(user["id"]),
        "foreign_key": lambda: fake.foreign_key_token(user["id"]),
        "foreign_kid": lambda: fake.foreign_key_token(user["id"], same_kid=False),
        "unsigned": lambda: fake.unsigned_token(user["id"]),
        "garbage": lambda: "not.a.token",
        "wrong_issuer": lambda: fake.issue_access_token(
            user["id"], extra_claims={"iss": "https://evil.example"}
        ),
        # Signed by the same WorkOS environment's key, but for another of its applications.
        "other_client": lambda: fake.issue_access_token(
            user["id"], extra_claims={"aud": "client_01OTHER"}
        ),
        "other_clients": lambda: fake.issue_access_token(
            user["id"], extra_claims={"aud": ["client_01OTHER", "client_01THIRD"]}
        ),
        "no_audience": lambda: fake.issue_access_token(user["id"], extra_claims={"aud": None}),
        "other_client_issuer": lambda: fake.issue_access_token(
            user["id"],
            extra_claims={"iss": f"{fake.base_url}user_management/client_01OTHER", "aud": None},
        ),
        "unknown_user": lambda: fake.issue_access_token("user_01NOBODY"),
        "not_bearer": lambda: "x",
    }[kind]()
    header = f"Basic {token}" if kind == "not_bearer" else f"Bearer {token}"
    app = client_factory()
    status, body = await me(app, {"Authorization": header})
    assert status == 401
    assert body["error"]["code"] in ("invalid_token", "unknown_user")
    async with app.http.post(
        app.server.url + "/api/messages",
        json={"content": "forged"},
        headers={"Authorization": header},
    ) as response:
        assert response.status == 401
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await app.http.ws_connect(app.server.ws_url, headers={"Authorization": header})
    assert refused.value.status == 401
    assert await count_rows(db, "messages") == 0


@pytest.mark.parametrize(
    "claims",
    [
        {"aud": ["client_01OTHER", "{client_id}"]},
        {"iss": "{client_issuer}", "aud": None},
        {"iss": "{client_issuer}", "aud": "{client_id}"},
        {"iss": "{base_url}"},
    ],
)
async def test_bearer_tokens_for_this_client_in_each_form_workos_issues_are_accepted(
    client_factory: Any, fake: FakeWorkOS, claims: dict[str, Any]
) -> None:
    user = fake.add_user("grace@example.com", "Grace")
    await sign_in_with_workos(client_factory())
    names = {
        "client_id": fake.client_id,
        "client_issuer": fake.client_issuer,
        "base_url": fake.base_url,
    }

    def fill(value: Any) -> Any:
        if isinstance(value, list):
            return [fill(item) for item in value]
        return value.format(**names) if isinstance(value, str) else value

    token = fake.issue_access_token(
        user["id"], extra_claims={name: fill(value) for name, value in claims.items()}
    )
    status, body = await me(client_factory(), {"Authorization": f"Bearer {token}"})
    assert status == 200, body


async def test_config_shows_workos_sign_in(client_factory: Any) -> None:
    app = client_factory()
    async with app.http.get(app.server.url + "/api/config") as response:
        body = await response.json()
    assert body["auth"] == {"workos": True, "dev_login": False}
    async with app.http.post(
        app.server.url + "/auth/dev-login",
        json={"email": "a@example.com", "name": "A"},
        headers={"Origin": app.server.origin},
    ) as response:
        assert response.status == 404


@pytest.mark.parametrize(
    "env",
    [
        {"WORKOS_API_KEY": "sk_test_x"},
        {"WORKOS_CLIENT_ID": "client_x"},
    ],
)
def test_half_configured_workos_refuses_to_start(tmp_path: Path, env: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match="WORKOS_API_KEY and WORKOS_CLIENT_ID"):
        load_config({"PGCAST_DATA_DIR": str(tmp_path), **env})


async def test_a_failed_callback_spends_the_state_too(
    client_factory: Any, fake: FakeWorkOS, db: psycopg.AsyncConnection[Any]
) -> None:
    fake.add_user("grace@example.com", "Grace")
    browser = client_factory()
    good_code, state = await start_login(browser)
    url = browser.server.url + "/auth/callback"
    bad = {"code": "01FAKECODE", "state": state}
    async with browser.http.get(url, params=bad, allow_redirects=False) as response:
        assert response.status == 400
    # The same state with the good code is now refused: each state works once.
    good = {"code": good_code, "state": state}
    async with browser.http.get(url, params=good, allow_redirects=False) as response:
        assert response.status == 400
        assert (await response.json())["error"]["code"] == "invalid_login_state"
    assert await count_rows(db, "users") == 0
