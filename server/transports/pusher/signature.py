"""Pusher's request signing (HTTP API reference, "Authentication"), checked over exactly what
a request carries.

A signed request has `auth_key`, `auth_timestamp` (seconds, within 600 of our clock),
`auth_version=1.0`, `body_md5` (the hex MD5 of a non-empty body) and `auth_signature`, the
hex HMAC-SHA256, keyed with the app secret, of

    METHOD \\n PATH \\n every other query parameter, keys lowercased, sorted by key, k=v joined by &

with the values unescaped. Nothing here trusts a parsed or normalised view of the request:
the query string is decoded here from its raw text, the path is tried as received and as
decoded, and the parameters returned are the very ones the signature covered, so a handler
acts only on what was signed. Pure functions, no I/O.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from urllib.parse import unquote_to_bytes

AUTH_VERSION = "1.0"
MAX_CLOCK_SKEW_SECONDS = 600

Params = list[tuple[str, str]]

_AUTH_PARAMS = ("auth_key", "auth_timestamp", "auth_version", "auth_signature", "body_md5")


class SignatureError(Exception):
    """A request that is not signed as Pusher signs; `code` and `message` are for the caller."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def sign(secret: str, text: str) -> str:
    """The hex HMAC-SHA256 of `text` keyed with `secret`: Pusher's one signing primitive
    (API requests, channel authorizations, user authentication, webhooks)."""
    return hmac.new(secret.encode(), text.encode(), hashlib.sha256).hexdigest()


def signatures_match(expected: str, given: str) -> bool:
    """A constant-time comparison that also takes text that is not ASCII (hostile input)."""
    return hmac.compare_digest(expected.encode(), given.encode("utf-8", "surrogatepass"))


def body_md5(body: bytes) -> str:
    # MD5 because Pusher's protocol says so; it only binds the body to the signed query.
    return hashlib.md5(body, usedforsecurity=False).hexdigest()


def string_to_sign(method: str, path: str, params: Sequence[tuple[str, str]]) -> str:
    """What `auth_signature` signs. `params` must not include `auth_signature`."""
    lowered = sorted(((key.lower(), value) for key, value in params), key=lambda kv: kv[0])
    query = "&".join(f"{key}={value}" for key, value in lowered)
    return f"{method.upper()}\n{path}\n{query}"


def decode_query(raw_query: str, *, plus_is_space: bool = True) -> Params:
    """The parameters of a raw query string, unescaped, in the order received.

    `plus_is_space`: a `+` stands for a space, as form encoding (and so PHP's SDK, which
    Laravel uses) writes it; pusher-http-python sends its values unescaped, so there a `+`
    is itself. The caller tries both readings when the query has a `+`.
    """
    params: Params = []
    for piece in raw_query.split("&"):
        if not piece:
            continue
        key, _, value = piece.partition("=")
        params.append((_unescape(key, plus_is_space), _unescape(value, plus_is_space)))
    return params


def _unescape(text: str, plus_is_space: bool) -> str:
    if plus_is_space:
        text = text.replace("+", " ")
    try:
        return unquote_to_bytes(text).decode("utf-8")
    except UnicodeDecodeError:
        raise SignatureError(
            "invalid_query_string", "The query string is not percent-encoded UTF-8."
        ) from None


def verify_request(
    method: str,
    paths: Sequence[str],
    raw_query: str,
    body: bytes,
    *,
    key: str,
    secret: str,
    now: float,
) -> Params:
    """The request's query parameters (without `auth_signature`) if it is signed by the
    holder of `secret` for app key `key`; else SignatureError.

    `paths` are the readings of the request path to accept (as received, and decoded): a
    client library may escape in transit a character it signed unescaped.
    """
    readings = [decode_query(raw_query)]
    if "+" in raw_query:
        readings.append(decode_query(raw_query, plus_is_space=False))
    first_error: SignatureError | None = None
    for params in readings:
        try:
            return _verify(method, paths, params, body, key=key, secret=secret, now=now)
        except SignatureError as error:
            first_error = first_error or error
    assert first_error is not None
    raise first_error


def _verify(
    method: str,
    paths: Sequence[str],
    params: Params,
    body: bytes,
    *,
    key: str,
    secret: str,
    now: float,
) -> Params:
    auth: dict[str, str] = {}
    for name, value in params:
        if name.lower() in _AUTH_PARAMS:
            if name.lower() in auth:
                raise SignatureError(f"duplicate_{name.lower()}", f"{name} is given twice.")
            auth[name.lower()] = value
    for name in ("auth_key", "auth_timestamp", "auth_version", "auth_signature"):
        if name not in auth:
            raise SignatureError(f"missing_{name}", f"The query string has no {name}.")
    if not signatures_match(key, auth["auth_key"]):
        raise SignatureError("unknown_auth_key", "auth_key is not this app's key.")
    if auth["auth_version"] != AUTH_VERSION:
        raise SignatureError("unsupported_auth_version", f"auth_version must be {AUTH_VERSION}.")
    if body and "body_md5" not in auth:
        raise SignatureError("missing_body_md5", "A request with a body must carry body_md5.")
    signed = [(name, value) for name, value in params if name.lower() != "auth_signature"]
    given = auth["auth_signature"]
    if not any(
        signatures_match(sign(secret, string_to_sign(method, path, signed)), given)
        for path in dict.fromkeys(paths)
    ):
        raise SignatureError(
            "invalid_signature",
            "auth_signature does not match: sign METHOD, path and the sorted query "
            "parameters with the app secret.",
        )
    # Signed, so what follows is the signer's own mistake (or an old, replayed request).
    if "body_md5" in auth and not signatures_match(body_md5(body), auth["body_md5"]):
        raise SignatureError("body_md5_mismatch", "body_md5 is not the MD5 of the body.")
    timestamp = auth["auth_timestamp"]
    if not timestamp.isascii() or not timestamp.isdigit() or len(timestamp) > 12:
        raise SignatureError("invalid_auth_timestamp", "auth_timestamp must be whole seconds.")
    if abs(now - int(timestamp)) > MAX_CLOCK_SKEW_SECONDS:
        raise SignatureError(
            "auth_timestamp_expired",
            f"auth_timestamp {timestamp} is more than {MAX_CLOCK_SKEW_SECONDS} seconds from "
            f"the server's time ({int(now)}): check the clock, or this is an old request.",
        )
    return signed
