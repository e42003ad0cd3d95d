"""Regenerate docs/screenshots/sign-in.png and feed.png (1200x800) from the real UI.

    .venv/bin/python tests/e2e/screenshots.py

Starts a throw-away embedded PostgreSQL and a pgcast server in this process, the way the tests
do, fills the feed with a short conversation between two users, and photographs the page in
Debian's chromium. Not a test; needs the UI built (`make ui`).
"""

from __future__ import annotations

import asyncio
import socket
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402
from playwright.async_api import async_playwright, expect  # noqa: E402

from server.embedded import embedded_database  # noqa: E402
from server.migrate import migrate  # noqa: E402
from tests.conftest import server_config, start_server  # noqa: E402
from tests.e2e.pages import DESKTOP, Tab, launch_chromium  # noqa: E402

OUT = ROOT / "docs" / "screenshots"

USERS = {"alice": ("alice@example.com", "Alice Martin"), "bob": ("bob@example.com", "Bob Okafor")}
# (author, minutes ago, text): oldest first.
CONVERSATION = [
    ("bob", 48, "Deploy of billing-api 2.14 starts in 10 minutes. Expect a blip on /invoices."),
    ("alice", 46, "Thanks! I'll keep an eye on the error dashboard while it rolls out."),
    ("bob", 31, "Deploy done. All health checks are green."),
    ("alice", 29, "Confirmed: error rate is back to baseline. Closing the incident."),
    (
        "bob",
        12,
        "Reminder: database maintenance tonight at 22:00 UTC.\n"
        "Writes pause for about five minutes; reads keep working.",
    ),
    ("alice", 9, "Noted. I moved the nightly export to 23:00 so the two don't overlap."),
]
LIVE_REPLY = "Sounds good. I'll post here when maintenance starts."


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def seed(conninfo: str) -> None:
    with psycopg.connect(conninfo, autocommit=True, application_name="psql") as conn:
        ids = {}
        for key, (email, name) in USERS.items():
            row = conn.execute(
                "INSERT INTO users (email, name) VALUES (%s, %s) RETURNING id", [email, name]
            ).fetchone()
            assert row is not None
            ids[key] = row[0]
        for author, minutes_ago, text in CONVERSATION:
            conn.execute(
                "INSERT INTO messages (user_id, content, created_at, updated_at) "
                "VALUES (%s, %s, now() - make_interval(mins => %s), "
                "now() - make_interval(mins => %s))",
                [ids[author], text, minutes_ago, minutes_ago],
            )


async def photograph(url: str) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    async with async_playwright() as playwright:
        browser = await launch_chromium(playwright)
        tab = await Tab.open(browser, url, DESKTOP)
        page = tab.page
        await page.goto("/")
        await expect(page.get_by_role("button", name="Sign in")).to_be_visible()
        await page.screenshot(path=OUT / "sign-in.png")

        await tab.sign_in(*USERS["alice"])
        await tab.send(LIVE_REPLY)
        await expect(tab.feed.get_by_text(LIVE_REPLY)).to_be_in_viewport()
        await expect(tab.status).to_have_text("Live")
        # No focus ring or caret in the picture.
        await page.evaluate("document.activeElement.blur()")
        await page.screenshot(path=OUT / "feed.png")
        tab.assert_no_console_errors()
        await browser.close()


async def main() -> None:
    with (
        tempfile.TemporaryDirectory(prefix="pgcast-shots-") as tmp,
        embedded_database(Path(tmp) / "embedded") as conninfo,
    ):
        migrate(conninfo)
        seed(conninfo)
        running = await start_server(server_config(conninfo, Path(tmp), free_port()))
        try:
            await photograph(running.url)
        finally:
            await running.runner.cleanup()
    for name in ("sign-in.png", "feed.png"):
        print(OUT / name)


if __name__ == "__main__":
    asyncio.run(main())
