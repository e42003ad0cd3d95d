"""Every response tells browsers not to sniff, frame or leak it, the app carries a
Content-Security-Policy its own build satisfies, and no response names the server's versions."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest
from multidict import CIMultiDictProxy

from server.app import UI_DIST
from tests.conftest import Client, RunningServer, server_config, start_server
from tests.rawhttp import raw_request


def assert_hardened(headers: CIMultiDictProxy[str] | dict[str, str], ws_origin: str) -> None:
    lower = {name.lower(): value for name, value in headers.items()}
    assert lower.get("x-content-type-options") == "nosniff"
    assert lower.get("x-frame-options") == "DENY"
    assert lower.get("referrer-policy") == "same-origin"
    policy = {
        directive.split()[0]: directive.split()[1:]
        for directive in lower.get("content-security-policy", "").split(";")
        if directive.strip()
    }
    assert policy["default-src"] == ["'self'"]
    assert policy["script-src"] == ["'self'"]
    assert policy["frame-ancestors"] == ["'none'"]
    assert policy["object-src"] == ["'none'"]
    assert "'self'" in policy["connect-src"]
    assert ws_origin in policy["connect-src"]
    server = lower.get("server", "")
    assert "python" not in server.lower()
    assert "aiohttp" not in server.lower()


def ws_origin_of(server: RunningServer) -> str:
    return server.origin.replace("http://", "ws://")


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/", None),
        ("GET", "/api/config", 200),
        ("GET", "/api/me", 401),
        ("GET", "/api/nope", 404),
        ("POST", "/api/messages", 401),
        ("POST", "/auth/dev-login", 403),
        ("DELETE", "/api/messages", 405),
        ("GET", "/healthz", 200),
        ("GET", "/readyz", 200),
        ("GET", "/metrics", 200),
        ("GET", "/ws", 401),
    ],
)
async def test_every_kind_of_response_carries_the_security_headers(
    server: RunningServer, method: str, path: str, status: int | None
) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, server.url + path, json={}) as response,
    ):
        if status is not None:
            assert response.status == status
        assert_hardened(response.headers, ws_origin_of(server))


async def test_a_431_and_a_websocket_upgrade_carry_them_too(server: RunningServer) -> None:
    response = await raw_request(server.url, "GET", "/api/me", [(b"X-Big", b"x" * 9000)])
    assert response.status == 431
    assert_hardened(response.headers, ws_origin_of(server))

    alice = Client(server.endpoint)
    try:
        await alice.sign_in("alice@example.com", "Alice")
        async with alice.http.ws_connect(server.ws_url, headers={"Origin": server.origin}) as ws:
            # aiohttp keeps the 101 response private on the client socket.
            assert ws._response.status == 101
            assert_hardened(ws._response.headers, ws_origin_of(server))
    finally:
        await alice.close()


@pytest.mark.skipif(not (UI_DIST / "assets").is_dir(), reason="ui/dist is not built")
async def test_the_apps_own_files_carry_them_and_are_all_same_origin(
    server: RunningServer,
) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(server.url + "/") as response:
            assert response.status == 200
            assert_hardened(response.headers, ws_origin_of(server))
            page = await response.text()
        for asset in (UI_DIST / "assets").iterdir():
            assert f"/assets/{asset.name}" in page or asset.suffix not in (".js", ".css")
            async with http.get(f"{server.url}/assets/{asset.name}") as response:
                assert response.status == 200
                assert_hardened(response.headers, ws_origin_of(server))
    # What the policy allows is what Vite emits: no inline script, no third-party origin.
    assert "<script>" not in page
    assert "http" not in page.replace("http://www.w3.org/2000/svg", "")


async def test_in_dev_mode_every_loopback_name_may_open_the_socket(server: RunningServer) -> None:
    async with aiohttp.ClientSession() as http, http.get(server.url + "/api/config") as response:
        policy = response.headers["Content-Security-Policy"]
    connect = next(d for d in policy.split(";") if d.strip().startswith("connect-src"))
    port = server.config.port
    for origin in (f"ws://localhost:{port}", f"ws://127.0.0.1:{port}"):
        assert origin in connect.split()
    # CSP has no syntax for IPv6 literals; a browser would drop the whole source as invalid.
    assert "[::1]" not in connect


async def test_behind_https_the_socket_origin_is_wss(
    database_url: str, tmp_path: Path, unused_tcp_port: int
) -> None:
    config = server_config(
        database_url, tmp_path, unused_tcp_port, PGCAST_PUBLIC_URL="https://chat.example.com"
    )
    running = await start_server(config)
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{unused_tcp_port}/api/config") as response,
        ):
            assert_hardened(response.headers, "wss://chat.example.com")
            assert "ws://" not in response.headers["Content-Security-Policy"]
    finally:
        await running.runner.cleanup()
