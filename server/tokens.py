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
    def __init__(self, http: aiohttp.ClientSession, jwks_url: str, issuer: str) -> None:
        self._http = http
        self._jwks_url = jwks_url
        self._issuer = issuer
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
                issuer=self._issuer,
                options={"require": ["exp", "iat", "sub", "iss"], "verify_aud": False},
            )
        except jwt.PyJWTError as error:
            raise InvalidToken(str(error)) from None
        subject = claims["sub"]
        if not isinstance(subject, str) or not subject:
            raise InvalidToken("token has no subject")
        return subject

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
