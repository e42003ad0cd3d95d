"""The app in chromium under its Content-Security-Policy, opened by another loopback name
than the server's public URL: signing in, the live socket and posting all work."""

from __future__ import annotations

import pytest
from playwright.async_api import Browser, expect

from tests.conftest import RunningServer
from tests.e2e.pages import Tab

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="module")]


async def test_opened_on_localhost_dev_sign_in_the_socket_and_posting_work(
    browser: Browser, server: RunningServer
) -> None:
    assert server.url.startswith("http://127.0.0.1:")
    url = f"http://localhost:{server.config.port}"
    alice, bob = await Tab.open(browser, url), await Tab.open(browser, server.url)
    try:
        # Every policy violation is also a console error, which the check below catches.
        await alice.page.add_init_script(
            "window.__violations = [];"
            "document.addEventListener('securitypolicyviolation',"
            " (e) => window.__violations.push(e.violatedDirective + ' ' + e.blockedURI));"
        )
        await alice.sign_in("alice@example.com", "Alice")
        await bob.sign_in("bob@example.com", "Bob")
        assert alice.sockets[0].url.startswith(f"ws://localhost:{server.config.port}/ws")

        hello = await alice.send("Hello from localhost")
        await expect(bob.message(hello)).to_contain_text("Hello from localhost")
        reply = await bob.send("Hi back")
        await expect(alice.message(reply)).to_contain_text("Hi back")

        assert await alice.page.evaluate("window.__violations") == []
        alice.assert_no_console_errors()
        bob.assert_no_console_errors()
    finally:
        await alice.close()
        await bob.close()
