"""The load generator's sockets: a minimal RFC 6455 client, the delivery check, a fleet of
sockets kept at a count, and a child process of receivers at a lower CPU priority."""

import asyncio
import base64
import contextlib
import functools
import hashlib
import json
import math
import multiprocessing
import os
import time
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from typing import Any, cast

from bench.lib.results import BenchError, Delivery

HOST = "127.0.0.1"
CONNECT_TIMEOUT, CONNECT_CONCURRENCY, SETTLE_TIMEOUT = 10.0, 25, 15.0
# Frames still in flight after a saturated phase are waited for this long before the
# sockets that are behind are replaced, so they cannot leak into the next phase.
DRAIN_SECONDS = 90.0
# The count of a phase whose frames are only known at its end.
OPEN_ENDED = 1 << 62
WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
OP_TEXT, OP_CLOSE, OP_PING, OP_PONG = 0x1, 0x8, 0x9, 0xA
# The native codec writes `data` as PostgreSQL prints jsonb (a space after each colon and
# comma); older servers, the peers and socket_limit's frames write it compact.
NEW_MESSAGE_PREFIX = b'{"event":"new-message","channel":"messages","data":{"message":{"id":'
JSONB_PREFIX = b'{"event":"new-message","channel":"messages","data":{"message": {"id": '


def message_id(payload: bytes) -> int | None:
    """The message id of a new-message frame, None for any other frame."""
    for prefix in (JSONB_PREFIX, NEW_MESSAGE_PREFIX):
        if payload.startswith(prefix):
            with contextlib.suppress(ValueError):
                return int(payload[len(prefix) : payload.find(b",", len(prefix))])
    # Another channel's (bench/channels.py) or another shape's: read as JSON.
    with contextlib.suppress(ValueError, KeyError, TypeError, AttributeError):
        frame = json.loads(payload)
        found = frame["data"]["message"]["id"] if frame.get("event") == "new-message" else None
        return found if isinstance(found, int) else None
    return None


def accept_key(key: str) -> str:
    """The Sec-WebSocket-Accept that answers Sec-WebSocket-Key `key`."""
    digest = hashlib.sha1((key + WS_GUID).encode(), usedforsecurity=False).digest()
    return base64.b64encode(digest).decode()


def handshake(port: int, path: str, cookie: str | None) -> tuple[bytes, str]:
    """An RFC 6455 upgrade request and the Sec-WebSocket-Accept the server must answer."""
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [f"GET {path} HTTP/1.1", f"Host: {HOST}:{port}", "Upgrade: websocket"]
    lines += ["Connection: Upgrade", f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13"]
    lines += [f"Origin: http://{HOST}:{port}", *([f"Cookie: {cookie}"] if cookie else [])]
    return ("\r\n".join(lines) + "\r\n\r\n").encode(), accept_key(key)


class Receiver(asyncio.Protocol):
    """A minimal client WebSocket (handshake, unmasked server frames, ping/pong, close) that
    parses all the frames of one read in one call; records (receive time, message id) for
    the current phase."""

    # The start of the frames the fast path reads an id from (bench/pusher.py's differ).
    prefix = NEW_MESSAGE_PREFIX

    def __init__(self, index: int, request: bytes, accept: str) -> None:
        loop = asyncio.get_running_loop()
        self.index, self._request, self._accept = index, request, accept
        self.opened: asyncio.Future[None] = loop.create_future()
        self.lost: asyncio.Future[None] = loop.create_future()
        self.connection_made_at = math.nan
        self.cursor: str | None = None
        self.closed, self.close_code, self.close_reason = False, cast(int | None, None), ""
        self.done = asyncio.Event()
        self.start_phase(0)
        self._transport: asyncio.Transport | None = None
        self._rest = b""
        self._upgraded = self._live = self._close_sent = False

    def start_phase(self, expected: int, keep_text: bool = False) -> None:
        self.times: list[float] = []
        self.ids: list[int] = []
        self.texts: list[str] = []
        self.keep_text, self.other_frames = keep_text, 0
        self.other_samples: list[str] = []
        self.expect(expected)

    def expect(self, expected: int) -> None:
        """Wait for `expected` frames of this phase (known only once its writes are done)."""
        self.expected = expected
        (self.done.set if self.closed or len(self.ids) >= expected else self.done.clear)()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.connection_made_at = time.time()
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)
        self._transport.write(self._request)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.close_reason = self.close_reason or ("" if exc is None else repr(exc))
        if not self.opened.done():
            self.opened.set_exception(BenchError(f"socket {self.index} lost: {self.close_reason}"))
        if not self.lost.done():
            self.lost.set_result(None)
        self.done.set()

    def data_received(self, data: bytes) -> None:
        now, buffer = time.time(), self._rest + data if self._rest else data
        if not self._upgraded:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                self._rest = buffer
                if len(buffer) > 65536:
                    self._fail("handshake response too long")
                return
            status, *lines = buffer[:end].decode("latin-1").split("\r\n")
            pairs = (line.partition(":") for line in lines)
            headers = {name.strip().lower(): value.strip() for name, _, value in pairs}
            if " 101 " not in f"{status} " or headers.get("sec-websocket-accept") != self._accept:
                self._fail(f"upgrade refused: {status}, Sec-WebSocket-Accept {headers}")
                return
            self._upgraded, buffer = True, buffer[end + 4 :]
        self._rest = self._parse(buffer, now)

    def _parse(self, buffer: bytes, now: float) -> bytes:
        position, size, ids, times = 0, len(buffer), self.ids, self.times
        jsonb, prefix, fast = JSONB_PREFIX, self.prefix, self._live and not self.keep_text
        while size - position >= 2:
            first, length = buffer[position], buffer[position + 1]
            start = position + (2 if length < 126 else 4 if length == 126 else 10)
            if start > size:
                break
            if length > 125:
                if length & 0x80:
                    self._fail("the server masked a frame")
                    return b""
                length = int.from_bytes(buffer[position + 2 : start])
            if (end := start + length) > size:
                break
            position = end
            # A new message's id read inline: at a few hundred thousand frames/s, calls per
            # frame would make the load generator the bottleneck.
            if fast and first == 0x81:
                at = start + len(jsonb) if buffer.startswith(jsonb, start) else -1
                at = start + len(prefix) if at < 0 and buffer.startswith(prefix, start) else at
                try:
                    found = int(buffer[at : buffer.find(b",", at, end)]) if at > 0 else -1
                except ValueError:
                    found = -1
                if found >= 0:
                    ids.append(found)
                    times.append(now)
                    if len(ids) >= self.expected:
                        self.done.set()
                    continue
            # Servers here send whole frames: a fragment, like any other opcode, is unexpected.
            payload, opcode = buffer[start:end], first & 0x0F
            if first == 0x80 | OP_TEXT:
                self._text(payload, now)
            elif opcode == OP_PING:
                self.send(OP_PONG, payload)
            elif opcode == OP_CLOSE:
                self.close_code = int.from_bytes(payload[:2]) if len(payload) >= 2 else None
                self.close_reason, self.closed = payload[2:].decode(errors="replace"), True
                if not self._close_sent:
                    self.send(OP_CLOSE, payload[:2])
                if self._transport is not None:
                    self._transport.close()
                self.done.set()
            elif opcode != OP_PONG:
                self.other_text(f"opcode {opcode} frame of {len(payload)} bytes".encode(), now)
            fast = self._live and not self.keep_text
        return buffer[position:]

    def _text(self, payload: bytes, now: float) -> None:
        if not self.opened.done() and b'"event":"connected"' not in payload:
            self._fail(f"expected a connected frame, got {payload[:200]!r}")
        elif not self.opened.done():
            with contextlib.suppress(ValueError, KeyError, TypeError):
                self.cursor = json.loads(payload)["data"]["cursor"]
            self.go_live()
        elif (found := message_id(payload)) is None:
            self.other_text(payload, now)
        else:
            self.record(found, now)
            self.texts += [payload.decode()] if self.keep_text else []

    def record(self, found: int, now: float) -> None:
        self.times.append(now)
        self.ids.append(found)
        if len(self.ids) >= self.expected:
            self.done.set()

    def go_live(self) -> None:
        self._live = True
        self.opened.set_result(None)

    def other_text(self, payload: bytes, now: float) -> None:
        """A live frame other than a new message: unexpected, unless a subclass reads it."""
        self.other_frames += 1
        if len(self.other_samples) < 3:
            self.other_samples.append(payload[:300].decode(errors="replace"))

    def send(self, opcode: int, payload: bytes) -> None:
        """A masked client frame (payload under 126 bytes)."""
        if self._transport is None or self._transport.is_closing():
            return
        self._close_sent |= opcode == OP_CLOSE
        mask = os.urandom(4)
        masked = bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))
        self._transport.write(bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + masked)

    def _fail(self, reason: str) -> None:
        self.close_reason = reason
        if not self.opened.done():
            self.opened.set_exception(BenchError(f"socket {self.index}: {reason}"))
        self.abort()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    def pause(self, paused: bool) -> None:
        """Stop (or start again) reading from the socket."""
        if self._transport is not None and not self._transport.is_closing():
            (self._transport.pause_reading if paused else self._transport.resume_reading)()

    async def close(self) -> None:
        """Close handshake (1000), then wait for the server to hang up."""
        if self._transport is not None:
            self.send(OP_CLOSE, (1000).to_bytes(2))
            try:
                await asyncio.wait_for(asyncio.shield(self.lost), 5)
            except TimeoutError:
                self.abort()


def check_delivery(
    receivers: Sequence[Receiver], expected_ids: Sequence[int], ordered: bool = True
) -> Delivery:
    """Every socket must get every expected id exactly once and, when `ordered`, in id order
    (one writer committing one transaction at a time: id order is commit order)."""
    expected = set(expected_ids)
    result = Delivery(sockets=len(receivers), expected_per_socket=len(expected))
    if times := [r.times for r in receivers if r.times]:
        result.first_at, result.last_at = min(t[0] for t in times), max(t[-1] for t in times)
    for receiver in receivers:
        seen: set[int] = set()
        highest = -1
        for found in receiver.ids:
            result.frames += 1
            if found not in expected:
                result.unexpected += 1
            elif found in seen:
                result.duplicates += 1
            else:
                seen.add(found)
                result.out_of_order += ordered and found < highest
                highest = max(highest, found)
        result.losses += len(expected - seen)
        result.other_frames += receiver.other_frames
        if receiver.closed:
            result.closed_sockets += 1
            closed = f"code={receiver.close_code} {receiver.close_reason}".strip()
            result.samples.append(f"socket {receiver.index} closed: {closed}")
        result.samples += [f"socket {receiver.index}: {s}" for s in receiver.other_samples]
    del result.samples[5:]
    return result


def frames_of(receiver: Receiver) -> int:
    """Every frame of the phase: ids, a PrivateReceiver's notifications and unexpected ones."""
    return len(receiver.ids) + len(getattr(receiver, "notifications", [])) + receiver.other_frames


async def open_sockets(
    port: int,
    path: str,
    cookie: str | None,
    count: int,
    *,
    concurrency: int = CONNECT_CONCURRENCY,
    first_index: int = 0,
    factory: Callable[[int, bytes, str], Receiver] = Receiver,
    expected: int = 0,
    keep_text: bool = False,
) -> list[Receiver]:
    """`count` sockets (`factory(index, upgrade request, expected accept)`), `concurrency`
    handshakes at a time, each past its `connected` frame, its phase started first (frames
    in the same read count), by index; if any fails, all are closed and BenchError raised."""
    loop, limit = asyncio.get_running_loop(), asyncio.Semaphore(concurrency)
    receivers: list[Receiver] = []

    async def connect(index: int) -> None:
        receiver = factory(index, *handshake(port, path, cookie))
        receiver.start_phase(expected, keep_text)
        receivers.append(receiver)
        async with limit, asyncio.timeout(CONNECT_TIMEOUT):
            await loop.create_connection(lambda: receiver, HOST, port)
            await receiver.opened

    indexes = range(first_index, first_index + count)
    results = await asyncio.gather(*(connect(i) for i in indexes), return_exceptions=True)
    if errors := [r for r in results if isinstance(r, BaseException)]:
        await close_sockets(receivers)  # a receiver that never connected has nothing to close
        raise BenchError(f"{len(errors)} of {count} sockets failed to open: {errors[0]!r}")
    return sorted(receivers, key=lambda r: r.index)


async def open_each(
    people: Sequence[tuple[int, str]],
    where: Callable[[int, int], tuple[int, str]],
    factory: Callable[..., Receiver],
    first_index: int = 0,
) -> list[Any]:
    """One socket per (user id, Cookie header), CONNECT_CONCURRENCY handshakes at a time, on
    the (port, path) `where(index, user id)` gives; `factory` takes `user_id` too."""
    limit = asyncio.Semaphore(CONNECT_CONCURRENCY)

    async def one(index: int, user_id: int, cookie: str) -> Receiver:
        make = functools.partial(factory, user_id=user_id)
        async with limit:
            port, path = where(index, user_id)
            [opened] = await open_sockets(port, path, cookie, 1, first_index=index, factory=make)
        return opened

    numbered = enumerate(people, first_index)
    return await asyncio.gather(*(one(index, *person) for index, person in numbered))


async def close_sockets(receivers: Sequence[Receiver]) -> None:
    await asyncio.gather(*(r.close() for r in receivers), return_exceptions=True)


async def wait_delivered(receivers: Sequence[Receiver], limit_seconds: float) -> bool:
    """Until every socket has its expected frames (or closed); False on timeout."""
    try:
        async with asyncio.timeout(limit_seconds):
            for receiver in receivers:
                await receiver.done.wait()
    except TimeoutError:
        return False
    return True


def settle_seconds(frames: int) -> float:
    """How long `frames` frames in all may take to arrive."""
    return SETTLE_TIMEOUT + frames / 5000


class Fleet:
    """The open sockets of one user, topped up to a count; dead ones are replaced.
    `first_alone`: the first socket opens before the others (broadcaster's Postgres backend
    fails when its first subscriptions to a channel run concurrently, encode/broadcaster#22)."""

    def __init__(self, port: int = 0, cookie: str | None = None, first_alone: bool = False) -> None:
        self.receivers: list[Receiver] = []
        self._port, self._cookie, self._first_alone = port, cookie, first_alone

    async def ensure(self, count: int) -> int:
        alive = [r for r in self.receivers if not r.closed]
        if not alive and self._first_alone and count > 1:
            alive = await open_sockets(self._port, "/ws", self._cookie, 1)
        if (n := count - len(alive)) > 0:
            alive += await open_sockets(self._port, "/ws", self._cookie, n, first_index=len(alive))
        await close_sockets(alive[count:])
        self.receivers = alive[:count]
        return count

    async def settle(self) -> None:
        """After a phase: wait for stragglers; replace the sockets closed or behind."""
        await wait_delivered(self.receivers, DRAIN_SECONDS)
        if behind := [r for r in self.receivers if r.closed or not r.done.is_set()]:
            await close_sockets(behind)
            count = len(self.receivers)
            self.receivers = [r for r in self.receivers if r not in behind]
            await self.ensure(count)

    async def start(self, expected: int = OPEN_ENDED) -> None:
        for receiver in self.receivers:
            receiver.start_phase(expected)

    async def finish(self, ids: Sequence[int], limit_seconds: float) -> Delivery:
        """Every id exactly once on every socket, not in order (several writers); then the
        sockets closed or behind are replaced."""
        for receiver in self.receivers:
            receiver.expect(len(ids))
        await wait_delivered(self.receivers, limit_seconds)
        delivery = check_delivery(self.receivers, ids, ordered=False)
        await self.settle()
        return delivery

    async def close(self) -> None:
        await close_sockets(self.receivers)


class ReceiverProcess:
    """A Fleet in a child process of its own, at a lower CPU priority, so that its sockets
    take the CPU the writers and PostgreSQL leave and catch up once the writers stop.
    `await call("finish", ids, limit)` runs `Fleet.finish(ids, limit)` there."""

    def __init__(self, nice: int, port: int, cookie: str | None) -> None:
        # spawn: a fork would copy the parent's running event loop and threads.
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        args = (child, nice, port, cookie)
        self._process = context.Process(target=_child_main, args=args, daemon=True)
        self._process.start()
        child.close()

    async def call(self, method: str, *args: Any) -> Any:
        self._conn.send((method, *args))
        if isinstance(answer := await asyncio.to_thread(self._conn.recv), BaseException):
            raise answer
        return answer

    async def close(self) -> None:
        try:
            await self.call("close")
        finally:
            self._conn.close()
            await asyncio.to_thread(self._process.join, 10)
            if self._process.is_alive():
                self._process.kill()


def _child_main(conn: Connection, nice: int, port: int, cookie: str | None) -> None:
    from bench.lib.runner import run_load_generator

    os.nice(nice)
    run_load_generator(_serve(conn, port, cookie))


async def _serve(conn: Connection, port: int, cookie: str | None) -> None:
    fleet, command = Fleet(port, cookie), ""
    while command != "close":
        # A thread, not add_reader: uvloop makes a watched descriptor non-blocking, and
        # Connection.recv then fails halfway through a message.
        command, *params = await asyncio.to_thread(conn.recv)
        try:
            conn.send(await getattr(fleet, command)(*params))
        except Exception as error:
            conn.send(error)  # the parent raises it
