"""The whole WorkOS AuthKit sign-in in a real browser, against the fake WorkOS server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from playwright.async_api import Browser, expect

from tests.conftest import RunningServer, server_config, start_server
from tests.e2e.pages import Tab
from tests.fake_workos import FakeWorkOS

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="module")]


@pytest_asyncio.fixture(loop_scope="module")
async def fake() -> AsyncIterator[FakeWorkOS]:
    async with FakeWorkOS() as running:
        yield running


@pytest_asyncio.fixture(loop_scope="module")
async def workos_server(
    database_url: str, tmp_path: Path, unused_tcp_port: int, fake: FakeWorkOS
) -> AsyncIterator[RunningServer]:
    config = server_config(
        database_url,
        tmp_path,
        unused_tcp_port,
        **fake.pgcast_env(),
    )
    running = await start_server(config)
    yield running
    await running.runner.cleanup()


async def test_sign_in_with_workos_then_post_and_sign_out(
    browser: Browser, workos_server: RunningServer, fake: FakeWorkOS
) -> None:
    fake.add_user("grace@example.com", "Grace", "Hopper")
    tab = await Tab.open(browser, workos_server.url)
    try:
        await tab.page.goto("/")
        # WorkOS is configured, so there is no dev-login form, only the WorkOS link.
        await expect(tab.page.get_by_label("Email", exact=True)).to_have_count(0)
        await tab.page.get_by_role("link", name="Sign in with WorkOS").click()
        # The fake's AuthKit page signs Grace in and sends the browser back to the callback.
        await expect(tab.page.get_by_role("banner").get_by_text("Grace Hopper")).to_be_visible()
        await expect(tab.status).to_have_text("Live")
        message_id = await tab.send("signed in through AuthKit")
        await expect(tab.message(message_id)).to_contain_text("Grace Hopper")

        await tab.page.get_by_role("button", name="Sign out").click()
        # Logout goes through WorkOS's logout URL, which returns to the app's sign-in screen.
        await expect(tab.page.get_by_role("link", name="Sign in with WorkOS")).to_be_visible()
        assert fake.find_requests("GET", "/user_management/sessions/logout")
        tab.assert_no_console_errors()
    finally:
        await tab.close()
