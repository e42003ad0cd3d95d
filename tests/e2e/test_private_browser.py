"""Private chat and notifications in a real chromium, with three people signed in at once."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import pytest_asyncio
from playwright.async_api import Browser, ViewportSize, expect

from tests.conftest import RunningServer, create_user, server_config, start_server
from tests.e2e.pages import OpenTab, Tab

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="module")]

PHONE: ViewportSize = {"width": 390, "height": 844}
MARKUP = "<img src=x onerror=alert(1)>"


async def signed_in_trio(open_tab: OpenTab) -> tuple[Tab, Tab, Tab]:
    """Alice, Bob and Carol, each in their own browser context, signed in through the form."""
    alice, bob, carol = await asyncio.gather(open_tab(), open_tab(), open_tab())
    await asyncio.gather(
        alice.sign_in("alice@example.com", "Alice"),
        bob.sign_in("bob@example.com", "Bob"),
        carol.sign_in("carol@example.com", "Carol"),
    )
    return alice, bob, carol


async def insert_message(db: psycopg.AsyncConnection[Any], user_id: int, content: str) -> int:
    cursor = await db.execute(
        "INSERT INTO messages (user_id, content) VALUES (%s, %s) RETURNING id", [user_id, content]
    )
    row = await cursor.fetchone()
    assert row is not None
    return int(row[0])


async def insert_notification(
    db: psycopg.AsyncConnection[Any], user_id: int, type_: str, data: dict[str, Any]
) -> str:
    """As a DBA or a job would: `INSERT INTO notifications (user_id, type, data) ...`."""
    cursor = await db.execute(
        "INSERT INTO notifications (user_id, type, data) VALUES (%s, %s, %s) RETURNING id",
        [user_id, type_, json.dumps(data)],
    )
    row = await cursor.fetchone()
    assert row is not None
    return str(row[0])


async def barrier(db: psycopg.AsyncConnection[Any], *tabs: Tab) -> None:
    """A public row written after everything else, seen by every tab: each socket delivers
    in commit order, so whatever was going to reach these tabs before it has arrived."""
    ops = await create_user(db, f"barrier-{id(tabs)}@example.com", "Barrier")
    message_id = await insert_message(db, ops, "barrier")
    for tab in tabs:
        await tab.wait_for_frame(
            lambda f: f["event"] == "new-message" and f["data"]["message"]["id"] == message_id
        )


async def test_the_sign_in_screen_logs_no_console_error(open_tab: OpenTab) -> None:
    tab = await open_tab()
    refused: list[str] = []
    tab.page.on(
        "response", lambda r: refused.append(f"{r.status} {r.url}") if r.status >= 400 else None
    )
    await tab.page.goto("/")
    # The form shows once the session answered, so every request it needed is done.
    await expect(tab.page.get_by_role("button", name="Sign in")).to_be_visible()
    tab.assert_no_console_errors()
    assert refused == []

    # Signed in and out again: the sign-in screen it returns to is just as quiet.
    await tab.sign_in("alice@example.com", "Alice")
    await tab.page.get_by_role("button", name="Sign out").click()
    await expect(tab.page.get_by_role("button", name="Sign in")).to_be_visible()
    tab.assert_no_console_errors()


async def test_a_direct_message_reaches_its_recipient_live_and_no_one_else(
    open_tab: OpenTab, db: psycopg.AsyncConnection[Any]
) -> None:
    alice, bob, carol = await signed_in_trio(open_tab)
    alice_id = await alice.user_id()
    text = f"Hi Bob, just for you {MARKUP}"

    await alice.start_conversation("Bob")
    hello = await alice.send_direct("Bob", text)

    # Bob is reading the public feed: the conversation appears in his list, unread.
    entry = bob.conversation_with(alice_id)
    await expect(entry).to_contain_text(text)
    await expect(entry.get_by_label("1 unread")).to_be_visible()
    await entry.get_by_role("button").click()
    await expect(bob.direct_message(hello).locator(".dm-content")).to_have_text(text)
    await expect(entry.get_by_label("1 unread")).to_have_count(0)
    # Viewing it marked it read, and Alice sees that.
    await expect(alice.direct_message(hello)).to_contain_text("Seen")

    reply = await bob.send_direct("Alice", "Got it, thanks")
    await expect(alice.direct_message(reply)).to_contain_text("Got it, thanks")
    assert await alice.thread_contents("Bob") == [text, "Got it, thanks"]
    assert await bob.thread_contents("Alice") == [text, "Got it, thanks"]

    # Carol never hears of it: not on screen, not in a frame.
    await barrier(db, alice, bob, carol)
    await expect(carol.page.get_by_text("just for you")).to_have_count(0)
    await expect(carol.conversations.get_by_role("listitem")).to_have_count(0)
    assert carol.private_frames() == []
    # Each person's socket got each message once; the writer's own socket skipped it.
    assert len(bob.direct_message_frames(hello)) == 1
    assert alice.direct_message_frames(hello) == []
    assert len(alice.direct_message_frames(reply)) == 1
    assert bob.direct_message_frames(reply) == []
    for tab in (alice, bob):
        await expect(tab.direct_message(hello)).to_have_count(1)
        await expect(tab.page.locator('img[src="x"]')).to_have_count(0)
        assert tab.dialogs == []
    for tab in (alice, bob, carol):
        tab.assert_no_console_errors()


async def test_a_notification_inserted_with_sql_is_a_toast_for_its_user_only(
    open_tab: OpenTab, db: psycopg.AsyncConnection[Any]
) -> None:
    alice, bob, carol = await signed_in_trio(open_tab)
    bob_id = await bob.user_id()
    bob_again = await bob.another_tab()
    await expect(bob_again.status).to_have_text("Live")

    notification = await insert_notification(
        db,
        bob_id,
        "App\\Notifications\\DeployFinished",
        {"title": "Deploy finished", "message": f"billing-api 2.14 is live {MARKUP}"},
    )

    for tab in (bob, bob_again):
        toast = tab.toast(notification)
        await expect(toast).to_contain_text("Deploy finished")
        await expect(toast).to_contain_text(f"billing-api 2.14 is live {MARKUP}")
        await expect(tab.bell).to_have_accessible_name("Notifications, 1 unread")
    await barrier(db, alice, bob, carol)
    for tab in (alice, carol):
        await expect(tab.toasts).to_have_count(0)
        await expect(tab.bell).to_have_accessible_name("Notifications")
        assert tab.private_frames() == []

    # Read in one tab: the other's badge follows, and its toast goes.
    await bob.bell.click()
    await bob.notification_panel.get_by_role("button", name="Mark “Deploy finished” read").click()
    for tab in (bob, bob_again):
        await expect(tab.bell).to_have_accessible_name("Notifications")
    await expect(bob_again.toast(notification)).to_have_count(0)
    await expect(bob.notification_panel.get_by_text("All read", exact=True)).to_be_visible()
    await expect(bob.page.locator('img[src="x"]')).to_have_count(0)
    for tab in (alice, bob, bob_again, carol):
        tab.assert_no_console_errors()


# While Bob's server is down, chromium logs each refused reconnect attempt.
REFUSED_WHILE_DOWN = (
    re.compile(
        r"WebSocket connection to 'ws://127\.0\.0\.1:\d+/ws\?channels=[^']+&after=[^']+' "
        r"failed: Error in connection establishment: net::ERR_CONNECTION_REFUSED @ .*"
    ),
    re.compile(
        r"Failed to load resource: net::ERR_CONNECTION_REFUSED"
        r" @ http://127\.0\.0\.1:\d+/api/session"
    ),
)


@pytest_asyncio.fixture(loop_scope="module")
async def second_server(
    database_url: str, tmp_path: Path, unused_tcp_port_factory: Any
) -> AsyncIterator[RunningServer]:
    """Another pgcast process on the same database (and session key), on its own port."""
    running = await start_server(server_config(database_url, tmp_path, unused_tcp_port_factory()))
    yield running
    await running.runner.cleanup()


async def test_someone_away_while_others_write_gets_everything_once_on_return(
    open_tab: OpenTab,
    browser: Browser,
    second_server: RunningServer,
    db: psycopg.AsyncConnection[Any],
) -> None:
    alice, carol = await asyncio.gather(open_tab(), open_tab())
    # Bob's page talks to a server of its own, so it can go away while the others write.
    bob = await Tab.open(browser, second_server.url)
    try:
        await asyncio.gather(
            alice.sign_in("alice@example.com", "Alice"),
            bob.sign_in("bob@example.com", "Bob"),
            carol.sign_in("carol@example.com", "Carol"),
        )
        alice_id, bob_id = await alice.user_id(), await bob.user_id()
        await alice.start_conversation("Bob")
        first = await alice.send_direct("Bob", "before you left")
        await expect(bob.conversation_with(alice_id)).to_contain_text("before you left")

        await second_server.runner.cleanup()
        await expect(bob.status).to_have_text("Reconnecting…")
        written = [await alice.send_direct("Bob", f"while you were away {n}") for n in (1, 2, 3)]
        notification = await insert_notification(
            db, bob_id, "deploy-finished", {"title": "Deploy finished"}
        )
        ops = await create_user(db, "ops@example.com", "Ops")
        public = await insert_message(db, ops, "a public message meanwhile")
        await expect(carol.message(public)).to_be_visible()

        restarted = await start_server(second_server.config)
        try:
            await expect(bob.status).to_have_text("Live", timeout=20_000)
            entry = bob.conversation_with(alice_id)
            await expect(entry).to_contain_text("while you were away 3")
            await expect(entry.get_by_label("4 unread")).to_be_visible()
            await expect(bob.toast(notification)).to_contain_text("Deploy finished")
            await expect(bob.bell).to_have_accessible_name("Notifications, 1 unread")
            await expect(bob.message(public)).to_be_visible()
            await barrier(db, bob)

            # The resumed socket replayed each missed event once: one cursor for every channel.
            connected = [f for f in bob.frames if f["event"] == "connected"]
            assert len(connected) == 2, connected
            assert connected[1]["data"]["channels"] == [
                "messages",
                f"private-user.{bob_id}",
                "presence-lobby",
            ]
            for direct_message_id in (first, *written):
                assert len(bob.direct_message_frames(direct_message_id)) == 1
            assert len(bob.message_frames(public)) == 1
            await expect(bob.toasts).to_have_count(1)

            await entry.get_by_role("button").click()
            expected = ["before you left", *(f"while you were away {n}" for n in (1, 2, 3))]
            await expect(bob.thread("Alice").locator(".dm-content")).to_have_text(expected)
            await expect(bob.conversation_with(alice_id).locator(".badge")).to_have_count(0)

            # A fresh page (history, no replay) shows the same, once each.
            await bob.page.reload()
            await expect(bob.status).to_have_text("Live")
            await bob.conversation_with(alice_id).get_by_role("button").click()
            await expect(bob.thread("Alice").locator(".dm-content")).to_have_text(expected)
            await expect(bob.bell).to_have_accessible_name("Notifications, 1 unread")
            await expect(bob.toasts).to_have_count(0)
            bob.assert_no_console_errors(expected=REFUSED_WHILE_DOWN)
            alice.assert_no_console_errors()
            carol.assert_no_console_errors()
        finally:
            await restarted.runner.cleanup()
    finally:
        await bob.close()


async def test_conversations_and_notifications_work_on_a_phone(
    open_tab: OpenTab, db: psycopg.AsyncConnection[Any]
) -> None:
    alice = await open_tab(viewport=PHONE)
    bob = await open_tab()
    await asyncio.gather(
        alice.sign_in("alice@example.com", "Alice Montgomery-Smith"),
        bob.sign_in("bob@example.com", "Bob"),
    )
    page = alice.page

    async def fits() -> None:
        width = await page.evaluate("document.documentElement.scrollWidth")
        assert width <= PHONE["width"], width

    # The feed and the conversations take turns; the sidebar is a view of its own.
    await expect(alice.feed).to_be_in_viewport()
    await expect(page.get_by_label("Find people")).to_be_hidden()
    await page.get_by_role("button", name="Chats").click()
    await expect(page.get_by_label("Find people")).to_be_in_viewport()
    await expect(alice.feed).to_be_hidden()
    await fits()

    await alice.start_conversation("Bob")
    await expect(alice.conversations).to_be_hidden()
    long_line = "See https://example.com/" + "a-very-long-path-segment-" * 8 + " for details"
    sent = await alice.send_direct("Bob", long_line)
    await expect(alice.direct_message(sent)).to_be_in_viewport()
    await expect(alice.direct_composer("Bob")).to_be_in_viewport()
    await expect(page.get_by_role("button", name="Send")).to_be_in_viewport()
    reply = await bob_replies(bob, await alice.user_id())
    await expect(alice.direct_message(reply)).to_be_in_viewport()
    await fits()
    scroll = await alice.thread("Bob").evaluate("log => [log.scrollWidth, log.clientWidth]")
    assert scroll[0] <= scroll[1], scroll

    notification = await insert_notification(
        db, await alice.user_id(), "invoice-paid", {"title": "Invoice paid", "message": "€12"}
    )
    toast = alice.toast(notification)
    await expect(toast).to_be_in_viewport()
    await toast.locator(".toast-main").click()
    # On a phone the notifications take the whole screen.
    panel = alice.notification_panel
    await expect(panel).to_be_in_viewport()
    box = await panel.bounding_box()
    assert box is not None
    assert box["width"] >= PHONE["width"] - 1, box
    await panel.get_by_role("button", name="Mark all read").click()
    await expect(alice.bell).to_have_accessible_name("Notifications")
    await panel.get_by_role("button", name="Close notifications").click()

    await page.get_by_role("button", name="← Chats").click()
    await expect(alice.conversations).to_be_in_viewport()
    await page.get_by_role("button", name="Feed", exact=True).click()
    await expect(alice.composer).to_be_in_viewport()
    await fits()
    alice.assert_no_console_errors()
    bob.assert_no_console_errors()


async def bob_replies(bob: Tab, alice_id: int) -> int:
    await bob.conversation_with(alice_id).get_by_role("button").click()
    return await bob.send_direct("Alice Montgomery-Smith", "Thanks, will read it on the train")
