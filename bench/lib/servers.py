"""Servers under test as child processes (pgcast, the bare baselines and the peers), and the
CPU they use (psutil, schedstat)."""

import asyncio
import contextlib
import json
import math
import os
import signal
import socket
import sys
import time
from collections import deque
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Self

import aiohttp
import psutil
from prometheus_client.parser import text_string_to_metric_families
from yarl import URL

from bench.lib import receivers as rx
from bench.lib.results import BenchError, Burst, Usage

BENCH_DIR = Path(__file__).resolve().parent.parent
REPO_DIR = BENCH_DIR.parent
STARTUP_TIMEOUT, STOP_TIMEOUT = 60.0, 20.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((rx.HOST, 0))
        return int(probe.getsockname()[1])


def clean_env(**more: str) -> dict[str, str]:
    """This process's environment without pgcast's or WorkOS's settings, plus `more`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PGCAST_", "WORKOS_"))}
    return {**env, **more}


class ServerProcess:
    """A server started as a child process on `port`; its stderr is drained, its log's tail
    kept. `async with` stops it (SIGTERM) at the end."""

    def __init__(self, name: str, process: asyncio.subprocess.Process, port: int) -> None:
        self.name, self.process, self.port = name, process, port
        self.pid, self.url = process.pid, f"http://{rx.HOST}:{port}"
        self.tail: deque[str] = deque(maxlen=40)
        self.exit_code: int | None = None
        self._drain = asyncio.create_task(self._drain_stderr())

    @classmethod
    async def spawn(
        cls, name: str, command: Sequence[str], env: dict[str, str], port: int, **more: Any
    ) -> Any:
        cwd = more.pop("cwd", REPO_DIR)
        pipes = {"stdin": asyncio.subprocess.DEVNULL, "stdout": asyncio.subprocess.DEVNULL}
        process = await asyncio.create_subprocess_exec(
            *command, cwd=cwd, env=env, stderr=asyncio.subprocess.PIPE, **pipes
        )
        return cls(name, process, port, **more)

    async def _drain_stderr(self) -> None:
        assert self.process.stderr is not None
        while line := await self.process.stderr.readline():
            self.tail.append(line.decode(errors="replace").rstrip())

    async def wait_ready(self, path: str) -> None:
        """Poll `path` until it answers 200; fail with the log tail if the process exits."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + STARTUP_TIMEOUT
        async with aiohttp.ClientSession() as http:
            while loop.time() < deadline and self.process.returncode is None:
                with contextlib.suppress(aiohttp.ClientError, OSError):
                    async with http.get(self.url + path) as response:
                        if response.status == 200:
                            return
                await asyncio.sleep(0.05)
        await self.stop()
        tail = "\n".join(self.tail)
        raise BenchError(f"{self.name} did not become ready at {path}; its log ends:\n{tail}")

    async def stop(self) -> int:
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), STOP_TIMEOUT)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    self.process.kill()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._drain, 5)
        self.exit_code = await self.process.wait()
        return self.exit_code

    def exit_problems(self) -> list[str]:
        return [] if self.exit_code == 0 else [f"{self.name} exited with {self.exit_code}"]

    async def __aenter__(self) -> Any:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()


def pgcast_env(conninfo: str, data_dir: Path, port: int) -> dict[str, str]:
    # One user opens every socket from one address: the per-user and per-address socket
    # limits (20 and 500 by default) would refuse most of them with 429.
    return clean_env(
        DATABASE_URL=conninfo,
        PGCAST_DATA_DIR=str(data_dir),
        PGCAST_HOST=rx.HOST,
        PGCAST_PORT=str(port),
        PGCAST_DEV_LOGIN="1",
        PGCAST_RATE_SOCKETS_PER_USER="0",
        PGCAST_RATE_SOCKETS_PER_IP="0",
    )


class PgcastProcess(ServerProcess):
    """`python -m server serve --no-migrate` on 127.0.0.1, dev login on, socket limits off.
    Several can run on one database, each on its own port and data directory."""

    def __init__(
        self, name: str, process: asyncio.subprocess.Process, port: int, data_dir: Path
    ) -> None:
        super().__init__(name, process, port)
        self.data_dir = data_dir

    @classmethod
    async def start(
        cls,
        conninfo: str,
        workdir: Path,
        *,
        env: dict[str, str] | None = None,
        tree: Path | None = None,
        name: str = "pgcast serve",
    ) -> Self:
        """Started and ready (/readyz). `env` overrides the environment (PGCAST_*); `tree`
        runs another checkout's server (on PYTHONPATH, `-P` keeping this one off sys.path)."""
        port = free_port()
        data_dir = workdir / f"pgcast-{port}"
        full_env = {**pgcast_env(conninfo, data_dir, port), **(env or {})}
        command = [sys.executable, "-m", "server", "serve", "--no-migrate"]
        if tree is not None:
            command.insert(1, "-P")
            full_env["PYTHONPATH"] = str(tree)
        server: PgcastProcess = await cls.spawn(
            name, command, full_env, port, cwd=tree or REPO_DIR, data_dir=data_dir
        )
        await server.wait_ready("/readyz")
        return server

    async def sign_in(
        self, email: str = "bench@example.com", name: str = "Bench"
    ) -> tuple[int, str]:
        """Dev login as one user; its id and the session's Cookie header."""
        [signed] = await self.sign_in_many([(email, name)])
        return signed

    async def sign_in_many(self, people: Sequence[tuple[str, str]]) -> list[tuple[int, str]]:
        """Dev login as each (email, name), a few at a time, each in a cookie jar of its own;
        the user ids and Cookie headers, in the order of `people`."""
        limit = asyncio.Semaphore(rx.CONNECT_CONCURRENCY)

        async def one(email: str, name: str) -> tuple[int, str]:
            body, jar = {"email": email, "name": name}, aiohttp.CookieJar(unsafe=True)
            origin = {"Origin": self.url}
            async with limit, aiohttp.ClientSession(cookie_jar=jar) as http:
                async with http.post(self.url + "/auth/dev-login", json=body, headers=origin) as r:
                    if r.status != 200:
                        raise BenchError(f"dev login failed: {r.status} {await r.text()}")
                    user_id = int((await r.json())["user"]["id"])
                cookies = http.cookie_jar.filter_cookies(URL(self.url))
            return user_id, "; ".join(f"{key}={morsel.value}" for key, morsel in cookies.items())

        return await asyncio.gather(*(one(*person) for person in people))

    async def metrics(self) -> dict[str, float]:
        """The unlabelled samples of /metrics by name."""
        async with aiohttp.ClientSession() as http, http.get(self.url + "/metrics") as response:
            families = text_string_to_metric_families(await response.text())
        return {s.name: s.value for family in families for s in family.samples if not s.labels}


async def frames_burst(
    frames: list[str], ids: Sequence[int], sockets: int, workdir: Path, per_write: int = 1
) -> Burst:
    """bench/bare_socket_server.py, a bare asyncio socket server with no pgcast in it, sends
    `frames` to `sockets` new sockets as fast as it can, `per_write` frames per write; the
    delivery is checked against `ids`, the server's exit with it."""
    path, port = workdir / "baseline-frames.json", free_port()
    await asyncio.to_thread(path.write_text, json.dumps(frames))
    command = [sys.executable, "-m", "bench.bare_socket_server", "--frames", str(path)]
    command += ["--port", str(port)]
    server = await ServerProcess.spawn("bare socket server", command, dict(os.environ), port)
    async with server, aiohttp.ClientSession() as http:
        await server.wait_ready("/ready")
        meter = Meter.for_server(server.pid, None)
        # The server counts a socket before its 101 and connected frame can be read.
        receivers = await rx.open_sockets(port, "/ws", None, sockets, expected=len(frames))
        meter.start()
        (await http.post(f"{server.url}/go?per_write={per_write}")).raise_for_status()
        await rx.wait_delivered(receivers, rx.settle_seconds(len(frames) * sockets))
        usage = await meter.stop()
        delivery = rx.check_delivery(receivers, ids)
        # On an error the server, stopping, drops them instead.
        await rx.close_sockets(receivers)
    delivery.samples += server.exit_problems()
    return Burst(delivery, usage)


NOISY_OTHERS_PERCENT, SATURATED_PERCENT = 25.0, 90.0
# The server is quiet once its CPU stays under 5% of a core for 3 samples 0.2 s apart.
QUIET_PERCENT, QUIET_SAMPLES, QUIET_INTERVAL, QUIET_TIMEOUT = 5.0, 3, 0.2, 30.0


def _cpu_by_pid(root: psutil.Process, children: bool) -> dict[int, float]:
    """CPU seconds of a process, and of its descendants when `children`, by pid (cpu_seconds():
    a PostgreSQL backend's share of one presence join is a few ms, over several backends)."""
    processes, seconds = [root], {}
    with contextlib.suppress(psutil.Error):
        processes += root.children(recursive=True) if children else []
    for process in processes:
        with contextlib.suppress(psutil.Error):
            seconds[process.pid] = cpu_seconds(process.pid)
    return seconds


def cpu_seconds(pid: int) -> float:
    """CPU time of every thread of a process, in ns resolution from schedstat when the kernel
    keeps it (psutil's figure moves in 10 ms ticks, coarse for one broadcast)."""
    total = 0
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError, ValueError, IndexError):
                total += int((task / "schedstat").read_text().split()[0])
    if total > 0:
        return total / 1e9
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


class Meter:
    """CPU% (of one core) of some processes over one phase; host CPU% of all."""

    def __init__(self, watched: dict[str, tuple[psutil.Process, bool]]) -> None:
        self._watched = watched
        self._start: dict[str, dict[int, float]] = {}
        self._started = 0.0
        self._host: Any = None

    @classmethod
    def for_server(cls, pid: int, postmaster: psutil.Process | None, **more: Any) -> Self:
        """A server under test, this process (the load generator), PostgreSQL with its
        backends when the postmaster is known, and any `more` (name: (process, children))."""
        watched = {"server": (psutil.Process(pid), False), "loadgen": (psutil.Process(), False)}
        if postmaster is not None:
            watched["postgres"] = (postmaster, True)
        return cls({**watched, **more})

    def start(self) -> None:
        self._start = {n: _cpu_by_pid(*w) for n, w in self._watched.items()}
        self._host = psutil.cpu_times()
        self._started = time.monotonic()

    async def stop(self) -> Usage:
        elapsed = time.monotonic() - self._started
        host = psutil.cpu_times()
        cpu: dict[str, float] = {}
        for name, watched in self._watched.items():
            start = self._start[name]
            used = sum(v - start.get(pid, 0.0) for pid, v in _cpu_by_pid(*watched).items())
            cpu[name] = 100 * used / elapsed if elapsed > 0 else math.nan
        busy = [sum(t) - t.idle - getattr(t, "iowait", 0.0) for t in (self._host, host)]
        total = sum(host) - sum(self._host)
        host_percent = 100 * (busy[1] - busy[0]) / total if total > 0 else math.nan
        return Usage(elapsed, cpu, host_percent, psutil.cpu_count() or 1)


async def wait_quiet(pid: int) -> float | None:
    """Seconds until a process went quiet, None if it did not within QUIET_TIMEOUT."""
    began, quiet, before = time.monotonic(), 0, cpu_seconds(pid)
    while time.monotonic() - began < QUIET_TIMEOUT:
        await asyncio.sleep(QUIET_INTERVAL)
        now = cpu_seconds(pid)
        quiet = quiet + 1 if 100 * (now - before) / QUIET_INTERVAL < QUIET_PERCENT else 0
        before = now
        if quiet >= QUIET_SAMPLES:
            return time.monotonic() - began
    return None


async def idle_cpu_share(pid: int, seconds: float) -> float:
    """The CPU a server uses idle, as a share of one core: measured over `seconds` once it
    has gone quiet. With thousands of sockets it is not nothing: it pings each every 30 s."""
    await wait_quiet(pid)
    began, cpu_began = time.monotonic(), cpu_seconds(pid)
    await asyncio.sleep(seconds)  # a measuring window, not a wait for an event
    return (cpu_seconds(pid) - cpu_began) / (time.monotonic() - began)


def usage_notes(phases: Iterable[tuple[str, Usage]]) -> list[str]:
    """What makes figures hard to read: other load on the host, a saturated load generator."""
    notes = []
    for phase, usage in phases:
        if usage.others_percent > NOISY_OTHERS_PERCENT:
            notes.append(
                f"{phase}: other processes on the host used {usage.others_percent:.0f}% of a "
                "core: the figures are noisy; rerun on a quiet machine"
            )
        loadgen = usage.cpu_percent.get("loadgen", 0.0)
        if loadgen > SATURATED_PERCENT:
            notes.append(
                f"{phase}: the load generator used {loadgen:.0f}% of a core: it may be the "
                "bottleneck, so frames/s is a lower bound"
            )
    return notes
