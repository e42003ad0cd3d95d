"""Headers every response carries: what browsers may do with it, and nothing about the
software that served it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from aiohttp import hdrs, web

from server.config import LOOPBACK_HOSTS, Config

ResponseHook = Callable[[web.Request, web.StreamResponse], Awaitable[None]]


def websocket_origins(config: Config) -> list[str]:
    """Where the app's socket connects: the public origin as ws(s), and in dev mode every
    loopback name of it (the page may have been opened on any of them).

    CSP's source grammar has no IPv6 literals (browsers drop `ws://[::1]:8080` as invalid);
    there `'self'` has to do, which current browsers extend to ws(s) of the same host."""
    parts = urlsplit(config.public_origin)
    scheme = "wss" if parts.scheme == "https" else "ws"
    port = f":{parts.port}" if parts.port is not None else ""
    hosts = [parts.hostname or ""]
    if config.dev_login:
        hosts.extend(LOOPBACK_HOSTS)
    origins: list[str] = []
    for host in hosts:
        origin = f"{scheme}://{host}{port}"
        if ":" not in host and origin not in origins:
            origins.append(origin)
    return origins


def content_security_policy(config: Config) -> str:
    directives = [
        # The UI is Vite's build: same-origin scripts and stylesheets, no inline code.
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        # Avatars come from the identity provider's servers; the favicon is a data: URL.
        "img-src 'self' data: https:",
        # Some browsers do not count ws: and wss: as 'self'.
        "connect-src 'self' " + " ".join(websocket_origins(config)),
        "object-src 'none'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
    ]
    return "; ".join(directives)


def security_headers(config: Config) -> dict[str, str]:
    return {
        "Content-Security-Policy": content_security_policy(config),
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
        # The CSRF check may fall back on Referer for our own pages; no other site gets one.
        "Referrer-Policy": "same-origin",
    }


def security_headers_hook(config: Config) -> ResponseHook:
    """An on_response_prepare handler: it sees every response the app makes (errors, static
    files and WebSocket upgrades included), after aiohttp has set its defaults."""
    headers = security_headers(config)

    async def add_headers(request: web.Request, response: web.StreamResponse) -> None:
        response.headers.update(headers)
        # aiohttp's default names Python's and its own version.
        response.headers.popall(hdrs.SERVER, None)

    return add_headers
