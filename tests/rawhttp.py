"""HTTP/1.1 written by hand over a real socket, for bytes that aiohttp's client refuses to send
(invalid UTF-8 in a header, oversized header lines)."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

from yarl import URL

RESPONSE_TIMEOUT = 10.0


@dataclass(frozen=True)
class RawResponse:
    status: int
    headers: dict[str, str]
    """Lower-cased names; a repeated header keeps its last value."""
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


async def raw_request(
    base_url: str,
    method: str,
    path: str | bytes,
    headers: list[tuple[bytes, bytes]] | None = None,
    body: bytes = b"",
) -> RawResponse:
    url = URL(base_url)
    assert url.host is not None
    reader, writer = await asyncio.open_connection(url.host, url.port)
    try:
        target = path.encode() if isinstance(path, str) else path
        head = [
            method.encode() + b" " + target + b" HTTP/1.1",
            f"Host: {url.host}:{url.port}".encode(),
            b"Connection: close",
        ]
        for name, value in headers or []:
            head.append(name + b": " + value)
        if body or method in ("POST", "PUT"):
            head.append(f"Content-Length: {len(body)}".encode())
        writer.write(b"\r\n".join(head) + b"\r\n\r\n" + body)
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), RESPONSE_TIMEOUT)
    finally:
        writer.close()
        await writer.wait_closed()
    return parse_response(raw)


def parse_response(raw: bytes) -> RawResponse:
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers: dict[str, str] = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding") == "chunked":
        body = _unchunk(body)
    return RawResponse(int(status_line.split()[1]), headers, body)


def _unchunk(body: bytes) -> bytes:
    out = b""
    while body:
        size_line, _, rest = body.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out += rest[:size]
        body = rest[size + 2 :]
    return out
