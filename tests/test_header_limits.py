"""Oversized and malformed request heads: refused with the JSON error body where pgcast gets to
answer, and never logged with the header's value (it is often a token or a cookie)."""

from __future__ import annotations

import logging
import secrets

import aiohttp
import pytest

from tests.conftest import RunningServer
from tests.rawhttp import raw_request


def log_text(caplog: pytest.LogCaptureFixture) -> str:
    """Every log line the test produced, tracebacks included, as an operator would read it."""
    formatter = logging.Formatter("%(levelname)s %(name)s: %(message)s")
    return "\n".join(formatter.format(record) for record in caplog.records)


async def still_serving(server: RunningServer) -> None:
    async with aiohttp.ClientSession() as http, http.get(server.url + "/healthz") as response:
        assert response.status == 200


def token() -> bytes:
    return b"SECRET" + secrets.token_hex(16).encode()


@pytest.mark.parametrize("size", [9_000, 15_000])
async def test_an_oversized_header_is_431_with_the_json_error_and_its_value_is_not_logged(
    server: RunningServer, caplog: pytest.LogCaptureFixture, size: int
) -> None:
    caplog.set_level(logging.DEBUG)
    secret = token()
    value = b"Bearer " + secret + b"x" * size
    response = await raw_request(server.url, "GET", "/api/me", [(b"Authorization", value)])
    assert response.status == 431
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert error["code"] == "header_too_large"
    assert "Authorization" in error["message"]
    assert secret not in response.body
    assert secret.decode() not in log_text(caplog)
    await still_serving(server)


async def test_a_header_beyond_what_the_parser_reads_is_refused_and_its_value_is_not_logged(
    server: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    secret = token()
    cookie = b"pgcast_session=" + secret + b"x" * 100_000
    response = await raw_request(server.url, "GET", "/api/me", [(b"Cookie", cookie)])
    assert response.status in (400, 431)
    text = log_text(caplog)
    assert secret.decode() not in text
    assert "Traceback" not in text
    assert "refused a malformed request" in text
    await still_serving(server)


@pytest.mark.parametrize(
    "header",
    [
        b"Authorization: Bearer {secret}\x01tail",
        b"Cookie: pgcast_session={secret}\x7f",
        b"X-Token {secret}",
    ],
)
async def test_a_malformed_header_is_logged_in_one_line_without_its_value(
    server: RunningServer, caplog: pytest.LogCaptureFixture, header: bytes
) -> None:
    caplog.set_level(logging.DEBUG)
    secret = token()
    name, _, value = header.replace(b"{secret}", secret).partition(b": ")
    headers = [(name, value)] if value else [(name, b"")]
    response = await raw_request(server.url, "GET", "/api/me", headers)
    assert response.status == 400
    text = log_text(caplog)
    assert secret.decode() not in text
    assert "Traceback" not in text
    await still_serving(server)


async def test_a_request_target_too_long_is_414_with_the_json_error(
    server: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    response = await raw_request(server.url, "GET", "/api/messages?before=" + "1" * 10_000)
    assert response.status == 414
    assert response.json()["error"]["code"] == "uri_too_long"
    await still_serving(server)


async def test_many_ordinary_headers_still_work(server: RunningServer) -> None:
    headers = [(f"X-Extra-{n}".encode(), b"v" * 4000) for n in range(20)]
    response = await raw_request(server.url, "GET", "/healthz", headers)
    assert response.status == 200
