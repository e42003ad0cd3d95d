"""examples/echo-react in chromium, served as its README says (`vite preview`, whose proxy
forwards /app, /broadcasting, /api and /auth to pgcast): dev sign-in, then a psql INSERT
reaches useEchoPublic and the seed's Echo component, a notification reaches
useEchoNotification, and useEchoPresence lists the signed-in user."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import pytest_asyncio
from playwright.async_api import Browser, expect

from tests.conftest import RunningServer, create_user
from tests.e2e.pages import Tab

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="module")]

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "echo-react"
# npm writes this on every install, so it is newer than package-lock.json once installed.
INSTALL_STAMP = EXAMPLE / "node_modules" / ".package-lock.json"
BUILT = EXAMPLE / "dist" / "index.html"
BUILD_INPUTS = ("src", "index.html", "vite.config.ts", "package-lock.json", "tsconfig*.json")
# `npm ci` over a cold cache and the first build take a while; neither should take minutes.
BUILD_TIMEOUT = 300.0
PREVIEW_TIMEOUT = 30.0
URL_LINE = re.compile(r"(http://127\.0\.0\.1:\d+)/")


def newest_input() -> float:
    paths = [path for pattern in BUILD_INPUTS for path in EXAMPLE.glob(pattern)]
    files = [f for path in paths for f in (path.rglob("*") if path.is_dir() else [path])]
    return max(f.stat().st_mtime for f in files if f.is_file())


def run(*command: str) -> None:
    done = subprocess.run(
        command, cwd=EXAMPLE, capture_output=True, text=True, timeout=BUILD_TIMEOUT, check=False
    )
    if done.returncode != 0:
        pytest.fail(f"`{' '.join(command)}` in {EXAMPLE} failed:\n{done.stdout}\n{done.stderr}")


@pytest.fixture(scope="module")
def example_built() -> None:
    """`npm ci` and `npm run build`, each only when what it makes is older than its inputs."""
    if shutil.which("npm") is None:
        pytest.fail("the Echo example needs Node.js with npm (see examples/echo-react/README.md)")
    lock = EXAMPLE / "package-lock.json"
    if not INSTALL_STAMP.exists() or INSTALL_STAMP.stat().st_mtime < lock.stat().st_mtime:
        run("npm", "ci", "--no-audit", "--no-fund", "--loglevel=error")
    if not BUILT.exists() or BUILT.stat().st_mtime < newest_input():
        run("npm", "run", "build", "--silent")


@pytest_asyncio.fixture(loop_scope="module")
async def example(
    example_built: None, server: RunningServer, unused_tcp_port_factory: Any
) -> AsyncIterator[str]:
    """The built example under `vite preview`, proxying to the test's pgcast; its URL."""
    port = unused_tcp_port_factory()
    env = {
        **os.environ,
        "PGCAST_URL": server.url,
        "VITE_PGCAST_KEY": server.config.pusher.key,
        "NO_COLOR": "1",
    }
    process = await asyncio.create_subprocess_exec(
        str(EXAMPLE / "node_modules" / ".bin" / "vite"),
        "preview",
        "--port",
        str(port),
        "--strictPort",
        cwd=EXAMPLE,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert process.stdout is not None
    seen: list[str] = []
    try:
        # Vite prints the address once it is listening.
        async with asyncio.timeout(PREVIEW_TIMEOUT):
            while (found := URL_LINE.search("".join(seen))) is None:
                line = await process.stdout.readline()
                if not line:
                    pytest.fail(f"vite preview exited:\n{''.join(seen)}")
                seen.append(line.decode())
        yield found.group(1)
    finally:
        process.terminate()
        await process.wait()


def subscribed(tab: Tab, channel: str) -> int:
    return sum(
        1
        for frame in tab.frames
        if frame.get("event") == "pusher_internal:subscription_succeeded"
        and frame.get("channel") == channel
    )


async def test_the_example_gets_messages_notifications_and_presence_from_pgcast(
    browser: Browser, server: RunningServer, example: str, db: psycopg.AsyncConnection[Any]
) -> None:
    tab = await Tab.open(browser, example)
    try:
        await tab.page.goto("/")
        await tab.page.get_by_label("Email").fill("alice@example.com")
        await tab.page.get_by_label("Name").fill("Alice")
        await tab.page.get_by_role("button", name="Sign in").click()
        await expect(tab.page.get_by_test_id("me")).to_have_text("Alice")

        me = (await (await tab.page.request.get(f"{example}/api/me")).json())["user"]

        members = tab.page.get_by_role("list", name="Members")
        await expect(members.get_by_role("listitem")).to_have_text(["Alice"])

        # Live events are sent from subscription on: wait for every channel before writing.
        # `messages` twice: the hooks' Echo and the seed component's own.
        await tab.wait_until(
            lambda: (
                subscribed(tab, "messages") == 2
                and subscribed(tab, f"private-user.{me['id']}") == 1
                and subscribed(tab, "presence-lobby") == 1
            )
        )

        # Through the proxy: the page's own origin, which the browser sends the cookie to.
        assert all(s.url.startswith(example.replace("http", "ws") + "/app/") for s in tab.sockets)

        author = await create_user(db, "dba@example.com", "DBA")
        await db.execute(
            "INSERT INTO messages (user_id, content) VALUES (%s, 'Maintenance at 22:00')", [author]
        )
        hooked = tab.page.get_by_role("list", name="Messages", exact=True)
        await expect(hooked.get_by_role("listitem")).to_have_text(["DBA: Maintenance at 22:00"])
        seed = tab.page.get_by_role("list", name="Seed messages")
        await expect(seed.get_by_role("listitem")).to_have_text(["DBA: Maintenance at 22:00"])

        await db.execute(
            "INSERT INTO notifications (user_id, type, data) VALUES (%s, 'invoice-paid', %s)",
            [me["id"], json.dumps({"amount": 42})],
        )
        notifications = tab.page.get_by_role("list", name="Notifications")
        await expect(notifications.get_by_role("listitem")).to_have_text(
            ['invoice-paid {"amount":42}']
        )
        tab.assert_no_console_errors()
    finally:
        await tab.close()
