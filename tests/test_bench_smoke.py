"""The quick benchmark runs end to end and produces numbers (never judged on timing here)."""

from __future__ import annotations

from bench import idle_sockets, slow_consumer
from bench.quick import parse_args, run


def test_quick_bench_smoke_produces_figures_and_delivers_everything() -> None:
    result = run(parse_args(["--smoke", "--no-write"]))
    assert result["problems"] == []
    assert result["pgcast_frames_per_second"] > 0
    assert result["baseline_frames_per_second"] > 0
    assert result["latency_ms"]["p50"] > 0
    assert result["frames_delivered_metric"] == result["frames_received"] > 0


def test_idle_sockets_bench_smoke_opens_every_socket_and_broadcasts_to_all() -> None:
    result = idle_sockets.run(idle_sockets.parse_args(["--smoke", "--no-write"]))
    assert result["problems"] == []
    [count] = result["counts"]
    assert count["opened"] == 50
    assert count["broadcast"]["ok"]
    assert count["readyz_status"] == 200


def test_slow_consumer_bench_smoke_closes_the_stalled_socket_and_it_resumes() -> None:
    result = slow_consumer.run(slow_consumer.parse_args(["--smoke", "--no-write"]))
    assert result["problems"] == []
    assert result["replayed_messages"]
