"""Replay: one client resumes from a cursor taken before a backlog of N events.
bench/README.md says how it is measured."""

import asyncio
import math
from dataclasses import dataclass
from urllib.parse import quote

from bench.lib import render, runner
from bench.lib.receivers import check_delivery, close_sockets, wait_delivered
from bench.lib.results import Burst, Result, ratio
from bench.lib.servers import frames_burst, usage_notes, wait_quiet
from bench.lib.writers import Session, pgcast_session, write_burst

TARGET = 50_000.0
BACKLOG_BATCH = 1000
# A duplicate sent after the last expected frame would otherwise go unseen.
DUPLICATE_GRACE_SECONDS = 0.3


@dataclass
class Options(runner.Options):
    events: int = runner.option(100_000, 2_000, "backlog events to replay")
    content_bytes: int = runner.option(200, None, "bytes of each message's content")


@dataclass
class Replay:
    events: int
    seconds: float  # connection made -> last frame read
    burst: Burst

    @property
    def events_per_second(self) -> float:
        return ratio(self.events, self.seconds) if self.burst.ok else math.nan


@dataclass
class ResumeResult(Result):
    replay: Replay
    bare: Burst

    @property
    def ratio_to_bare_socket(self) -> float:
        return ratio(self.replay.events_per_second, self.bare.frames_per_second)

    def render(self) -> list[str]:
        replay, bare = self.replay, self.bare
        rows = [
            f"setup | {replay.events:,} events of {self.options['content_bytes']}-byte messages, "
            f"{BACKLOG_BATCH:,} per INSERT, 1 socket",
            "**replay events/s** (connection made → last frame) | "
            f"**{render.num(replay.events_per_second)}** (target {TARGET:,.0f})",
            "**bare socket events/s** (a bare asyncio socket server, the same frames, 1 socket) | "
            f"**{render.num(bare.frames_per_second)}**",
            f"**replay / bare socket** | **{render.num(self.ratio_to_bare_socket, 2)}**",
        ]
        return render.figures(rows)


async def replay_phase(s: Session, cursor: str | None, ids: list[int]) -> tuple[Replay, list[str]]:
    """One socket resuming from `cursor`; every id once, in order. Its phase starts before it
    connects: replayed frames may come in the same read as the connected frame."""
    path = "/ws?after=" + quote(cursor or "", safe="")
    s.meter.start()
    [receiver] = await s.open(path, 1, expected=len(ids), keep_text=True)
    await wait_delivered([receiver], 15 + len(ids) / 5000)
    usage = await s.meter.stop()
    await asyncio.sleep(DUPLICATE_GRACE_SECONDS)  # a window for a late duplicate to show
    delivery = check_delivery([receiver], ids)
    seconds = (receiver.times or [math.nan])[-1] - receiver.connection_made_at
    return Replay(len(ids), seconds, Burst(delivery, usage)), receiver.texts


async def measure(run: runner.Run[Options]) -> ResumeResult:
    o = run.options
    async with pgcast_session(run) as s:
        [before] = await s.open("/ws", 1)
        await close_sockets([before])
        # The replay's plan depends on these statistics; autoanalyze would change them at a
        # moment of its choosing.
        s.writer.execute("ALTER TABLE broadcasts SET (autovacuum_enabled = off)")
        s.writer.commit()
        backlog = (s.writer, s.user_id, o.events, BACKLOG_BATCH, o.content_bytes)
        ids = await asyncio.to_thread(write_burst, *backlog)
        quiet = await wait_quiet(s.server.pid)
        replay, texts = await replay_phase(s, before.cursor, ids)
    bare = await frames_burst(texts, ids, 1, run.workdir)
    problems = replay.burst.delivery.problems("replay") + bare.delivery.problems("bare socket")
    problems += s.server.exit_problems()
    notes = usage_notes([("replay", replay.burst.usage), ("bare socket", bare.usage)])
    if quiet is None:
        notes.append("the server did not go quiet after the backlog: its listener was busy")
    if not replay.events_per_second >= TARGET:
        notes.append(f"replay below the target of {TARGET:,.0f} events/s to one client")
    return ResumeResult(replay, bare, problems=problems, notes=notes)


SCENARIO = runner.Scenario("resume", "resume bench", Options, measure)
