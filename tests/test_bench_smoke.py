"""The quick benchmark runs end to end and produces numbers (never judged on timing here)."""

from __future__ import annotations

from bench import db_limits, fanout, idle_sockets, ingest, resume, slow_consumer, socket_limit
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


def test_db_limits_bench_smoke_measures_every_trigger_variant() -> None:
    result = db_limits.run(db_limits.parse_args(["--smoke", "--no-write"]))
    assert result["problems"] == []
    assert set(result["rates"]) == {"none", "notify", "pgcast"}
    for by_writers in result["rates"].values():
        assert set(by_writers) == {"1", "4"}
        assert all(rate > 0 for rate in by_writers.values())


def test_socket_limit_bench_smoke_delivers_every_frame_at_each_write_size() -> None:
    result = socket_limit.run(socket_limit.parse_args(["--smoke", "--no-write"]))
    assert result["problems"] == []
    measurements = result["measurements"]
    assert {m["frames_per_write"] for m in measurements} == {1, 10}
    for measurement in measurements:
        assert measurement["delivery_ok"]
        assert measurement["frames"] == 20 * 50
        assert measurement["frames_per_second"] > 0


def test_resume_bench_smoke_replays_the_backlog_once_in_order() -> None:
    result = resume.run(resume.parse_args(["--smoke", "--no-write"]))
    assert result["problems"] == []
    assert result["delivery_ok"]
    assert result["events_per_second"] > 0


def test_fanout_bench_smoke_climbs_the_rate_ladder_and_bursts_at_each_socket_count() -> None:
    result = fanout.run(fanout.parse_args(["--smoke", "--no-write"]))
    assert result["problems"] == []
    assert {(step["sockets"], step["target_rate"]) for step in result["steps"]} == {
        (5, 20.0),
        (5, 100.0),
        (20, 20.0),
        (20, 100.0),
    }
    for step in result["steps"]:
        assert step["delivery"]["ok"]
        assert step["latency_ms"]["p50"] > 0
    assert [burst["sockets"] for burst in result["bursts"]] == [5, 20]
    assert all(burst["frames_per_second"] > 0 for burst in result["bursts"])


def test_ingest_bench_smoke_measures_writers_and_the_bulk_insert() -> None:
    result = ingest.run(ingest.parse_args(["--smoke", "--no-write"]))
    assert result["problems"] == []
    bulk = result["bulk"]
    assert bulk["reception"]["frames"] == bulk["reception"]["expected"] == 500 * 10
    assert [step["writers"] for step in result["ingest"]] == [1, 4]
    for step in result["ingest"]:
        assert step["tx_per_second"] > 0
        assert step["limit_tx_per_second"] > 0
        assert step["reception"]["frames"] == step["reception"]["expected"] > 0
