"""Browser fixtures: Debian's chromium through Playwright, one isolated context per tab.

Starting Playwright and chromium costs about a second, so one browser serves a whole module.
Playwright's objects belong to the event loop that made them, so the browser tests run in the
module's loop (`pytest.mark.asyncio(loop_scope="module")`), and so must every async fixture
they use: `server` and `db` below are tests/conftest.py's, declared again for that loop. Each
test still gets its own database, server and browser contexts (cookies, storage).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psycopg
import pytest_asyncio
from playwright.async_api import Browser, ViewportSize, async_playwright, expect

from tests.conftest import RunningServer, server_config, start_server
from tests.e2e.pages import OpenTab, Tab, launch_chromium

# Everything is local; a page that needs longer than this to show something is broken.
expect.set_options(timeout=10_000)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        browser = await launch_chromium(playwright)
        yield browser
        await browser.close()


@pytest_asyncio.fixture(loop_scope="module")
async def server(
    database_url: str, tmp_path: Path, unused_tcp_port: int
) -> AsyncIterator[RunningServer]:
    running = await start_server(server_config(database_url, tmp_path, unused_tcp_port))
    yield running
    await running.runner.cleanup()


@pytest_asyncio.fixture(loop_scope="module")
async def db(database_url: str) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    """A plain SQL session, like a DBA's psql: autocommit, no pgcast code involved."""
    conn = await psycopg.AsyncConnection.connect(
        database_url, autocommit=True, application_name="psql"
    )
    yield conn
    await conn.close()


@pytest_asyncio.fixture(loop_scope="module")
async def open_tab(browser: Browser, server: RunningServer) -> AsyncIterator[OpenTab]:
    """`await open_tab()` gives a fresh browser context (its own cookies) on the server."""
    tabs: list[Tab] = []

    async def open_(viewport: ViewportSize | None = None) -> Tab:
        tab = await Tab.open(browser, server.url, viewport)
        tabs.append(tab)
        return tab

    yield open_
    for tab in tabs:
        await tab.close()
