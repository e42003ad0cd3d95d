"""/metrics and /readyz tell an operator what the process is doing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import Client, RunningServer, server_config, start_server


async def scrape(server: RunningServer) -> dict[str, float]:
    async with aiohttp.ClientSession() as http, http.get(server.url + "/metrics") as response:
        assert response.status == 200
        assert response.content_type == "text/plain"
        text = await response.text()
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def test_metrics_count_sockets_frames_and_lag(
    client_factory: Any, server: RunningServer
) -> None:
    before = await scrape(server)
    assert before["pgcast_sockets_connected"] == 0
    assert before["pgcast_frames_delivered_total"] == 0

    alice = client_factory()
    await alice.sign_in("alice@example.com", "Alice")
    first, second = await alice.connect(), await alice.connect()
    await alice.post_message("counted")
    await first.next_frame()
    await second.next_frame()

    after = await scrape(server)
    assert after["pgcast_sockets_connected"] == 2
    assert after["pgcast_frames_delivered_total"] == 2
    # One wake-up wrote both sockets at once: one observation.
    assert after["pgcast_notify_to_send_seconds_count"] == 1
    assert after["pgcast_listener_reconnects_total"] == 0
    assert after["pgcast_slow_sockets_closed_total"] == 0
    assert 0 <= after["pgcast_notify_queue_usage"] < 0.01


async def test_readiness_reports_notify_queue_usage(server: RunningServer) -> None:
    async with aiohttp.ClientSession() as http, http.get(server.url + "/readyz") as response:
        body = await response.json()
    assert response.status == 200
    assert body["checks"]["notify_queue_usage"] == 0.0


async def test_events_arriving_within_the_batch_window_go_out_in_one_read(
    database_url: str, tmp_path: Path, unused_tcp_port: int
) -> None:
    config = server_config(database_url, tmp_path, unused_tcp_port, PGCAST_BATCH_WINDOW_MS="1000")
    running = await start_server(config)
    try:
        alice = Client(running.endpoint)
        try:
            await alice.sign_in("alice@example.com", "Alice")
            socket = await alice.connect()
            # The first event after a quiet spell goes out at once; the next two commit
            # while the window after that read is still open, so one read carries both.
            await alice.post_message("first")
            assert (await socket.next_frame())["data"]["message"]["content"] == "first"
            await alice.post_message("second")
            await alice.post_message("third")
            frames = await socket.frames(2)
            assert [f["data"]["message"]["content"] for f in frames] == ["second", "third"]
            metrics = await scrape(running)
            assert metrics["pgcast_notify_to_send_seconds_count"] == 2
        finally:
            await alice.close()
    finally:
        await running.runner.cleanup()
