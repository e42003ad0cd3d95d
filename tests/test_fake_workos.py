"""The fake WorkOS server driven by the real ``workos`` SDK (10.8.0), offline.

The sync ``WorkOSClient`` does blocking HTTP (httpx2) and PyJWT's ``PyJWKClient`` uses blocking
urllib, while the fake serves from this test's event loop: every such call goes through
``asyncio.to_thread``.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import jwt
import pytest
import pytest_asyncio
import workos
from cryptography.fernet import Fernet
from workos._base_client import MAX_RETRIES, _BaseWorkOSClient
from workos.common.models import (
    AuthenticateResponseAuthenticationMethod,
    User,
    UserDeleted,
    UserUpdated,
)
from workos.session import (
    AuthenticateWithSessionCookieSuccessResponse,
    RefreshWithSessionCookieSuccessResponse,
    seal_session_from_auth_response,
)
from workos.user_management.models import AuthenticateResponse

from tests.fake_workos import FakeWorkOS

pytestmark = pytest.mark.asyncio

CLIENT_ID = "client_01HZX7Q3RSJ6T2N8V4W5Y9A0BC"
API_KEY = "sk_test_fake_0123456789abcdef"
REDIRECT_URI = "http://localhost:8080/auth/callback"
WEBHOOK_SECRET = "whsec_fake_secret"
AUTHENTICATE = "/user_management/authenticate"


@pytest_asyncio.fixture
async def fake() -> AsyncIterator[FakeWorkOS]:
    async with FakeWorkOS(client_id=CLIENT_ID, api_key=API_KEY) as server:
        yield server


@pytest.fixture
def sdk(fake: FakeWorkOS) -> Iterator[workos.WorkOSClient]:
    client = workos.WorkOSClient(api_key=API_KEY, client_id=CLIENT_ID, base_url=fake.base_url)
    try:
        yield client
    finally:
        client.close()


async def follow_authorize(url: str) -> aiohttp.ClientResponse:
    """GET an authorize/logout URL like a browser would, without following the redirect."""
    async with aiohttp.ClientSession() as http, http.get(url, allow_redirects=False) as resp:
        await resp.read()
        return resp


async def sign_in(sdk: workos.WorkOSClient, *, state: str = "state-123") -> str:
    """Run the AuthKit redirect and return the one-time code the callback receives."""
    url = sdk.user_management.get_authorization_url(
        provider="authkit", redirect_uri=REDIRECT_URI, state=state
    )
    resp = await follow_authorize(url)
    assert resp.status == 302, resp.status
    query = parse_qs(urlsplit(resp.headers["Location"]).query)
    assert query["state"] == [state]
    return query["code"][0]


async def authenticate(sdk: workos.WorkOSClient, code: str) -> AuthenticateResponse:
    return await asyncio.to_thread(sdk.user_management.authenticate_with_code, code=code)


def verify_access_token(fake: FakeWorkOS, token: str) -> dict[str, Any]:
    """Bearer-token verification as a server would do it (blocking: run in a thread)."""
    jwks_client = jwt.PyJWKClient(fake.base_url + "sso/jwks/" + CLIENT_ID)
    signing_key = jwks_client.get_signing_key_from_jwt(token)
    claims: dict[str, Any] = jwt.decode(
        token,
        signing_key.key,
        algorithms=["RS256"],
        issuer=fake.issuer,
        audience=CLIENT_ID,
        options={"require": ["exp", "iat", "iss", "sub", "sid"]},
    )
    return claims


# --------------------------------------------------------------------------- login


async def test_base_url_is_loopback_with_trailing_slash(
    fake: FakeWorkOS, sdk: workos.WorkOSClient
) -> None:
    parts = urlsplit(fake.base_url)
    assert (parts.scheme, parts.hostname, parts.path) == ("http", "127.0.0.1", "/")
    assert parts.port not in (None, 0)
    assert sdk.base_url == fake.base_url
    assert fake.issuer == fake.base_url.rstrip("/")


async def test_authorization_url_redirects_back_with_code_and_same_state(
    fake: FakeWorkOS, sdk: workos.WorkOSClient
) -> None:
    fake.add_user("ada@example.com", "Ada", "Lovelace")
    url = sdk.user_management.get_authorization_url(
        provider="authkit", redirect_uri=REDIRECT_URI, state="st-äöü/+="
    )
    assert url.startswith(fake.base_url + "user_management/authorize?")
    resp = await follow_authorize(url)
    assert resp.status == 302
    location = urlsplit(resp.headers["Location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == REDIRECT_URI
    query = parse_qs(location.query)
    assert query["state"] == ["st-äöü/+="]
    assert len(query["code"]) == 1
    assert query["code"][0]
    (request,) = fake.find_requests("GET", "/user_management/authorize")
    assert request.query["client_id"] == CLIENT_ID
    assert request.query["response_type"] == "code"
    assert request.query["provider"] == "authkit"


async def test_authorize_rejects_unknown_client_id(
    fake: FakeWorkOS, sdk: workos.WorkOSClient
) -> None:
    fake.add_user("ada@example.com")
    url = sdk.user_management.get_authorization_url(
        provider="authkit", redirect_uri=REDIRECT_URI, state="s", client_id="client_UNKNOWN"
    )
    resp = await follow_authorize(url)
    assert resp.status == 400
    assert "Location" not in resp.headers


async def test_authorize_can_report_a_failed_sign_in(
    fake: FakeWorkOS, sdk: workos.WorkOSClient
) -> None:
    fake.add_user("ada@example.com")
    fake.next_login_error = "access_denied"
    url = sdk.user_management.get_authorization_url(
        provider="authkit", redirect_uri=REDIRECT_URI, state="s1"
    )
    query = parse_qs(urlsplit((await follow_authorize(url)).headers["Location"]).query)
    assert query["error"] == ["access_denied"]
    assert query["state"] == ["s1"]
    assert "code" not in query
    assert fake.next_login_error is None  # one-shot


async def test_authenticate_with_code_returns_user_and_tokens(
    fake: FakeWorkOS, sdk: workos.WorkOSClient
) -> None:
    user = fake.add_user("ada@example.com", "Ada", "Lovelace", "https://img.example/ada.png")
    result = await authenticate(sdk, await sign_in(sdk))

    assert isinstance(result, AuthenticateResponse)
    assert isinstance(result.user, User)
    assert result.user.id == user["id"]
    assert result.user.id.startswith("user_")
    assert result.user.email == "ada@example.com"
    assert (result.user.first_name, result.user.last_name) == ("Ada", "Lovelace")
    assert result.user.profile_picture_url == "https://img.example/ada.png"
    assert result.user.last_sign_in_at is not None
    assert result.organization_id is None
    assert result.impersonator is None
    assert result.authentication_method is AuthenticateResponseAuthenticationMethod.PASSWORD
    assert result.refresh_token
    claims = await asyncio.to_thread(verify_access_token, fake, result.access_token)
    assert claims["sub"] == user["id"]

    request = fake.find_requests("POST", AUTHENTICATE)[0]
    assert request.json["grant_type"] == "authorization_code"
    assert request.json["client_id"] == CLIENT_ID
    assert request.json["client_secret"] == API_KEY
    assert request.header("Authorization") == f"Bearer {API_KEY}"
    assert request.header("Idempotency-Key")


async def test_next_login_user_chooses_who_signs_in(
    fake: FakeWorkOS, sdk: workos.WorkOSClient
) -> None:
    fake.add_user("first@example.com")
    second = fake.add_user("second@example.com")
    fake.next_login_user = second["id"]
    result = await authenticate(sdk, await sign_in(sdk))
    assert result.user.id == second["id"]


async def test_bad_code_is_invalid_grant_without_retries(
    fake: FakeWorkOS, sdk: workos.WorkOSClient
) -> None:
    with pytest.raises(workos.BadRequestError) as caught:
        await authenticate(sdk, "01HZZZZZZZZZZZZZZZZZZZZZZZ")
    assert caught.value.status_code == 400
    assert caught.value.error == "invalid_grant"
    assert caught.value.error_description
    assert len(fake.find_requests("POST", AUTHENTICATE)) == 1


async def test_reused_code_fails(fake: FakeWorkOS, sdk: workos.WorkOSClient) -> None:
    fake.add_user("ada@example.com")
    code = await sign_in(sdk)
    await authenticate(sdk, code)
    with pytest.raises(workos.BadRequestError) as caught:
        await authenticate(sdk, code)
    assert caught.value.error == "invalid_grant"


async def test_wrong_client_secret_is_401_without_retries(fake: FakeWorkOS) -> None:
    fake.add_user("ada@example.com")
    with workos.WorkOSClient(
        api_key="sk_test_wrong", client_id=CLIENT_ID, base_url=fake.base_url
    ) as wrong:
        code = await sign_in(wrong)
        with pytest.raises(workos.AuthenticationError) as caught:
            await authenticate(wrong, code)
    assert caught.value.status_code == 401
    assert caught.value.error == "invalid_client"
    assert len(fake.find_requests("POST", AUTHENTICATE)) == 1


async def test_pkce_code_needs_the_matching_verifier(
    fake: FakeWorkOS, sdk: workos.WorkOSClient
) -> None:
    fake.add_user("ada@example.com")
    for verifier_ok in (False, True):
        pkce = sdk.user_management.get_authorization_url_with_pkce(redirect_uri=REDIRECT_URI)
        resp = await follow_authorize(pkce["url"] + "&provider=authkit")
        query = parse_qs(urlsplit(resp.headers["Location"]).query)
        assert query["state"] == [pkce["state"]]
        verifier = pkce["code_verifier"] if verifier_ok else "x" * 43
        call = asyncio.to_thread(
            sdk.user_management.authenticate_with_code_pkce,
            code=query["code"][0],
            code_verifier=verifier,
        )
        if verifier_ok:
            assert (await call).user.email == "ada@example.com"
        else:
            with pytest.raises(workos.BadRequestError):
                await call


async def test_async_client_covers_authenticate_with_code(fake: FakeWorkOS) -> None:
    user = fake.add_user("ada@example.com")
    async with workos.AsyncWorkOSClient(
        api_key=API_KEY, client_id=CLIENT_ID, base_url=fake.base_url
    ) as client:
        url = client.user_management.get_authorization_url(  # sync: builds a URL only
            provider="authkit", redirect_uri=REDIRECT_URI, state="s"
        )
        code = parse_qs(urlsplit((await follow_authorize(url)).headers["Location"]).query)
        result = await client.user_management.authenticate_with_code(code=code["code"][0])
        fetched = await client.user_management.get_user(user["id"])
    assert result.user.id == user["id"] == fetched.id


# ------------------------------------------------------------------ upstream failures


async def test_5xx_is_retried_max_retries_times_then_raises_server_error(
    fake: FakeWorkOS, sdk: workos.WorkOSClient
) -> None:
    fake.fail_authenticate_with_status = 500
    fake.fail_authenticate_retry_after = "0"  # the SDK honours Retry-After: no backoff wait
    with pytest.raises(workos.ServerError) as caught:
        await authenticate(sdk, "01HZZZZZZZZZZZZZZZZZZZZZZZ")
    assert caught.value.status_code == 500
    assert len(fake.find_requests("POST", AUTHENTICATE)) == MAX_RETRIES + 1 == 4


async def test_5xx_backoff_is_exponential_with_jitter(
    fake: FakeWorkOS, sdk: workos.WorkOSClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without Retry-After the SDK sleeps 1s, 2s, 4s (each x0.5-1.5 jitter) between tries.
    The computed delays are recorded and replaced by 0 so the test does not wait."""
    original = _BaseWorkOSClient._calculate_retry_delay
    delays: list[float] = []

    def record(attempt: int, retry_after: str | None = None) -> float:
        delays.append(original(attempt, retry_after))
        return 0.0

    monkeypatch.setattr(_BaseWorkOSClient, "_calculate_retry_delay", staticmethod(record))
    fake.fail_authenticate_with_status = 503
    with pytest.raises(workos.ServerError):
        await authenticate(sdk, "01HZZZZZZZZZZZZZZZZZZZZZZZ")
    assert len(delays) == 3
    for delay, base in zip(delays, (1, 2, 4), strict=True):
        assert 0.5 * base <= delay <= 1.5 * base


async def test_transient_5xx_recovers_and_max_retries_zero_fails_fast(
    fake: FakeWorkOS, sdk: workos.WorkOSClient
) -> None:
    user = fake.add_user("ada@example.com")
    fake.fail_authenticate_with_status = 502
    fake.fail_authenticate_times = 2
    fake.fail_authenticate_retry_after = "0"
    result = await authenticate(sdk, await sign_in(sdk))
    assert result.user.id == user["id"]
    assert len(fake.find_requests("POST", AUTHENTICATE)) == 3

    fake.fail_authenticate_with_status = 500
    with pytest.raises(workos.ServerError):
        await asyncio.to_thread(
            sdk.user_management.authenticate_with_code,
            code="01HZZZZZZZZZZZZZZZZZZZZZZZ",
            request_options={"max_retries": 0},
        )
    assert len(fake.find_requests("POST", AUTHENTICATE)) == 4


# -------------------------------------------------------------------------- tokens


async def test_access_token_verifies_against_jwks(
    fake: FakeWorkOS, sdk: workos.WorkOSClient
) -> None:
    user = fake.add_user("ada@example.com")
    result = await authenticate(sdk, await sign_in(sdk))
    assert sdk.user_management.get_jwks_url() == fake.base_url + "sso/jwks/" + CLIENT_ID

    claims = await asyncio.to_thread(verify_access_token, fake, result.access_token)
    assert claims["iss"] == fake.issuer
    assert claims["sub"] == user["id"]
    assert claims["sid"].startswith("session_")
    assert claims["sid"] in fake.sessions
    assert claims["jti"]
    assert "org_id" not in claims
    assert claims["aud"] == CLIENT_ID
    assert claims["iat"] <= time.time() < claims["exp"]
    assert jwt.get_unverified_header(result.access_token)["kid"] == fake.kid

    jwks = await asyncio.to_thread(sdk.user_management.get_jwks, CLIENT_ID)
    assert [key.kid for key in jwks.keys] == [fake.kid]
    assert jwks.keys[0].alg == "RS256"
    assert jwks.keys[0].use == "sig"


@pytest.mark.parametrize(
    ("make_token", "error"),
    [
        (lambda f, uid: f.expired_token(uid), jwt.ExpiredSignatureError),
        (lambda f, uid: f.foreign_key_token(uid), jwt.InvalidSignatureError),
        (lambda f, uid: f.foreign_key_token(uid, same_kid=False), jwt.PyJWKClientError),
        (lambda f, uid: f.unsigned_token(uid), jwt.InvalidAlgorithmError),
        (
            lambda f, uid: f.issue_access_token(uid, extra_claims={"iss": "https://evil"}),
            jwt.InvalidIssuerError,
        ),
    ],
    ids=["expired", "foreign-key", "unknown-kid", "alg-none", "wrong-issuer"],
)
async def test_bad_tokens_fail_verification(
    fake: FakeWorkOS, make_token: Any, error: type[Exception]
) -> None:
    user = fake.add_user("ada@example.com")
    good = fake.issue_access_token(user["id"])
    assert (await asyncio.to_thread(verify_access_token, fake, good))["sub"] == user["id"]
    with pytest.raises(error):
        await asyncio.to_thread(verify_access_token, fake, make_token(fake, user["id"]))


async def test_sdk_session_cookie_helpers_accept_fake_tokens(
    fake: FakeWorkOS, sdk: workos.WorkOSClient
) -> None:
    user = fake.add_user("ada@example.com")
    result = await authenticate(sdk, await sign_in(sdk))
    password = Fernet.generate_key().decode()
    sealed = seal_session_from_auth_response(
        access_token=result.access_token,
        refresh_token=result.refresh_token,
        user=result.user.to_dict(),
        cookie_password=password,
    )
    checked = await asyncio.to_thread(
        sdk.user_management.authenticate_with_session_cookie,
        session_data=sealed,
        cookie_password=password,
    )
    assert isinstance(checked, AuthenticateWithSessionCookieSuccessResponse)
    sid = jwt.decode(result.access_token, options={"verify_signature": False})["sid"]
    assert checked.session_id == sid

    session = sdk.user_management.load_sealed_session(session_data=sealed, cookie_password=password)
    refreshed = await asyncio.to_thread(session.refresh)
    assert isinstance(refreshed, RefreshWithSessionCookieSuccessResponse)
    assert refreshed.session_id == sid
    assert refreshed.user is not None
    assert refreshed.user["id"] == user["id"]


async def test_refresh_token_is_single_use(fake: FakeWorkOS, sdk: workos.WorkOSClient) -> None:
    fake.add_user("ada@example.com")
    first = await authenticate(sdk, await sign_in(sdk))
    second = await asyncio.to_thread(
        sdk.user_management.authenticate_with_refresh_token, refresh_token=first.refresh_token
    )
    assert second.access_token != first.access_token
    sid = jwt.decode(second.access_token, options={"verify_signature": False})["sid"]
    assert sid == jwt.decode(first.access_token, options={"verify_signature": False})["sid"]
    with pytest.raises(workos.BadRequestError) as caught:
        await asyncio.to_thread(
            sdk.user_management.authenticate_with_refresh_token,
            refresh_token=first.refresh_token,
        )
    assert caught.value.error == "invalid_grant"


# -------------------------------------------------------------------------- logout


async def test_logout_url_redirects_and_revokes_the_session(
    fake: FakeWorkOS, sdk: workos.WorkOSClient
) -> None:
    fake.add_user("ada@example.com")
    result = await authenticate(sdk, await sign_in(sdk))
    sid = jwt.decode(result.access_token, options={"verify_signature": False})["sid"]
    url = sdk.user_management.get_logout_url(session_id=sid, return_to="http://localhost:8080/")
    assert url.startswith(fake.base_url + "user_management/sessions/logout?")
    resp = await follow_authorize(url)
    assert resp.status == 302
    assert resp.headers["Location"] == "http://localhost:8080/"
    assert sid in fake.revoked_sessions
    with pytest.raises(workos.BadRequestError):
        await asyncio.to_thread(
            sdk.user_management.authenticate_with_refresh_token,
            refresh_token=result.refresh_token,
        )


async def test_revoke_session_records_the_session(
    fake: FakeWorkOS, sdk: workos.WorkOSClient
) -> None:
    await asyncio.to_thread(sdk.user_management.revoke_session, session_id="session_01HZX")
    assert fake.revoked_sessions == {"session_01HZX"}


# --------------------------------------------------------------------------- users


async def test_get_user_reflects_updates_and_unknown_is_not_found(
    fake: FakeWorkOS, sdk: workos.WorkOSClient
) -> None:
    user = fake.add_user("ada@example.com", "Ada")
    task = asyncio.create_task(asyncio.to_thread(sdk.user_management.get_user, user["id"]))
    request = await fake.wait_for_request("GET", f"/user_management/users/{user['id']}")
    assert request.header("Authorization") == f"Bearer {API_KEY}"
    before = await task
    assert before.first_name == "Ada"

    updated = fake.update_user(user["id"], first_name="Augusta")
    after = await asyncio.to_thread(sdk.user_management.get_user, user["id"])
    assert after.first_name == "Augusta" == updated["first_name"]
    assert after.updated_at > before.updated_at

    with pytest.raises(workos.NotFoundError):
        await asyncio.to_thread(sdk.user_management.get_user, "user_01HZZZZZZZZZZZZZZZZZZZZZZZ")

    found = await asyncio.to_thread(sdk.user_management.list_users, email="ada@example.com")
    assert [u.id for u in found.data] == [user["id"]]


async def test_api_calls_with_a_wrong_api_key_are_401(fake: FakeWorkOS) -> None:
    user = fake.add_user("ada@example.com")
    with (
        workos.WorkOSClient(
            api_key="sk_test_wrong", client_id=CLIENT_ID, base_url=fake.base_url
        ) as wrong,
        pytest.raises(workos.AuthenticationError),
    ):
        await asyncio.to_thread(wrong.user_management.get_user, user["id"])


# ------------------------------------------------------------------------ webhooks


@pytest.mark.parametrize(
    ("kind", "model"), [("user.updated", UserUpdated), ("deleted", UserDeleted)]
)
async def test_sdk_accepts_signed_user_events(
    fake: FakeWorkOS, sdk: workos.WorkOSClient, kind: str, model: type[Any]
) -> None:
    user = fake.update_user(fake.add_user("ada@example.com")["id"], last_name="King")
    body = fake.user_event(kind, user)
    signature = fake.sign_webhook(body, secret=WEBHOOK_SECRET)
    assert signature.startswith("t=")
    assert ", v1=" in signature

    event = sdk.webhooks.verify_event(
        event_body=body, event_signature=signature, secret=WEBHOOK_SECRET
    )
    assert isinstance(event, model)
    assert event.id.startswith("event_")
    assert event.data.id == user["id"]
    assert event.data.last_name == "King"
    assert json.loads(body)["event"] == event.event


async def test_sdk_rejects_tampered_wrongly_signed_and_stale_webhooks(
    fake: FakeWorkOS, sdk: workos.WorkOSClient
) -> None:
    body = fake.user_event("user.updated", fake.add_user("ada@example.com"))
    good = fake.sign_webhook(body, secret=WEBHOOK_SECRET)
    sdk.webhooks.verify_header(event_body=body, event_signature=good, secret=WEBHOOK_SECRET)

    tampered = body.replace(b"ada@example.com", b"eve@example.com")
    stale = fake.sign_webhook(
        body, secret=WEBHOOK_SECRET, timestamp_ms=int((time.time() - 600) * 1000)
    )
    cases = [
        (tampered, good, WEBHOOK_SECRET, "does not match"),
        (body, fake.sign_webhook(body, secret="whsec_other"), WEBHOOK_SECRET, "does not match"),
        (body, stale, WEBHOOK_SECRET, "tolerance"),
    ]
    for event_body, signature, secret, message in cases:
        with pytest.raises(ValueError, match=message):
            sdk.webhooks.verify_event(
                event_body=event_body, event_signature=signature, secret=secret
            )
