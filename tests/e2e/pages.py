"""Driving the pgcast UI in Debian's chromium: launch flags, a watched tab, sign-in, the
feed, conversations, notifications and who is online.

Shared by the browser tests and `screenshots.py`. Never downloads a browser.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from playwright.async_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Dialog,
    Error,
    Locator,
    Page,
    Playwright,
    ViewportSize,
    WebSocket,
    expect,
)

CHROMIUM = Path("/usr/bin/chromium")
# Without the background-networking flags chromium keeps calling Google on a closed network.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DESKTOP: ViewportSize = {"width": 1200, "height": 800}
WAIT = 10.0
DIRECT_MESSAGE_EVENTS = ("new-direct-message", "direct-message-updated", "direct-message-deleted")
NOTIFICATION_EVENTS = (
    "Illuminate\\Notifications\\Events\\BroadcastNotificationCreated",
    "notification-updated",
    "notification-deleted",
)


def chromium_executable() -> str:
    if not CHROMIUM.exists():
        raise RuntimeError(
            f"{CHROMIUM} is missing: `make chromium` installs Debian's chromium "
            "(Playwright's own browser download is not used)"
        )
    return str(CHROMIUM)


async def launch_chromium(playwright: Playwright) -> Browser:
    return await playwright.chromium.launch(
        executable_path=chromium_executable(), headless=True, args=CHROMIUM_ARGS
    )


@dataclass
class Tab:
    """One page in its own browser context (own cookies), with everything it reported."""

    context: BrowserContext
    page: Page
    # "text @ url" of every console message of type error; every uncaught exception.
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)
    # Every frame the page's WebSockets received, parsed, in arrival order.
    frames: list[dict[str, Any]] = field(default_factory=list)
    # Every WebSocket the page opened (or tried to), and those that have closed since.
    sockets: list[WebSocket] = field(default_factory=list)
    closed_sockets: list[WebSocket] = field(default_factory=list)
    # False for a second page in another tab's context: closing it leaves the context open.
    owns_context: bool = True
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    @classmethod
    async def open(
        cls, browser: Browser, base_url: str, viewport: ViewportSize | None = None
    ) -> Tab:
        context = await browser.new_context(
            base_url=base_url, viewport=viewport or DESKTOP, color_scheme="light"
        )
        return cls._watch(context, await context.new_page())

    async def another_tab(self) -> Tab:
        """A second page of the same browser (same cookies, so the same user), on `/`."""
        tab = self._watch(self.context, await self.context.new_page(), owns_context=False)
        await tab.page.goto("/")
        return tab

    @classmethod
    def _watch(cls, context: BrowserContext, page: Page, *, owns_context: bool = True) -> Tab:
        tab = cls(context, page, owns_context=owns_context)
        page.on("console", tab._on_console)
        page.on("pageerror", tab._on_page_error)
        page.on("dialog", tab._on_dialog)
        page.on("websocket", tab._on_websocket)
        return tab

    def _on_console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.console_errors.append(f"{message.text} @ {message.location.get('url', '')}")

    def _on_page_error(self, error: Error) -> None:
        self.page_errors.append(f"{error.name}: {error.message}")

    async def _on_dialog(self, dialog: Dialog) -> None:
        self.dialogs.append(f"{dialog.type}: {dialog.message}")
        await dialog.dismiss()

    def _on_websocket(self, socket: WebSocket) -> None:
        def received(payload: str | bytes) -> None:
            self.frames.append(json.loads(payload))
            self._changed.set()

        def closed(_: WebSocket) -> None:
            self.closed_sockets.append(socket)
            self._changed.set()

        self.sockets.append(socket)
        self._changed.set()
        socket.on("framereceived", received)
        socket.on("close", closed)

    async def close(self) -> None:
        if self.owns_context:
            await self.context.close()
        elif not self.page.is_closed():
            await self.page.close()

    # --- what the page is showing ---------------------------------------------------------

    @property
    def status(self) -> Locator:
        return self.page.get_by_role("status")

    @property
    def feed(self) -> Locator:
        return self.page.get_by_role("log", name="Messages")

    @property
    def composer(self) -> Locator:
        return self.page.get_by_label("Message", exact=True)

    def message(self, message_id: int) -> Locator:
        return self.page.locator(f'[data-message-id="{message_id}"]')

    async def feed_contents(self) -> list[str]:
        return await self.feed.locator(".message-content").all_inner_texts()

    @property
    def bell(self) -> Locator:
        return self.page.get_by_role("button", name=re.compile(r"^Notifications"))

    @property
    def notification_panel(self) -> Locator:
        return self.page.get_by_role("region", name="Notifications", exact=True)

    @property
    def toasts(self) -> Locator:
        return self.page.get_by_role("region", name="New notifications").locator(".toast")

    def toast(self, notification_id: str) -> Locator:
        return self.page.locator(f'.toast[data-notification-id="{notification_id}"]')

    @property
    def conversations(self) -> Locator:
        return self.page.get_by_role("region", name="Conversations")

    def conversation_with(self, user_id: int) -> Locator:
        """The entry for the conversation with `user_id` in the conversations list."""
        return self.conversations.locator(f'[data-conversation-with="{user_id}"]')

    def thread(self, name: str) -> Locator:
        return self.page.get_by_role("log", name=f"Conversation with {name}")

    def direct_message(self, direct_message_id: int) -> Locator:
        return self.page.locator(f'[data-direct-message-id="{direct_message_id}"]')

    def direct_composer(self, name: str) -> Locator:
        return self.page.get_by_label(f"Message to {name}", exact=True)

    async def thread_contents(self, name: str) -> list[str]:
        return await self.thread(name).locator(".dm-content").all_inner_texts()

    @property
    def online(self) -> Locator:
        """The "Online" region: who is on the presence channel beside the feed."""
        return self.page.get_by_role("region", name="Online", exact=True)

    @property
    def online_people(self) -> Locator:
        """One entry per person online, in the order shown."""
        return self.online.get_by_role("list", name="People online").get_by_role("listitem")

    @property
    def online_names(self) -> Locator:
        """The name in each entry, in the order shown (without the avatar's initials)."""
        return self.online_people.locator(".person-name")

    def online_entry(self, user_id: int) -> Locator:
        return self.online.locator(f'[data-online-user="{user_id}"]')

    @property
    def online_count(self) -> Locator:
        """The header's count of who is online (a button that leads to the list)."""
        return self.page.get_by_role("banner").get_by_role("button", name=re.compile(r" online$"))

    # --- doing things ------------------------------------------------------------------------

    async def sign_in(self, email: str, name: str) -> None:
        """The dev-login form, as a user fills it; returns once the socket is live."""
        await self.page.goto("/")
        await self.page.get_by_label("Email").fill(email)
        await self.page.get_by_label("Name").fill(name)
        await self.page.get_by_role("button", name="Sign in").click()
        await expect(self.status).to_have_text("Live")

    async def user_id(self) -> int:
        """Who this page is signed in as, from the same route the app asks."""
        user_id: int = await self.page.evaluate(
            "fetch('/api/session').then(r => r.json()).then(body => body.user.id)"
        )
        return user_id

    async def start_conversation(self, name: str) -> None:
        """Find `name` with the people search and open the conversation with them."""
        await self.page.get_by_label("Find people").fill(name)
        results = self.page.get_by_role("list", name="People found")
        await results.get_by_role("button", name=name, exact=True).click()
        await expect(self.thread(name)).to_be_visible()

    async def send_direct(self, name: str, content: str) -> int:
        """Type into the open conversation with `name` and press Enter; the message's id."""
        composer = self.direct_composer(name)
        await composer.fill(content)
        async with self.page.expect_response(
            lambda r: r.url.endswith("/api/direct-messages") and r.request.method == "POST"
        ) as posted:
            await composer.press("Enter")
        response = await posted.value
        assert response.status == 201, await response.text()
        assert await response.request.header_value("x-socket-id"), "post without X-Socket-ID"
        direct_message_id: int = (await response.json())["direct_message"]["id"]
        return direct_message_id

    async def send(self, content: str) -> int:
        """Type into the composer and press Enter; the id the server gave the message."""
        await self.composer.fill(content)
        async with self.page.expect_response(
            lambda r: r.url.endswith("/api/messages") and r.request.method == "POST"
        ) as posted:
            await self.composer.press("Enter")
        response = await posted.value
        assert response.status == 201, await response.text()
        # Without the header the page's own socket would receive the post as well.
        assert await response.request.header_value("x-socket-id"), "post without X-Socket-ID"
        message_id: int = (await response.json())["id"]
        return message_id

    # --- what the page received ------------------------------------------------------------

    def message_frames(self, message_id: int) -> list[dict[str, Any]]:
        return [
            frame
            for frame in self.frames
            if frame.get("event") == "new-message" and frame["data"]["message"]["id"] == message_id
        ]

    def direct_message_frames(self, direct_message_id: int) -> list[dict[str, Any]]:
        return [
            frame
            for frame in self.frames
            if frame.get("event") == "new-direct-message"
            and frame["data"]["direct_message"]["id"] == direct_message_id
        ]

    def presence_frames(self, *events: str) -> list[dict[str, Any]]:
        """Every frame of the presence channels (`presence`, `member_added`, `member_removed`),
        or only those of `events`."""
        wanted = events or ("presence", "member_added", "member_removed")
        return [
            frame
            for frame in self.frames
            if str(frame.get("channel", "")).startswith("presence-") and frame["event"] in wanted
        ]

    def private_frames(self) -> list[dict[str, Any]]:
        """Every direct-message and notification frame this page received."""
        events = (*DIRECT_MESSAGE_EVENTS, *NOTIFICATION_EVENTS)
        return [frame for frame in self.frames if frame.get("event") in events]

    async def wait_until(self, condition: Callable[[], bool], timeout: float = WAIT) -> None:
        """Wait, without polling, until `condition()` holds after some socket event."""
        async with asyncio.timeout(timeout):
            while True:
                self._changed.clear()
                if condition():
                    return
                await self._changed.wait()

    async def wait_for_frame(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = WAIT
    ) -> None:
        await self.wait_until(lambda: any(predicate(frame) for frame in self.frames), timeout)

    def assert_no_console_errors(self, expected: Iterable[re.Pattern[str]] = ()) -> None:
        """No uncaught exception, and no console error other than the `expected` ones a
        test provokes on purpose. (A signed-out page asks /api/session, which answers 200, so
        not even the sign-in screen logs a failed request.)"""
        allowed = list(expected)
        unexpected = [
            error
            for error in self.console_errors
            if not any(pattern.fullmatch(error) for pattern in allowed)
        ]
        assert self.page_errors == [], self.page_errors
        assert unexpected == [], unexpected


# `await open_tab(viewport=...)`: the fixture that opens a Tab on the test's server.
OpenTab = Callable[..., Awaitable[Tab]]
