"""Regenerate docs/screenshots/ from the real UI: sign-in.png, feed.png, conversation.png,
notification.png and notifications.png (1200x800), and phone.png (390x844). Alice's
pages show Bob online beside her.

    .venv/bin/python tests/e2e/screenshots.py

Starts a throw-away embedded PostgreSQL and a pgcast server in this process, the way the tests
do, fills the feed with a short conversation between two users, gives them direct messages and
notifications, and photographs the pages in Debian's chromium. Not a test; needs the UI built
(`make ui`).
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402
from playwright.async_api import Page, async_playwright, expect  # noqa: E402

from server.embedded import embedded_database  # noqa: E402
from server.migrate import migrate  # noqa: E402
from tests.conftest import server_config, start_server  # noqa: E402
from tests.e2e.pages import DESKTOP, Tab, launch_chromium  # noqa: E402

OUT = ROOT / "docs" / "screenshots"
PHONE = {"width": 390, "height": 844}
SHOTS = (
    "sign-in.png",
    "feed.png",
    "conversation.png",
    "notification.png",
    "notifications.png",
    "phone.png",
)

USERS = {
    "alice": ("alice@example.com", "Alice Martin"),
    "bob": ("bob@example.com", "Bob Okafor"),
    "carol": ("carol@example.com", "Carol Nguyen"),
}
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
# (from, to, minutes ago, read, text): oldest first. Alice reads as herself.
DIRECT_MESSAGES = [
    ("bob", "alice", 40, True, "Quick one before the maintenance: can you pause the export?"),
    ("alice", "bob", 38, True, "Already moved it to 23:00. Anything else?"),
    ("bob", "alice", 35, True, "That's all. Thanks for covering tonight!"),
    ("carol", "alice", 7, False, "Do you have the new dashboard link?"),
    ("carol", "alice", 6, False, "The old one 404s for me."),
]
DIRECT_REPLY = "No problem. I'll message you if anything looks off."
DIRECT_ANSWER = "Perfect, I'll be on call until midnight."
# (type, minutes ago, read, data): oldest first.
NOTIFICATIONS = [
    (
        "App\\Notifications\\BackupCompleted",
        300,
        True,
        {"title": "Nightly backup completed", "message": "38 GB in 12 minutes."},
    ),
    (
        "App\\Notifications\\InvoicePaid",
        55,
        False,
        {
            "title": "Invoice paid",
            "message": "Invoice #1042 from Acme Corp was paid: 1,200.00 EUR.",
        },
    ),
    (
        "App\\Notifications\\DeployFinished",
        30,
        False,
        {"title": "Deploy finished", "message": "billing-api 2.14 is live on all regions."},
    ),
]
LIVE_NOTIFICATION = (
    "App\\Notifications\\MaintenanceScheduled",
    {
        "title": "Maintenance window starts soon",
        "message": "Writes pause at 22:00 UTC for about five minutes.",
    },
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def seed(conninfo: str) -> dict[str, int]:
    with psycopg.connect(conninfo, autocommit=True, application_name="psql") as conn:
        ids: dict[str, int] = {}
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
        for sender, recipient, minutes_ago, read, text in DIRECT_MESSAGES:
            conn.execute(
                "INSERT INTO direct_messages (sender_id, recipient_id, content, created_at, "
                "updated_at, read_at) VALUES (%s, %s, %s, now() - make_interval(mins => %s), "
                "now() - make_interval(mins => %s), "
                "CASE WHEN %s THEN now() - make_interval(mins => %s) END)",
                [ids[sender], ids[recipient], text, minutes_ago, minutes_ago, read, minutes_ago],
            )
        for type_, minutes_ago, read, data in NOTIFICATIONS:
            conn.execute(
                "INSERT INTO notifications (user_id, type, data, created_at, read_at) "
                "VALUES (%s, %s, %s, now() - make_interval(mins => %s), "
                "CASE WHEN %s THEN now() END)",
                [ids["alice"], type_, json.dumps(data), minutes_ago, read],
            )
        return ids


def write(conninfo: str, sql: str, params: list[object]) -> None:
    """What a DBA or a job does in psql while the pages are open."""
    with psycopg.connect(conninfo, autocommit=True, application_name="psql") as conn:
        conn.execute(sql, params)


async def still(page: Page) -> None:
    """No focus ring, caret or hover highlight in the picture."""
    await page.mouse.move(0, 0)
    await page.evaluate("document.activeElement.blur()")


async def photograph(url: str, conninfo: str, ids: dict[str, int]) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    async with async_playwright() as playwright:
        browser = await launch_chromium(playwright)
        tab = await Tab.open(browser, url, DESKTOP)
        page = tab.page
        await page.goto("/")
        await expect(page.get_by_role("button", name="Sign in")).to_be_visible()
        await page.screenshot(path=OUT / "sign-in.png")

        await tab.sign_in(*USERS["alice"])
        # Bob has the page open too, so Alice's list of who is online has someone in it.
        bob_tab = await Tab.open(browser, url, DESKTOP)
        await bob_tab.sign_in(*USERS["bob"])
        await expect(tab.online_count).to_have_text("2 online")
        await tab.send(LIVE_REPLY)
        await expect(tab.feed.get_by_text(LIVE_REPLY)).to_be_in_viewport()
        await expect(tab.status).to_have_text("Live")
        await expect(tab.conversation_with(ids["carol"]).get_by_label("2 unread")).to_be_visible()
        await still(page)
        await page.screenshot(path=OUT / "feed.png")

        await tab.conversation_with(ids["bob"]).get_by_role("button").click()
        bob = USERS["bob"][1]
        await tab.send_direct(bob, DIRECT_REPLY)
        write(
            conninfo,
            "INSERT INTO direct_messages (sender_id, recipient_id, content) VALUES (%s, %s, %s)",
            [ids["bob"], ids["alice"], DIRECT_ANSWER],
        )
        await expect(tab.thread(bob).get_by_text(DIRECT_ANSWER)).to_be_in_viewport()
        await still(page)
        await page.screenshot(path=OUT / "conversation.png")

        type_, data = LIVE_NOTIFICATION
        write(
            conninfo,
            "INSERT INTO notifications (user_id, type, data) VALUES (%s, %s, %s)",
            [ids["alice"], type_, json.dumps(data)],
        )
        await expect(tab.toasts.first).to_contain_text(data["title"])
        await expect(tab.bell).to_have_accessible_name("Notifications, 3 unread")
        await still(page)
        await page.screenshot(path=OUT / "notification.png")

        await tab.bell.click()
        await expect(tab.notification_panel).to_contain_text(data["title"])
        await still(page)
        await page.screenshot(path=OUT / "notifications.png")
        tab.assert_no_console_errors()

        phone = await Tab.open(browser, url, PHONE)
        await phone.sign_in(*USERS["bob"])
        await phone.page.get_by_role("button", name="Chats").click()
        await phone.conversation_with(ids["alice"]).get_by_role("button").click()
        await expect(phone.thread(USERS["alice"][1]).get_by_text(DIRECT_ANSWER)).to_be_in_viewport()
        await still(phone.page)
        await phone.page.screenshot(path=OUT / "phone.png")
        phone.assert_no_console_errors()
        await browser.close()


async def main() -> None:
    with (
        tempfile.TemporaryDirectory(prefix="pgcast-shots-") as tmp,
        embedded_database(Path(tmp) / "embedded") as conninfo,
    ):
        migrate(conninfo)
        ids = seed(conninfo)
        running = await start_server(server_config(conninfo, Path(tmp), free_port()))
        try:
            await photograph(running.url, conninfo, ids)
        finally:
            await running.runner.cleanup()
    for name in SHOTS:
        print(OUT / name)


if __name__ == "__main__":
    asyncio.run(main())
