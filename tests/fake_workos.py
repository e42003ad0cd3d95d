"""An in-process fake of the WorkOS API, for exercising the real ``workos`` SDK offline.

The fake listens on 127.0.0.1 (random port) and implements what the SDK (workos 10.8.0)
calls for an AuthKit login, token verification, logout and user look-ups:

* ``GET  /user_management/authorize``        AuthKit after a successful sign-in: 302 to
  ``redirect_uri?code=...&state=...`` (browser-facing, built by
  ``user_management.get_authorization_url``).
* ``POST /user_management/authenticate``     ``grant_type=authorization_code`` and
  ``grant_type=refresh_token`` (``authenticate_with_code``, ``authenticate_with_refresh_token``,
  ``Session.refresh``).
* ``GET  /sso/jwks/{client_id}``             JWKS with the RS256 key that signs access tokens.
* ``GET  /user_management/sessions/logout``  browser-facing logout (``get_logout_url``).
* ``POST /user_management/sessions/revoke``  ``revoke_session``.
* ``GET  /user_management/users``            ``list_users`` (``email`` filter only).
* ``GET  /user_management/users/{id}``       ``get_user``.
* ``PUT  /user_management/users/{id}``       ``update_user``.

All state lives on the :class:`FakeWorkOS` instance. Every request is appended to
``fake.requests``; ``await fake.wait_for_request(...)`` waits for one without sleeping.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import datetime as dt
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from http import HTTPStatus
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import jwt
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

JSONDict = dict[str, Any]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_USER_FIELDS = frozenset(
    {
        "email",
        "first_name",
        "last_name",
        "name",
        "profile_picture_url",
        "email_verified",
        "external_id",
        "metadata",
        "locale",
        "last_sign_in_at",
    }
)
_USER_EVENTS = frozenset({"user.created", "user.updated", "user.deleted"})


def new_ulid() -> str:
    """A ULID (26 Crockford base32 chars, millisecond time prefix) like WorkOS ids use."""
    value = (time.time_ns() // 1_000_000) << 80 | secrets.randbits(80)
    chars = []
    for _ in range(26):
        chars.append(_CROCKFORD[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def new_id(prefix: str) -> str:
    """A WorkOS-style object id, e.g. ``user_01J...``."""
    return f"{prefix}_{new_ulid()}"


def iso_timestamp(moment: dt.datetime | None = None) -> str:
    """ISO 8601 UTC with milliseconds and ``Z``, as WorkOS writes timestamps."""
    moment = moment or dt.datetime.now(dt.UTC)
    return moment.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_uint(value: int) -> str:
    return _b64url(value.to_bytes((value.bit_length() + 7) // 8 or 1, "big"))


def _generate_rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _self_signed_certificate(key: rsa.RSAPrivateKey) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fake-workos access tokens")])
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=365))
        .sign(key, hashes.SHA256())
    )


@dataclass(frozen=True)
class RecordedRequest:
    """One HTTP request the fake received."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        """The body parsed as JSON (``None`` when empty)."""
        return json.loads(self.body) if self.body else None

    def header(self, name: str) -> str | None:
        """A request header, looked up case-insensitively."""
        wanted = name.lower()
        for key, value in self.headers.items():
            if key.lower() == wanted:
                return value
        return None


@dataclass
class _AuthCode:
    user_id: str
    client_id: str
    redirect_uri: str
    expires_at: float
    authentication_method: str
    code_challenge: str | None = None
    used: bool = False


@dataclass
class _Session:
    id: str
    user_id: str
    authentication_method: str
    auth_time: int
    created_at: str
    refresh_tokens: set[str] = field(default_factory=set)


class FakeWorkOS:
    """A fake WorkOS API server for tests. Use ``async with FakeWorkOS(...) as fake:``."""

    def __init__(
        self,
        *,
        client_id: str | None = None,
        api_key: str | None = None,
        issuer: str | None = None,
        allowed_redirect_uris: Iterable[str] | None = None,
        access_token_ttl: int = 300,
        code_ttl: int = 600,
    ) -> None:
        self.client_id: str = client_id or new_id("client")
        self.api_key: str = api_key or f"sk_test_{secrets.token_urlsafe(24)}"
        self._issuer_override = issuer
        self.allowed_redirect_uris: set[str] | None = (
            set(allowed_redirect_uris) if allowed_redirect_uris is not None else None
        )
        self.access_token_ttl = access_token_ttl
        self.code_ttl = code_ttl

        # Behaviour switches for tests.
        self.next_login_user: str | None = None
        """Who signs in at ``/user_management/authorize`` (default: the first added user)."""
        self.next_login_error: str | None = None
        """One-shot: the next authorize redirects with ``?error=<this>`` instead of a code."""
        self.next_login_method: str | None = None
        """``authentication_method`` reported for logins (default: ``Password`` for authkit,
        else the ``provider`` value)."""
        self.fail_authenticate_with_status: int | None = None
        """When set, ``POST /user_management/authenticate`` answers this status."""
        self.fail_authenticate_times: int | None = None
        """With ``fail_authenticate_with_status``: fail this many times, then recover
        (``None`` = fail until the switch is reset)."""
        self.fail_authenticate_retry_after: str | None = None
        """``Retry-After`` header sent with the failure (the SDK honours it, capped at 60s)."""

        # Recorded state.
        self.requests: list[RecordedRequest] = []
        self.users: dict[str, JSONDict] = {}
        self.sessions: dict[str, _Session] = {}
        self.revoked_sessions: set[str] = set()
        self.issued_access_tokens: list[str] = []
        self._codes: dict[str, _AuthCode] = {}
        self._refresh_tokens: dict[str, tuple[str, bool]] = {}  # token -> (session id, used)

        self.kid: str = new_id("sso_oidc_key_pair")
        self._key: rsa.RSAPrivateKey | None = None
        self._certificate: x509.Certificate | None = None
        self._foreign_key: rsa.RSAPrivateKey | None = None
        self._runner: web.AppRunner | None = None
        self._base_url: str | None = None
        self._requests_changed = asyncio.Condition()

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Generate the signing key and start listening on 127.0.0.1 (random port)."""
        if self._runner is not None:
            raise RuntimeError("FakeWorkOS is already running")
        self._key = _generate_rsa_key()
        self._certificate = _self_signed_certificate(self._key)
        app = web.Application(middlewares=[self._record_middleware])
        app.router.add_get("/user_management/authorize", self._authorize)
        app.router.add_post("/user_management/authenticate", self._authenticate)
        app.router.add_get("/sso/jwks/{client_id}", self._jwks)
        app.router.add_get("/user_management/sessions/logout", self._logout)
        app.router.add_post("/user_management/sessions/revoke", self._revoke_session)
        app.router.add_get("/user_management/users", self._list_users)
        app.router.add_get("/user_management/users/{user_id}", self._get_user)
        app.router.add_put("/user_management/users/{user_id}", self._put_user)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        try:
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        host, port = runner.addresses[0][:2]
        self._base_url = f"http://{host}:{port}/"

    async def stop(self) -> None:
        """Stop the server (idempotent)."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT/`` (with the trailing slash, like the SDK's ``base_url``)."""
        if self._base_url is None:
            raise RuntimeError("FakeWorkOS is not started")
        return self._base_url

    @property
    def issuer(self) -> str:
        """The ``iss`` of issued access tokens: the base URL without trailing slash, as real
        tokens carry ``https://api.workos.com`` (unless ``issuer=`` was given)."""
        return self._issuer_override or self.base_url.rstrip("/")

    @property
    def client_issuer(self) -> str:
        """The other ``iss`` WorkOS uses, one that names the client: with it, tokens carry no
        ``aud`` (``extra_claims={"iss": fake.client_issuer, "aud": None}``)."""
        return f"{self.base_url}user_management/{self.client_id}"

    def pgcast_env(self, **extra: str) -> dict[str, str]:
        """The settings that point pgcast (and its SDK) at this fake."""
        return {
            "WORKOS_API_KEY": self.api_key,
            "WORKOS_CLIENT_ID": self.client_id,
            "WORKOS_BASE_URL": self.base_url,
            **extra,
        }

    @property
    def jwks_url(self) -> str:
        """Same URL as the SDK's ``user_management.get_jwks_url()``."""
        return f"{self.base_url}sso/jwks/{self.client_id}"

    @property
    def signing_key(self) -> rsa.RSAPrivateKey:
        if self._key is None:
            raise RuntimeError("FakeWorkOS is not started")
        return self._key

    @property
    def foreign_key(self) -> rsa.RSAPrivateKey:
        """An RSA key that is NOT in the JWKS (generated on first use)."""
        if self._foreign_key is None:
            self._foreign_key = _generate_rsa_key()
        return self._foreign_key

    # ---------------------------------------------------------------------- users

    def add_user(
        self,
        email: str,
        first_name: str | None = None,
        last_name: str | None = None,
        profile_picture_url: str | None = None,
        *,
        email_verified: bool = True,
        external_id: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> JSONDict:
        """Create a user and return (a copy of) its WorkOS user object."""
        now = iso_timestamp()
        user: JSONDict = {
            "object": "user",
            "id": new_id("user"),
            "email": email,
            "email_verified": email_verified,
            "first_name": first_name,
            "last_name": last_name,
            "profile_picture_url": profile_picture_url,
            "last_sign_in_at": None,
            "external_id": external_id,
            "metadata": dict(metadata or {}),
            "locale": None,
            "created_at": now,
            "updated_at": now,
        }
        self.users[user["id"]] = user
        return copy.deepcopy(user)

    def get_user(self, user_id: str) -> JSONDict:
        """A copy of the stored user object (``KeyError`` if unknown)."""
        return copy.deepcopy(self.users[user_id])

    def update_user(self, user_id: str, **changes: Any) -> JSONDict:
        """Change user fields (``email``, ``first_name``, ``last_name``,
        ``profile_picture_url``, ``email_verified``, ``external_id``, ``metadata``, ``locale``,
        ``name``, ``last_sign_in_at``); bumps ``updated_at``. Returns a copy."""
        unknown = set(changes) - _USER_FIELDS
        if unknown:
            raise TypeError(f"unknown user fields: {sorted(unknown)}")
        user = self.users[user_id]
        user.update(copy.deepcopy(changes))
        user["updated_at"] = self._later_timestamp(user["updated_at"])
        return copy.deepcopy(user)

    def remove_user(self, user_id: str) -> JSONDict:
        """Delete a user; returns its last state (e.g. for a ``user.deleted`` event)."""
        return self.users.pop(user_id)

    @staticmethod
    def _later_timestamp(previous: str) -> str:
        now = dt.datetime.now(dt.UTC)
        before = dt.datetime.fromisoformat(previous)
        if now <= before:
            now = before + dt.timedelta(milliseconds=1)
        return iso_timestamp(now)

    # --------------------------------------------------------------------- tokens

    def issue_access_token(
        self,
        user_id: str,
        *,
        session_id: str | None = None,
        expires_in: int | None = None,
        key: rsa.RSAPrivateKey | bytes | str | None = None,
        alg: str = "RS256",
        kid: str | None = None,
        extra_claims: JSONDict | None = None,
    ) -> str:
        """An AuthKit-style access token.

        Claims: ``iss``, ``aud`` (the client id), ``sub``, ``sid``, ``jti``, ``iat``, ``exp``,
        ``auth_time`` (no ``org_id``). WorkOS names the application a token is for either in
        ``aud`` (with the ``https://api.workos.com`` issuer) or in the issuer itself
        (``https://api.workos.com/user_management/<client id>``, then without ``aud``; see
        :attr:`client_issuer`). ``expires_in`` may be negative for an expired token.
        ``key=None`` signs with the fake's JWKS key; pass another key (or ``alg="none"``) to
        make tokens that must be rejected. ``kid`` defaults to the fake's key id.
        ``extra_claims`` are merged last; a ``None`` value removes that claim.
        """
        ttl = self.access_token_ttl if expires_in is None else expires_in
        now = int(time.time())
        exp = now + ttl
        iat = now if ttl > 0 else exp - self.access_token_ttl
        claims: JSONDict = {
            "iss": self.issuer,
            "aud": self.client_id,
            "sub": user_id,
            "sid": session_id or new_id("session"),
            "jti": new_ulid(),
            "exp": exp,
            "iat": iat,
            "auth_time": iat,
        }
        for name, value in (extra_claims or {}).items():
            if value is None:
                claims.pop(name, None)
            else:
                claims[name] = value
        headers = {"kid": kid or self.kid}
        if alg == "none":
            header = {"alg": "none", "typ": "JWT", **headers}
            token = ".".join(
                _b64url(json.dumps(part, separators=(",", ":")).encode())
                for part in (header, claims)
            )
            return token + "."
        signing_key = self.signing_key if key is None else key
        return jwt.encode(claims, signing_key, algorithm=alg, headers=headers)

    def expired_token(self, user_id: str, *, seconds_ago: int = 60) -> str:
        """A correctly signed token whose ``exp`` is ``seconds_ago`` in the past."""
        return self.issue_access_token(user_id, expires_in=-seconds_ago)

    def foreign_key_token(self, user_id: str, *, same_kid: bool = True) -> str:
        """A token signed by an RSA key not in the JWKS. ``same_kid=True`` claims the fake's
        ``kid`` (a forgery: fails the signature check); ``False`` uses an unknown ``kid`` (fails
        the JWKS key lookup, ``jwt.PyJWKClientError``)."""
        kid = self.kid if same_kid else new_id("sso_oidc_key_pair")
        return self.issue_access_token(user_id, key=self.foreign_key, kid=kid)

    def unsigned_token(self, user_id: str) -> str:
        """An ``alg: none`` token (empty signature) carrying the fake's ``kid``."""
        return self.issue_access_token(user_id, alg="none")

    def jwks(self) -> JSONDict:
        """The JWKS document served at ``/sso/jwks/{client_id}``."""
        if self._certificate is None:
            raise RuntimeError("FakeWorkOS is not started")
        numbers = self.signing_key.public_key().public_numbers()
        der = self._certificate.public_bytes(serialization.Encoding.DER)
        return {
            "keys": [
                {
                    "alg": "RS256",
                    "kty": "RSA",
                    "use": "sig",
                    "x5c": [base64.b64encode(der).decode("ascii")],
                    "n": _b64url_uint(numbers.n),
                    "e": _b64url_uint(numbers.e),
                    "kid": self.kid,
                    "x5t#S256": _b64url(hashlib.sha256(der).digest()),
                }
            ]
        }

    # ------------------------------------------------------------------- webhooks

    @staticmethod
    def sign_webhook(payload: bytes | str, *, secret: str, timestamp_ms: int | None = None) -> str:
        """The ``WorkOS-Signature`` header value: ``t=<ms>, v1=<hex HMAC-SHA256 of
        "<ms>.<body>" keyed with the endpoint secret>``."""
        body = payload.decode("utf-8") if isinstance(payload, bytes) else payload
        timestamp = int(time.time() * 1000) if timestamp_ms is None else timestamp_ms
        digest = hmac.new(
            secret.encode("utf-8"), f"{timestamp}.{body}".encode(), hashlib.sha256
        ).hexdigest()
        return f"t={timestamp}, v1={digest}"

    def webhook_headers(
        self, payload: bytes | str, *, secret: str, timestamp_ms: int | None = None
    ) -> dict[str, str]:
        """Headers for POSTing ``payload`` to a webhook endpoint the way WorkOS does."""
        return {
            "Content-Type": "application/json",
            "WorkOS-Signature": self.sign_webhook(
                payload, secret=secret, timestamp_ms=timestamp_ms
            ),
        }

    @staticmethod
    def user_event(
        kind: str,
        user: JSONDict,
        *,
        event_id: str | None = None,
        created_at: str | None = None,
    ) -> bytes:
        """A webhook body for ``user.created`` / ``user.updated`` / ``user.deleted`` (the
        ``user.`` prefix may be omitted) with ``user`` as ``data``."""
        event = kind if kind.startswith("user.") else f"user.{kind}"
        if event not in _USER_EVENTS:
            raise ValueError(f"unsupported user event {kind!r}")
        body: JSONDict = {
            "object": "event",
            "id": event_id or new_id("event"),
            "event": event,
            "data": user,
            "created_at": created_at or iso_timestamp(),
        }
        return json.dumps(body, separators=(",", ":")).encode("utf-8")

    # ------------------------------------------------------------------- requests

    def find_requests(self, method: str, path: str) -> list[RecordedRequest]:
        """Recorded requests with this method and path (path without query)."""
        return [r for r in self.requests if r.method == method.upper() and r.path == path]

    async def wait_for_request(
        self, method: str, path: str, *, count: int = 1, within: float = 5.0
    ) -> RecordedRequest:
        """Wait (without polling) until ``count`` matching requests arrived; return the
        ``count``-th one. Raises ``TimeoutError`` after ``within`` seconds."""
        async with asyncio.timeout(within), self._requests_changed:
            await self._requests_changed.wait_for(
                lambda: len(self.find_requests(method, path)) >= count
            )
        return self.find_requests(method, path)[count - 1]

    @web.middleware
    async def _record_middleware(
        self, request: web.Request, handler: Handler
    ) -> web.StreamResponse:
        body = await request.read()
        self.requests.append(
            RecordedRequest(
                method=request.method,
                path=request.path,
                query=dict(request.query),
                headers=dict(request.headers),
                body=body,
            )
        )
        async with self._requests_changed:
            self._requests_changed.notify_all()
        try:
            response = await handler(request)
        except web.HTTPNotFound:
            response = _json_error(404, {"message": "Not Found"})
        except web.HTTPMethodNotAllowed:
            response = _json_error(405, {"message": "Method Not Allowed"})
        response.headers.setdefault("X-Request-ID", new_ulid().lower())
        return response

    # ------------------------------------------------------------------- handlers

    async def _authorize(self, request: web.Request) -> web.StreamResponse:
        query = request.query
        if query.get("client_id") != self.client_id:
            return _html_error(400, "Invalid client ID.")
        redirect_uri = query.get("redirect_uri", "")
        parts = urlsplit(redirect_uri)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            return _html_error(400, "A valid redirect_uri is required.")
        if (
            self.allowed_redirect_uris is not None
            and redirect_uri not in self.allowed_redirect_uris
        ):
            return _html_error(400, "The redirect_uri is not allowed for this client.")
        if query.get("response_type") != "code":
            return _html_error(400, "response_type must be 'code'.")
        provider = query.get("provider")
        if not (provider or query.get("connection_id") or query.get("organization_id")):
            return _html_error(400, "A provider, connection_id or organization_id is required.")
        code_challenge = query.get("code_challenge")
        if code_challenge is not None and query.get("code_challenge_method") != "S256":
            return _html_error(400, "code_challenge_method must be 'S256'.")
        state = query.get("state")

        if self.next_login_error is not None:
            error, self.next_login_error = self.next_login_error, None
            params = {"error": error, "error_description": f"The sign-in failed: {error}."}
            if state is not None:
                params["state"] = state
            return _redirect(_append_query(redirect_uri, params))

        user_id = self.next_login_user or next(iter(self.users), None)
        if user_id is None or user_id not in self.users:
            return _html_error(400, "FakeWorkOS: no user to sign in (add_user / next_login_user).")
        method = self.next_login_method or (
            "Password" if provider in (None, "authkit") else str(provider)
        )
        code = new_ulid()
        self._codes[code] = _AuthCode(
            user_id=user_id,
            client_id=self.client_id,
            redirect_uri=redirect_uri,
            expires_at=time.monotonic() + self.code_ttl,
            authentication_method=method,
            code_challenge=code_challenge,
        )
        params = {"code": code}
        if state is not None:
            params["state"] = state
        return _redirect(_append_query(redirect_uri, params))

    async def _authenticate(self, request: web.Request) -> web.StreamResponse:
        if self.fail_authenticate_with_status is not None:
            status = self.fail_authenticate_with_status
            if self.fail_authenticate_times is not None:
                self.fail_authenticate_times -= 1
                if self.fail_authenticate_times <= 0:
                    self.fail_authenticate_with_status = None
                    self.fail_authenticate_times = None
            headers = {}
            if self.fail_authenticate_retry_after is not None:
                headers["Retry-After"] = self.fail_authenticate_retry_after
            return _json_error(status, {"message": HTTPStatus(status).phrase}, headers=headers)

        try:
            body = await _read_params(request)
        except ValueError:
            return _json_error(
                400, {"error": "invalid_request", "error_description": "Malformed body."}
            )
        if body.get("client_id") != self.client_id:
            return _json_error(
                401, {"error": "invalid_client", "error_description": "Invalid client ID."}
            )
        secret = body.get("client_secret")
        if secret is not None and not hmac.compare_digest(str(secret), self.api_key):
            return _json_error(
                401, {"error": "invalid_client", "error_description": "Invalid client secret."}
            )
        grant_type = body.get("grant_type")
        if grant_type == "authorization_code":
            return self._grant_code(body, public_client=secret is None)
        if grant_type == "refresh_token":
            if secret is None:
                return _json_error(
                    401,
                    {"error": "invalid_client", "error_description": "Missing client secret."},
                )
            return self._grant_refresh(body)
        return _json_error(
            400,
            {
                "error": "unsupported_grant_type",
                "error_description": f"Unsupported grant type: {grant_type!r}.",
            },
        )

    def _grant_code(self, body: JSONDict, *, public_client: bool) -> web.StreamResponse:
        code = str(body.get("code") or "")
        grant = self._codes.get(code)
        if (
            grant is None
            or grant.used
            or grant.client_id != body.get("client_id")
            or time.monotonic() > grant.expires_at
        ):
            return _invalid_grant(f"The code '{code}' has expired or is invalid.")
        grant.used = True
        if grant.code_challenge is not None:
            verifier = str(body.get("code_verifier") or "")
            challenge = _b64url(hashlib.sha256(verifier.encode()).digest())
            if not hmac.compare_digest(challenge, grant.code_challenge):
                return _invalid_grant("The code_verifier does not match the code_challenge.")
        elif public_client:
            return _json_error(
                401, {"error": "invalid_client", "error_description": "Missing client secret."}
            )
        user = self.users.get(grant.user_id)
        if user is None:
            return _invalid_grant("The user no longer exists.")
        user["last_sign_in_at"] = iso_timestamp()
        session = _Session(
            id=new_id("session"),
            user_id=user["id"],
            authentication_method=grant.authentication_method,
            auth_time=int(time.time()),
            created_at=iso_timestamp(),
        )
        self.sessions[session.id] = session
        return web.json_response(self._token_response(session))

    def _grant_refresh(self, body: JSONDict) -> web.StreamResponse:
        token = str(body.get("refresh_token") or "")
        entry = self._refresh_tokens.get(token)
        if entry is None or entry[1]:
            return _invalid_grant("Refresh token already exchanged or invalid.")
        session_id = entry[0]
        self._refresh_tokens[token] = (session_id, True)
        session = self.sessions[session_id]
        if session_id in self.revoked_sessions or session.user_id not in self.users:
            return _invalid_grant("Session has already ended.")
        return web.json_response(self._token_response(session))

    def _token_response(self, session: _Session) -> JSONDict:
        access_token = self.issue_access_token(
            session.user_id,
            session_id=session.id,
            extra_claims={"auth_time": session.auth_time},
        )
        self.issued_access_tokens.append(access_token)
        refresh_token = secrets.token_urlsafe(24)
        self._refresh_tokens[refresh_token] = (session.id, False)
        return {
            "user": copy.deepcopy(self.users[session.user_id]),
            "organization_id": None,
            "access_token": access_token,
            "refresh_token": refresh_token,
            "authentication_method": session.authentication_method,
        }

    async def _jwks(self, request: web.Request) -> web.StreamResponse:
        if request.match_info["client_id"] != self.client_id:
            return _json_error(404, {"message": "Not Found"})
        return web.json_response(self.jwks())

    async def _logout(self, request: web.Request) -> web.StreamResponse:
        session_id = request.query.get("session_id")
        if not session_id:
            return _html_error(422, "session_id is required.")
        self.revoked_sessions.add(session_id)
        return_to = request.query.get("return_to")
        if return_to:
            return _redirect(return_to)
        return web.Response(text="<html><body>Signed out.</body></html>", content_type="text/html")

    def _check_api_key(self, request: web.Request) -> web.StreamResponse | None:
        expected = f"Bearer {self.api_key}"
        if not hmac.compare_digest(request.headers.get("Authorization", ""), expected):
            return _json_error(401, {"message": "Unauthorized"})
        return None

    async def _revoke_session(self, request: web.Request) -> web.StreamResponse:
        if (denied := self._check_api_key(request)) is not None:
            return denied
        try:
            body = await _read_params(request)
        except ValueError:
            return _json_error(400, {"message": "Malformed body."})
        session_id = body.get("session_id")
        if not isinstance(session_id, str) or not session_id:
            return _json_error(400, {"message": "session_id is required."})
        self.revoked_sessions.add(session_id)
        return web.json_response({})

    async def _list_users(self, request: web.Request) -> web.StreamResponse:
        if (denied := self._check_api_key(request)) is not None:
            return denied
        email = request.query.get("email")
        data = [
            copy.deepcopy(u)
            for u in self.users.values()
            if email is None or u["email"].lower() == email.lower()
        ]
        return web.json_response(
            {"object": "list", "data": data, "list_metadata": {"before": None, "after": None}}
        )

    async def _get_user(self, request: web.Request) -> web.StreamResponse:
        if (denied := self._check_api_key(request)) is not None:
            return denied
        user_id = request.match_info["user_id"]
        user = self.users.get(user_id)
        if user is None:
            return _user_not_found(user_id)
        return web.json_response(copy.deepcopy(user))

    async def _put_user(self, request: web.Request) -> web.StreamResponse:
        if (denied := self._check_api_key(request)) is not None:
            return denied
        user_id = request.match_info["user_id"]
        if user_id not in self.users:
            return _user_not_found(user_id)
        try:
            body = await _read_params(request)
        except ValueError:
            return _json_error(400, {"message": "Malformed body."})
        changes = {k: v for k, v in body.items() if k in _USER_FIELDS - {"last_sign_in_at"}}
        return web.json_response(self.update_user(user_id, **changes))


# ----------------------------------------------------------------------- helpers


async def _read_params(request: web.Request) -> JSONDict:
    """A JSON object body (what the SDK sends) or a form body."""
    if request.content_type == "application/x-www-form-urlencoded":
        return dict(await request.post())
    raw = await request.read()
    if not raw:
        return {}
    try:
        parsed = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError("malformed JSON") from exc
    if not isinstance(parsed, dict):
        raise ValueError("JSON body must be an object")
    return parsed


def _json_error(
    status: int, body: JSONDict, *, headers: dict[str, str] | None = None
) -> web.Response:
    return web.json_response(body, status=status, headers=headers)


def _invalid_grant(description: str) -> web.Response:
    return _json_error(400, {"error": "invalid_grant", "error_description": description})


def _user_not_found(user_id: str) -> web.Response:
    return _json_error(
        404,
        {
            "message": f"User not found: '{user_id}'.",
            "code": "entity_not_found",
            "entity_id": user_id,
        },
    )


def _html_error(status: int, message: str) -> web.Response:
    return web.Response(
        status=status,
        text=f"<html><body><h1>Error</h1><p>{message}</p></body></html>",
        content_type="text/html",
    )


def _redirect(location: str) -> web.Response:
    return web.Response(status=302, headers={"Location": location})


def _append_query(url: str, params: dict[str, str]) -> str:
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True) + list(params.items())
    return urlunsplit(parts._replace(query=urlencode(query)))
