"""The React client in a real chromium against a real pgcast server and PostgreSQL."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import psycopg
import pytest
from playwright.async_api import Request, ViewportSize, expect
from yarl import URL

from tests.conftest import RunningServer, create_user, start_server
from tests.e2e.pages import OpenTab, Tab

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="module")]

PHONE: ViewportSize = {"width": 360, "height": 740}


async def insert(db: psycopg.AsyncConnection[Any], user_id: int, content: str) -> int:
    cursor = await db.execute(
        "INSERT INTO messages (user_id, content) VALUES (%s, %s) RETURNING id", [user_id, content]
    )
    row = await cursor.fetchone()
    assert row is not None
    return int(row[0])


async def signed_in_pair(open_tab: OpenTab) -> tuple[Tab, Tab]:
    """Alice and Bob, each in their own browser context, signed in through the form."""
    alice, bob = await asyncio.gather(open_tab(), open_tab())
    await asyncio.gather(
        alice.sign_in("alice@example.com", "Alice"), bob.sign_in("bob@example.com", "Bob")
    )
    return alice, bob


async def test_a_message_typed_by_one_user_reaches_the_other_and_shows_once_for_its_author(
    open_tab: OpenTab,
) -> None:
    alice, bob = await signed_in_pair(open_tab)

    hello = await alice.send("Hello from Alice")

    await expect(bob.message(hello)).to_contain_text("Hello from Alice")
    await expect(bob.message(hello)).to_contain_text("Alice")
    await expect(alice.composer).to_have_value("")
    await expect(alice.composer).to_be_focused()
    reply = await bob.send("Hi Alice, Bob here")
    await expect(alice.message(reply)).to_contain_text("Hi Alice, Bob here")
    # Alice's socket delivers in commit order, so an echo of her own post would have come
    # before Bob's reply, which it has now received.
    await alice.wait_for_frame(lambda f: f.get("data", {}).get("message", {}).get("id") == reply)
    assert alice.message_frames(hello) == []
    assert bob.message_frames(reply) == []
    assert len(bob.message_frames(hello)) == 1
    await expect(alice.message(hello)).to_have_count(1)
    await expect(bob.message(reply)).to_have_count(1)
    assert await alice.feed_contents() == ["Hello from Alice", "Hi Alice, Bob here"]
    assert await bob.feed_contents() == ["Hello from Alice", "Hi Alice, Bob here"]
    alice.assert_no_console_errors()
    bob.assert_no_console_errors()


async def test_a_row_inserted_with_sql_appears_in_every_open_page(
    open_tab: OpenTab, db: psycopg.AsyncConnection[Any]
) -> None:
    alice, bob = await signed_in_pair(open_tab)
    ops = await create_user(db, "ops@example.com", "Ops Team")

    message_id = await insert(db, ops, "Maintenance at 22:00")

    for tab in (alice, bob):
        await expect(tab.message(message_id)).to_contain_text("Maintenance at 22:00")
        await expect(tab.message(message_id).locator(".message-author")).to_have_text("Ops Team")
        await expect(tab.message(message_id)).to_have_count(1)
        tab.assert_no_console_errors()


# While the server is down, chromium logs each refused reconnect attempt (the socket, and the
# /api/session probe the client makes to tell a refused upgrade from a network error).
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


async def test_a_server_restart_reconnects_and_delivers_every_missed_row_once_in_order(
    open_tab: OpenTab, db: psycopg.AsyncConnection[Any], server: RunningServer
) -> None:
    tab = await open_tab()
    await tab.sign_in("alice@example.com", "Alice")
    ops = await create_user(db, "ops@example.com", "Ops Team")
    seen = await insert(db, ops, "before the restart")
    await expect(tab.message(seen)).to_be_visible()

    await server.runner.cleanup()
    await expect(tab.status).to_have_text("Reconnecting…")
    missed = [await insert(db, ops, f"missed {n}") for n in range(1, 6)]
    # Let the page run into the closed port at least once, so it is backing off for real.
    first_socket = tab.sockets[0]
    await tab.wait_until(lambda: any(s is not first_socket for s in tab.closed_sockets))
    await expect(tab.status).to_have_text("Reconnecting…")

    restarted = await start_server(server.config)
    try:
        # Backoff with full jitter: the retry after a few refused attempts may take seconds.
        await expect(tab.status).to_have_text("Live", timeout=20_000)
        after = await insert(db, ops, "after the restart")
        await expect(tab.message(after)).to_be_visible()

        assert await tab.feed_contents() == [
            "before the restart",
            *(f"missed {n}" for n in range(1, 6)),
            "after the restart",
        ]
        for message_id in (seen, *missed, after):
            await expect(tab.message(message_id)).to_have_count(1)
            # Not only deduplicated on screen: the server sent each row exactly once.
            assert len(tab.message_frames(message_id)) == 1, message_id
        connected = [f for f in tab.frames if f["event"] == "connected"]
        assert len(connected) == 2, f"one connection before the restart, one after: {connected}"
        # The second socket resumed from the cursor of the last row the first one delivered.
        assert connected[1]["data"]["cursor"] == tab.message_frames(seen)[0]["cursor"]
        tab.assert_no_console_errors(expected=REFUSED_WHILE_DOWN)
    finally:
        await restarted.runner.cleanup()


MARKUP = ("<img src=x onerror=alert(1)>", "<script>window.__pwned=1</script>")


async def test_markup_in_a_message_is_shown_as_text_and_never_runs(
    open_tab: OpenTab, db: psycopg.AsyncConnection[Any]
) -> None:
    tab = await open_tab()
    await tab.sign_in("alice@example.com", "Alice")
    mallory = await create_user(db, "mallory@example.com", "Mallory")

    # Typed: shown from the POST reply. Inserted with SQL: shown from the socket frame.
    shown = [await tab.send(content) for content in MARKUP]
    shown += [await insert(db, mallory, content) for content in MARKUP]

    async def assert_shown_as_text() -> None:
        for message_id, content in zip(shown, MARKUP * 2, strict=True):
            text = tab.message(message_id).locator(".message-content")
            await expect(text).to_have_text(content)
            await expect(text).to_be_visible()
        await expect(tab.feed.locator('img[src="x"]')).to_have_count(0)
        await expect(tab.feed.locator("script")).to_have_count(0)
        assert await tab.page.evaluate("typeof window.__pwned") == "undefined"
        assert tab.dialogs == []

    await assert_shown_as_text()
    # The same four from a history page, on a fresh load.
    await tab.page.reload()
    await expect(tab.status).to_have_text("Live")
    await assert_shown_as_text()
    tab.assert_no_console_errors()


async def test_history_shows_the_latest_50_and_scrolling_up_loads_older_pages_in_place(
    open_tab: OpenTab, db: psycopg.AsyncConnection[Any]
) -> None:
    bot = await create_user(db, "history@example.com", "History Bot")
    await db.execute(
        "INSERT INTO messages (user_id, content) "
        "SELECT %s, 'history ' || n FROM generate_series(1, 120) AS n ORDER BY n",
        [bot],
    )
    tab = await open_tab()
    first_pages: list[str] = []

    def count_first_page(request: Request) -> None:
        url = URL(request.url)
        if url.path == "/api/messages" and "before" not in url.query:
            first_pages.append(request.url)

    tab.page.on("request", count_first_page)
    await tab.sign_in("alice@example.com", "Alice")
    messages = tab.feed.locator(".message")
    await expect(messages).to_have_count(50)
    await expect(tab.feed).to_have_attribute("aria-busy", "false")
    assert await tab.feed_contents() == [f"history {n}" for n in range(71, 121)]
    # It opens at the newest message.
    await expect(tab.feed.get_by_text("history 120", exact=True)).to_be_in_viewport()
    await expect(tab.feed.get_by_text("history 71", exact=True)).not_to_be_in_viewport()

    first = tab.feed.locator(".message").first
    # Scroll to the top; measure where the oldest loaded message sits before anything loads.
    offset_before = await tab.feed.evaluate(
        """feed => {
            feed.scrollTop = 0;
            return feed.querySelector('.message').getBoundingClientRect().top
                - feed.getBoundingClientRect().top;
        }"""
    )
    await expect(messages).to_have_count(100)
    await expect(tab.feed).to_have_attribute("aria-busy", "false")
    await expect(tab.page.get_by_role("button", name="Load older messages")).to_be_enabled()
    assert await tab.feed_contents() == [f"history {n}" for n in range(21, 121)]
    # The message that was at the top is still there, not pushed down by the 50 above it.
    previously_first = tab.feed.locator(".message").filter(
        has=tab.page.get_by_text("history 71", exact=True)
    )
    await expect(previously_first).to_be_in_viewport()
    offset_after = await previously_first.evaluate(
        """(message) => message.getBoundingClientRect().top
            - message.closest('[role=log]').getBoundingClientRect().top"""
    )
    assert abs(offset_after - offset_before) <= 2, (offset_before, offset_after)
    await expect(first).to_contain_text("history 21")

    # The last 20: then the beginning is reached and there is nothing more to load.
    await tab.feed.evaluate("feed => { feed.scrollTop = 0; }")
    await expect(messages).to_have_count(120)
    await expect(tab.page.get_by_role("button", name=re.compile("older messages"))).to_have_count(0)
    await expect(tab.feed).to_have_attribute("aria-busy", "false")
    assert await tab.feed_contents() == [f"history {n}" for n in range(1, 121)]
    # The first page was fetched once; a second fetch would have replaced the older pages.
    assert len(first_pages) == 1, first_pages
    tab.assert_no_console_errors()


async def test_the_page_fits_a_phone_screen(open_tab: OpenTab) -> None:
    tab = await open_tab(viewport=PHONE)
    await tab.page.goto("/")
    await expect(tab.page.get_by_role("button", name="Sign in")).to_be_in_viewport()
    assert await tab.page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]

    await tab.sign_in("alice.with.a.rather.long.address@example.com", "Alice Montgomery-Smith")
    long_line = "See https://example.com/" + "a-very-long-path-segment-" * 8 + " for details"
    message_id = await tab.send(long_line)

    await expect(tab.message(message_id)).to_be_in_viewport()
    await expect(tab.feed).to_be_visible()
    await expect(tab.composer).to_be_in_viewport()
    await expect(tab.page.get_by_role("button", name="Send")).to_be_in_viewport()
    await expect(tab.status).to_be_in_viewport()
    sign_out = tab.page.get_by_role("button", name="Sign out")
    await expect(sign_out).to_be_in_viewport()
    # A long name is cut short; the button keeps its one-line height (it wrapped at 61 px).
    box = await sign_out.bounding_box()
    assert box is not None
    assert box["height"] < 48, box
    widths = await tab.page.evaluate(
        """() => {
            const feed = document.querySelector('[role=log]');
            return {
                page: document.documentElement.scrollWidth,
                feedScroll: feed.scrollWidth,
                feedClient: feed.clientWidth,
            };
        }"""
    )
    assert widths["page"] <= PHONE["width"], widths
    assert widths["feedScroll"] <= widths["feedClient"], widths
    tab.assert_no_console_errors()


async def test_sign_in_and_send_with_the_keyboard_only(open_tab: OpenTab) -> None:
    tab = await open_tab()
    page, keyboard = tab.page, tab.page.keyboard
    await page.goto("/")
    await expect(page.get_by_label("Email")).to_be_visible()

    await keyboard.press("Tab")
    await expect(page.get_by_label("Email")).to_be_focused()
    await keyboard.type("kim@example.com")
    await keyboard.press("Tab")
    await expect(page.get_by_label("Name")).to_be_focused()
    await keyboard.type("Kim")
    await keyboard.press("Enter")
    await expect(tab.status).to_have_text("Live")
    await expect(tab.online_count).to_have_text("1 online")

    # Focus order: the header's count of who is online, the bell and Sign out, the sidebar
    # (the public feed, people search; no conversations yet, and nobody else online to write
    # to), the feed (focusable so it scrolls with the arrow keys; no older page, so no "Load
    # older messages" button), then the composer.
    for target in (
        tab.online_count,
        tab.bell,
        page.get_by_role("button", name="Sign out"),
        page.get_by_role("button", name="Public feed"),
        page.get_by_label("Find people"),
        tab.feed,
        tab.composer,
    ):
        await keyboard.press("Tab")
        await expect(target).to_be_focused()
    await keyboard.type("Typed without a mouse")
    await keyboard.press("Enter")

    await expect(tab.feed.get_by_text("Typed without a mouse", exact=True)).to_be_visible()
    await expect(tab.composer).to_have_value("")
    await expect(tab.composer).to_be_focused()
    tab.assert_no_console_errors()
