"""The Pusher protocol's cost against the native one: the same burst over `/ws` and over
`/app/{key}`, alternating rounds. bench/README.md says how it is measured."""

import contextlib
import json
from dataclasses import dataclass

from bench.lib import render, runner
from bench.lib.receivers import Receiver, close_sockets
from bench.lib.results import Burst, Result, ratio
from bench.lib.servers import usage_notes
from bench.lib.writers import burst_phase, pgcast_session

AIM = 1.2
PUSHER_PREFIX = b'{"event":"new-message","channel":"messages","data":"{\\"message\\": {\\"id\\": '
SUBSCRIBE = json.dumps({"event": "pusher:subscribe", "data": {"channel": "messages"}}).encode()
PONG = json.dumps({"event": "pusher:pong", "data": {}}).encode()
PUSHER_PATH = "/app/{}?protocol=7&client=js&version=8.6.0&flash=false"


class PusherReceiver(Receiver):
    """Subscribes once connected and answers pings, as pusher-js does; ids are read from
    the frames' JSON-string data."""

    prefix = PUSHER_PREFIX

    def _text(self, payload: bytes, now: float) -> None:
        if b'"pusher:ping"' in payload[:40]:
            self.send(0x1, PONG)
        elif self.opened.done():
            super()._text(payload, now)
        elif payload.startswith(b'{"event":"pusher:connection_established"'):
            self.send(0x1, SUBSCRIBE)
        elif b'"pusher_internal:subscription_succeeded"' in payload:
            self.go_live()
        else:
            self._fail(f"unexpected frame before subscribing: {payload[:200]!r}")

    def other_text(self, payload: bytes, now: float) -> None:
        found = None
        with contextlib.suppress(ValueError, KeyError, TypeError):
            frame = json.loads(payload)
            if frame["event"] == "new-message":
                found = json.loads(frame["data"])["message"]["id"]
        if isinstance(found, int):
            self.record(found, now)
        else:
            super().other_text(payload, now)


@dataclass
class Options(runner.Options):
    sockets: int = runner.option(200, 5, "sockets")
    burst: int = runner.option(2000, 100, "messages")
    batch: int = runner.option(100, 20, "rows per INSERT")
    content_chars: int = runner.option(100, None, "message length")
    rounds: int = runner.option(2, 1, "alternating rounds per protocol, 1 or 2")

    def check(self) -> str | None:
        return None if self.rounds in (1, 2) else "--rounds must be 1 or 2"


@dataclass
class PusherResult(Result):
    native: Burst
    pusher: Burst

    @property
    def cost_ratio(self) -> float:
        return ratio(self.pusher.server_us_per_frame, self.native.server_us_per_frame)

    def render(self) -> list[str]:
        rows = [
            f"{name} | {b.frames:,} | {render.num(b.frames_per_second)} | "
            f"{render.us(b.server_us_per_frame)}"
            for name, b in (("/ws (native)", self.native), ("/app/{key} (Pusher)", self.pusher))
        ]
        verdict = "met" if self.cost_ratio <= AIM else "not met"  # NaN, not measured: not met
        o = self.options
        return [
            f"A burst of {o['burst']} messages ({o['batch']} rows per INSERT) to {o['sockets']} "
            f"sockets subscribed to `messages`, over each protocol in turn, on one server "
            f"({o['rounds']} alternating round(s) each, the cheaper kept).",
            "",
            *render.table("protocol | frames | frames/s | server µs per frame", rows),
            "",
            f"Pusher costs {render.num(self.cost_ratio, 2)}× the native protocol per delivered "
            f"frame (aim: at most {AIM}×, {verdict}).",
        ]


async def measure(run: runner.Run[Options]) -> PusherResult:
    o = run.options
    kept: dict[str, Burst] = {}
    problems: list[str] = []
    async with pgcast_session(run) as s:
        key = json.loads((s.server.data_dir / "pusher.json").read_text())["key"]
        paths = {"native": ("/ws", Receiver), "pusher": (PUSHER_PATH.format(key), PusherReceiver)}
        # Alternating rounds, the cheaper of each protocol's kept: a first phase pays for
        # warming up, and other load on the host comes and goes.
        for name in ["native", "pusher", "pusher", "native"][: 2 * o.rounds]:
            path, kind = paths[name]
            receivers = await s.open(path, o.sockets, factory=kind)
            burst, _, _ = await burst_phase(s, receivers, o.burst, o.batch, o.content_chars)
            await close_sockets(receivers)
            problems += burst.delivery.problems(name)
            if name not in kept or burst.server_us_per_frame < kept[name].server_us_per_frame:
                kept[name] = burst
    return PusherResult(
        kept["native"],
        kept["pusher"],
        problems=problems + s.server.exit_problems(),
        notes=usage_notes((name, burst.usage) for name, burst in kept.items()),
    )


SCENARIO = runner.Scenario("pusher", "Pusher protocol against the native one", Options, measure)
