"""Dev login and the origin checks around it: on only where the public origin is this machine,
and easy to reach by any of the machine's own names."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from server.config import ConfigError, load_config
from tests.conftest import RunningServer, server_config, start_server
from tests.test_cli import cli_env, run_cli


def test_dev_login_is_off_by_default_behind_a_public_origin(tmp_path: Path) -> None:
    config = load_config(
        {
            "PGCAST_DATA_DIR": str(tmp_path),
            "PGCAST_HOST": "127.0.0.1",
            "PGCAST_PUBLIC_URL": "https://chat.example.com",
        }
    )
    assert config.dev_login is False


@pytest.mark.parametrize(
    "public_url",
    ["https://chat.example.com", "http://192.0.2.10:8080", "https://127.0.0.1.example.com"],
)
def test_dev_login_on_behind_a_public_origin_refuses_to_start(
    tmp_path: Path, public_url: str
) -> None:
    env = {
        "PGCAST_DATA_DIR": str(tmp_path),
        "PGCAST_HOST": "127.0.0.1",
        "PGCAST_PUBLIC_URL": public_url,
        "PGCAST_DEV_LOGIN": "1",
    }
    with pytest.raises(ConfigError) as refused:
        load_config(env)
    message = str(refused.value)
    assert "\n" not in message
    assert "PGCAST_PUBLIC_URL" in message
    assert "not a loopback" in message


@pytest.mark.parametrize(
    "public_url", ["http://127.0.0.1:9000", "http://localhost:8080", "https://[::1]:8443"]
)
def test_dev_login_stays_on_for_a_loopback_public_origin(tmp_path: Path, public_url: str) -> None:
    env = {"PGCAST_DATA_DIR": str(tmp_path), "PGCAST_PUBLIC_URL": public_url}
    assert load_config(env).dev_login is True
    assert load_config({**env, "PGCAST_DEV_LOGIN": "1"}).dev_login is True


def test_serve_with_dev_login_behind_a_public_origin_exits_1_with_one_line(
    database_url: str, tmp_path: Path
) -> None:
    env = cli_env(
        database_url,
        tmp_path,
        PGCAST_DEV_LOGIN="1",
        PGCAST_PUBLIC_URL="https://chat.example.com",
    )
    result = run_cli("serve", env=env)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("pgcast: dev login is on but PGCAST_PUBLIC_URL=")


@pytest.fixture
async def proxied(
    database_url: str, tmp_path: Path, unused_tcp_port: int
) -> AsyncIterator[RunningServer]:
    """Listening on loopback, published through a TLS proxy: what a deployment looks like."""
    config = server_config(
        database_url, tmp_path, unused_tcp_port, PGCAST_PUBLIC_URL="https://chat.example.com"
    )
    running = await start_server(config)
    yield running
    await running.runner.cleanup()


async def test_dev_login_behind_a_reverse_proxy_is_404(proxied: RunningServer) -> None:
    local = f"http://127.0.0.1:{proxied.config.port}"
    async with aiohttp.ClientSession() as http:
        async with http.get(local + "/api/config") as response:
            assert (await response.json())["auth"]["dev_login"] is False
        # What the proxy forwards: the browser's Origin is the public one.
        async with http.post(
            local + "/auth/dev-login",
            json={"email": "mallory@example.com", "name": "Anyone"},
            headers={"Origin": "https://chat.example.com"},
        ) as response:
            assert response.status == 404
            assert (await response.json())["error"]["code"] == "not_found"


def test_ipv6_listen_host_gets_a_bracketed_public_origin(tmp_path: Path) -> None:
    config = load_config({"PGCAST_DATA_DIR": str(tmp_path), "PGCAST_HOST": "::1"})
    assert config.public_url == "http://[::1]:8080"
    assert config.public_origin == "http://[::1]:8080"
    assert config.dev_login is True


async def test_dev_sign_in_and_post_over_ipv6(
    database_url: str, tmp_path: Path, unused_tcp_port: int
) -> None:
    running = await start_server(
        server_config(database_url, tmp_path, unused_tcp_port, PGCAST_HOST="::1")
    )
    try:
        url = f"http://[::1]:{unused_tcp_port}"
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
            async with http.post(
                url + "/auth/dev-login",
                json={"email": "alice@example.com", "name": "Alice"},
                headers={"Origin": url},
            ) as response:
                assert response.status == 200, await response.text()
            async with http.post(
                url + "/api/messages", json={"content": "over v6"}, headers={"Origin": url}
            ) as response:
                assert response.status == 201, await response.text()
    finally:
        await running.runner.cleanup()


@pytest.mark.parametrize("name", ["localhost", "127.0.0.1", "[::1]"])
async def test_every_loopback_name_is_one_origin_in_dev_mode(
    server: RunningServer, name: str
) -> None:
    # The server's public origin is http://127.0.0.1:PORT; a browser opened another name.
    url = f"http://{name}:{server.config.port}"
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        async with http.post(
            server.url + "/auth/dev-login",
            json={"email": "alice@example.com", "name": "Alice"},
            headers={"Origin": url},
        ) as response:
            assert response.status == 200, await response.text()
        async with http.post(
            server.url + "/api/messages", json={"content": "hi"}, headers={"Referer": url + "/"}
        ) as response:
            assert response.status == 201, await response.text()


@pytest.mark.parametrize(
    "origin_of",
    [
        lambda port: f"http://localhost:{port + 1}",
        lambda port: f"https://localhost:{port}",
        lambda port: f"http://localhost.example.com:{port}",
        lambda port: f"http://127.0.0.2:{port}",
    ],
)
async def test_other_ports_schemes_and_hosts_are_still_cross_site_and_say_what_was_expected(
    server: RunningServer, origin_of: object
) -> None:
    assert callable(origin_of)
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            server.url + "/auth/dev-login",
            json={"email": "alice@example.com", "name": "Alice"},
            headers={"Origin": origin_of(server.config.port)},
        ) as response,
    ):
        assert response.status == 403
        error = (await response.json())["error"]
    assert error["code"] == "cross_site_request"
    assert server.origin in error["message"]


async def test_loopback_names_stay_distinct_origins_without_dev_login(
    database_url: str, tmp_path: Path, unused_tcp_port: int
) -> None:
    config = server_config(database_url, tmp_path, unused_tcp_port, PGCAST_DEV_LOGIN="0")
    running = await start_server(config)
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                running.url + "/auth/logout",
                headers={"Origin": f"http://localhost:{unused_tcp_port}"},
                allow_redirects=False,
            ) as response,
        ):
            assert response.status == 403
    finally:
        await running.runner.cleanup()
