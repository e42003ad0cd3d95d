"""Who is online, in a real chromium against a real pgcast server and PostgreSQL: two people
signed in through the dev-login form, each in their own browser context."""

from __future__ import annotations

import asyncio
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
# How long a user whose last socket closed stays a member (a reload within it announces no
# leave and join). Short here, so a page that closes is gone from the list soon.
PRESENCE_GRACE = 0.5
# Gone within the grace plus this: the close reaching the server, the leave being written
# and delivered, and a render, on a machine busy with other work.
LEAVE_BOUND = 8.0


@pytest_asyncio.fixture(loop_scope="module")
async def server(
    database_url: str, tmp_path: Path, unused_tcp_port: int
) -> AsyncIterator[RunningServer]:
    config = server_config(
        database_url, tmp_path, unused_tcp_port, PGCAST_PRESENCE_GRACE=str(PRESENCE_GRACE)
    )
    running = await start_server(config)
    yield running
    await running.runner.cleanup()


@pytest_asyncio.fixture(loop_scope="module")
async def second_server(
    database_url: str, tmp_path: Path, unused_tcp_port_factory: Any
) -> AsyncIterator[RunningServer]:
    """Another pgcast process on the same database (and session key), on its own port."""
    config = server_config(
        database_url,
        tmp_path,
        unused_tcp_port_factory(),
        PGCAST_PRESENCE_GRACE=str(PRESENCE_GRACE),
    )
    running = await start_server(config)
    yield running
    await running.runner.cleanup()


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


async def signed_in_pair(
    open_tab: OpenTab, alice_viewport: ViewportSize | None = None
) -> tuple[Tab, Tab]:
    alice, bob = await asyncio.gather(open_tab(viewport=alice_viewport), open_tab())
    await asyncio.gather(
        alice.sign_in("alice@example.com", "Alice"), bob.sign_in("bob@example.com", "Bob")
    )
    return alice, bob


async def barrier(db: psycopg.AsyncConnection[Any], *tabs: Tab) -> None:
    """A public row written after everything else, seen by every tab: each socket delivers
    in commit order, so whatever was going to reach these tabs before it has arrived."""
    ops = await create_user(db, f"barrier-{id(tabs)}@example.com", "Barrier")
    cursor = await db.execute(
        "INSERT INTO messages (user_id, content) VALUES (%s, 'barrier') RETURNING id", [ops]
    )
    row = await cursor.fetchone()
    assert row is not None
    for tab in tabs:
        await tab.wait_for_frame(
            lambda f: f["event"] == "new-message" and f["data"]["message"]["id"] == row[0]
        )


async def test_two_people_see_each_other_online_and_one_who_leaves_is_gone_for_the_other(
    open_tab: OpenTab, db: psycopg.AsyncConnection[Any]
) -> None:
    alice, bob = await signed_in_pair(open_tab)
    alice_id, bob_id = await alice.user_id(), await bob.user_id()

    for tab, me, other in ((alice, "Alice", "Bob"), (bob, "Bob", "Alice")):
        await expect(tab.online_names).to_have_text([me, other])
        await expect(tab.online_people.first).to_contain_text(f"{me} (you)")
        await expect(tab.online_people.last).not_to_contain_text("(you)")
        await expect(tab.online_count).to_have_text("2 online")
        await expect(tab.online.get_by_role("heading")).to_have_accessible_name("Online, 2 people")
    await expect(bob.online_entry(alice_id).get_by_role("button")).to_have_accessible_name("Alice")
    await expect(bob.online_entry(bob_id).get_by_role("button")).to_have_count(0)

    # A second tab of Alice's is still one Alice: members are people, not tabs.
    alice_again = await alice.another_tab()
    await expect(alice_again.status).to_have_text("Live")
    await expect(alice_again.online_names).to_have_text(["Alice", "Bob"])
    await barrier(db, alice, alice_again, bob)
    await expect(bob.online_names).to_have_text(["Bob", "Alice"])
    await expect(bob.online_count).to_have_text("2 online")

    # Alice closes her browser: both pages, so her last socket. Bob sees her go.
    for tab in (alice, alice_again, bob):
        tab.assert_no_console_errors()
    await alice.close()
    timeout_ms = (PRESENCE_GRACE + LEAVE_BOUND) * 1000
    await expect(bob.online_entry(alice_id)).to_have_count(0, timeout=timeout_ms)
    await expect(bob.online_names).to_have_text(["Bob"])
    await expect(bob.online_count).to_have_text("1 online")
    await expect(bob.online.get_by_text("Nobody else is online.")).to_be_visible()
    removed = bob.presence_frames("member_removed")
    assert [frame["data"]["user_id"] for frame in removed] == [str(alice_id)], removed

    # She comes back: Bob sees her again, live.
    alice = await open_tab()
    await alice.sign_in("alice@example.com", "Alice")
    await expect(bob.online_names).to_have_text(["Bob", "Alice"])
    await expect(alice.online_names).to_have_text(["Alice", "Bob"])
    for tab in (alice, bob):
        tab.assert_no_console_errors()


async def test_the_online_list_is_reachable_by_keyboard_on_a_phone(open_tab: OpenTab) -> None:
    alice, bob = await signed_in_pair(open_tab, alice_viewport=PHONE)
    page = alice.page

    # The list lives in the sidebar, which on a phone is a view of its own; the header's
    # count is on screen in every view and leads there.
    await expect(alice.online).to_be_hidden()
    count = alice.online_count
    await expect(count).to_have_text("2 online")
    await expect(count).to_be_in_viewport()
    await count.focus()
    await page.keyboard.press("Enter")
    await expect(alice.online).to_be_in_viewport()
    await expect(alice.online.get_by_role("heading")).to_be_focused()
    await expect(alice.online_names).to_have_text(["Alice", "Bob"])
    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"], width

    # Tab reaches Bob's entry; Enter opens a conversation with him.
    await page.keyboard.press("Tab")
    bob_button = alice.online.get_by_role("button", name="Bob")
    await expect(bob_button).to_be_focused()
    await page.keyboard.press("Enter")
    await expect(alice.thread("Bob")).to_be_in_viewport()
    await expect(alice.direct_composer("Bob")).to_be_in_viewport()

    # From the conversation, the count still leads back to the list.
    await alice.online_count.click()
    await expect(alice.online).to_be_in_viewport()
    await expect(alice.thread("Bob")).to_be_hidden()
    for tab in (alice, bob):
        tab.assert_no_console_errors()


async def test_after_a_reconnect_the_list_is_the_new_sockets_and_shows_everyone_once(
    open_tab: OpenTab, browser: Browser, second_server: RunningServer
) -> None:
    alice = await open_tab()
    # Bob's page talks to a server of its own, so it can go away while others come and go.
    bob = await Tab.open(browser, second_server.url)
    try:
        await asyncio.gather(
            alice.sign_in("alice@example.com", "Alice"), bob.sign_in("bob@example.com", "Bob")
        )
        bob_id = await bob.user_id()
        await expect(bob.online_names).to_have_text(["Bob", "Alice"])
        await expect(alice.online_names).to_have_text(["Alice", "Bob"])

        await second_server.runner.cleanup()
        await expect(bob.status).to_have_text("Reconnecting…")
        # Bob's list stays, marked; Alice sees him go once his grace is over.
        await expect(bob.online.get_by_text("this list may be out of date")).to_be_visible()
        await expect(bob.online_names).to_have_text(["Bob", "Alice"])
        timeout_ms = (PRESENCE_GRACE + LEAVE_BOUND) * 1000
        await expect(alice.online_entry(bob_id)).to_have_count(0, timeout=timeout_ms)
        carol = await open_tab()
        await carol.sign_in("carol@example.com", "Carol")
        await expect(alice.online_names).to_have_text(["Alice", "Carol"])

        restarted = await start_server(second_server.config)
        try:
            await expect(bob.status).to_have_text("Live", timeout=20_000)
            # The socket resumed with its cursor (Carol's join among what it replayed), then
            # its own list replaced the old one.
            await expect(bob.online_names).to_have_text(["Bob", "Alice", "Carol"])
            await expect(bob.online.get_by_text("this list may be out of date")).to_have_count(0)
            await expect(bob.online_count).to_have_text("3 online")
            for tab, me in ((alice, "Alice"), (carol, "Carol")):
                names = ["Bob", "Carol"] if me == "Alice" else ["Alice", "Bob"]
                await expect(tab.online_names).to_have_text([me, *names])
            connected = [f for f in bob.frames if f["event"] == "connected"]
            assert len(connected) == 2, connected
            assert "presence-lobby" in connected[1]["data"]["channels"]
            lists = bob.presence_frames("presence")
            assert len(lists) == 2, lists
            bob.assert_no_console_errors(expected=REFUSED_WHILE_DOWN)
            alice.assert_no_console_errors()
            carol.assert_no_console_errors()
        finally:
            await restarted.runner.cleanup()
    finally:
        await bob.close()
