"""Bearer tokens for scripts and apps: WorkOS access tokens, checked against WorkOS's JWKS."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import aiohttp
import jwt

log = logging.getLogger(__name__)

JWKS_CACHE_SECONDS = 300.0
# An unknown key id may mean WorkOS rotated keys; refetch, but not on every forged token.
JWKS_REFETCH_COOLDOWN_SECONDS = 30.0


class InvalidToken(Exception):
    """The token is not one WorkOS issued to this application, or it has expired."""


class AccessTokenVerifier:
    """Checks that a token is WorkOS's, unexpired, and issued for our application.

    One WorkOS environment signs the tokens of all its applications with one key, so the
    signature alone does not say the token is for us. WorkOS names the application either in
    `aud` (issuer `https://api.workos.com`) or in the issuer itself
    (`https://api.workos.com/user_management/<client id>`, then with no `aud`)."""

    def __init__(
        self, http: aiohttp.ClientSession, jwks_url: str, issuer: str, client_id: str
    ) -> None:
        self._http = http
        self._jwks_url = jwks_url
        self._client_id = client_id
        base = issuer.rstrip("/")
        self._client_issuer = f"{base}/user_management/{client_id}"
        # WorkOS's documents write the issuer both with and without the trailing slash.
        self._issuers = [base, base + "/", self._client_issuer]
        self._keys: jwt.PyJWKSet | None = None
        self._fetched_at = float("-inf")
        self._lock = asyncio.Lock()

    async def subject(self, token: str) -> str:
        """The WorkOS user id (`sub`) of a valid token."""
        try:
            key_id = jwt.get_unverified_header(token).get("kid")
        except jwt.PyJWTError:
            raise InvalidToken("malformed token") from None
        if not isinstance(key_id, str):
            raise InvalidToken("token has no key id")
        key = await self._key(key_id)
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key.key,
                algorithms=["RS256"],
                issuer=self._issuers,
                options={"require": ["exp", "iat", "sub", "iss"], "verify_aud": False},
            )
        except jwt.PyJWTError as error:
            raise InvalidToken(str(error)) from None
        self._check_audience(claims)
        subject = claims["sub"]
        if not isinstance(subject, str) or not subject:
            raise InvalidToken("token has no subject")
        return subject

    def _check_audience(self, claims: dict[str, Any]) -> None:
        audience = claims.get("aud")
        if audience is None:
            if claims["iss"] != self._client_issuer:
                raise InvalidToken("token names no audience")
            return
        audiences = [audience] if isinstance(audience, str) else audience
        if not isinstance(audiences, list) or self._client_id not in audiences:
            raise InvalidToken("token was issued for another application")

    async def _key(self, key_id: str) -> jwt.PyJWK:
        loop = asyncio.get_running_loop()
        async with self._lock:
            age = loop.time() - self._fetched_at
            stale = self._keys is None or age > JWKS_CACHE_SECONDS
            unknown = self._keys is not None and not self._has(key_id)
            if stale or (unknown and age > JWKS_REFETCH_COOLDOWN_SECONDS):
                await self._fetch()
                self._fetched_at = loop.time()
        if self._keys is None or not self._has(key_id):
            raise InvalidToken("token signed by an unknown key")
        return self._keys[key_id]

    def _has(self, key_id: str) -> bool:
        assert self._keys is not None
        return any(key.key_id == key_id for key in self._keys.keys)

    async def _fetch(self) -> None:
        try:
            async with self._http.get(
                self._jwks_url, timeout=aiohttp.ClientTimeout(total=10)
            ) as response:
                response.raise_for_status()
                document = json.loads(await response.read())
            self._keys = jwt.PyJWKSet.from_dict(document)
        except (aiohttp.ClientError, TimeoutError, ValueError, jwt.PyJWTError) as error:
            # Keep the keys we had: a WorkOS hiccup must not sign every app out.
            log.warning("fetching WorkOS JWKS failed: %s", error)
