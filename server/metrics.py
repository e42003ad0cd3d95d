"""Prometheus metrics, kept in a registry of the app's own (no process-global state)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector


@dataclass(frozen=True)
class Metrics:
    registry: CollectorRegistry
    notify_to_send_seconds: Histogram
    slow_sockets_closed: Counter
    notify_queue_usage: Gauge


class _CountedElsewhere(Collector):
    """A counter whose value another object keeps: read at scrape time, so the hot path
    pays an integer addition instead of a locked metric update per frame."""

    def __init__(self, name: str, documentation: str, value: Callable[[], int]) -> None:
        self._name = name
        self._documentation = documentation
        self._value = value

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily(self._name, self._documentation, value=self._value())


def create_metrics(
    sockets: Callable[[], int],
    reconnects: Callable[[], int],
    frames: Callable[[], int],
    event_log_reads: Callable[[], int],
    listener_wakeups: Callable[[], int],
) -> Metrics:
    registry = CollectorRegistry(auto_describe=True)
    connected = Gauge("pgcast_sockets_connected", "WebSocket clients connected.", registry=registry)
    connected.set_function(lambda: float(sockets()))
    registry.register(
        _CountedElsewhere(
            "pgcast_listener_reconnects",
            "Times the LISTEN connection was lost and re-established.",
            reconnects,
        )
    )
    registry.register(
        _CountedElsewhere("pgcast_frames_delivered", "Broadcast frames written to sockets.", frames)
    )
    registry.register(
        _CountedElsewhere(
            "pgcast_event_log_reads",
            "Reads of the event log by live delivery: notifications that carried their events"
            " signed cost none.",
            event_log_reads,
        )
    )
    registry.register(
        _CountedElsewhere(
            "pgcast_listener_wakeups",
            "Times the LISTEN socket woke the process: within a batch window, notifications"
            " wait and are read together at its end.",
            listener_wakeups,
        )
    )
    return Metrics(
        registry=registry,
        notify_to_send_seconds=Histogram(
            "pgcast_notify_to_send_seconds",
            "From the listener waking on NOTIFY to the frames being written: once per wake-up"
            " for the sockets written at once, and once per socket that had a backlog.",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=registry,
        ),
        slow_sockets_closed=Counter(
            "pgcast_slow_sockets_closed",
            "Sockets closed with 1013 because their unsent backlog passed the bound.",
            registry=registry,
        ),
        notify_queue_usage=Gauge(
            "pgcast_notify_queue_usage",
            "pg_notification_queue_usage(): fraction of PostgreSQL's NOTIFY queue in use.",
            registry=registry,
        ),
    )
