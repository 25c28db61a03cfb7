"""The fleet's state as gauges, computed by the leading scheduler from Redis.

A scan of every partition is too slow for a scrape, so a thread refreshes a snapshot every
``ARCHIVER_STATE_METRICS_INTERVAL_SECONDS`` and scrapes read it. Only the leader exports the
snapshot, so that sums over all schedulers count each partition once; standbys export only
``archiver_scheduler_leader 0``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import redis
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from archiver.observability import metrics
from archiver.observability.overview import Overview, summarize
from archiver.store.state_store import RedisStateStore

log = logging.getLogger("archiver.state_metrics")


@dataclass(frozen=True)
class Snapshot:
    overview: Overview
    now_ms: int
    fleet_backoff_seconds: float
    taken_at: float  # unix time


class FleetStateCollector(Collector):
    def __init__(self, leading: Callable[[], bool]) -> None:
        self._leading = leading
        self._snapshot: Snapshot | None = None
        self._lock = threading.Lock()

    def update(self, snapshot: Snapshot | None) -> None:
        with self._lock:
            self._snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        leading = self._leading()
        yield GaugeMetricFamily(
            metrics.SCHEDULER_LEADER, "1 while this scheduler leads, 0 on standby", value=leading
        )
        with self._lock:
            snapshot = self._snapshot
        if not leading or snapshot is None:
            return
        backlog = GaugeMetricFamily(
            metrics.BACKLOG,
            "Entries announced and not yet archived (nor skipped in a gap)",
            labels=["storage"],
        )
        age = GaugeMetricFamily(
            metrics.OLDEST_UNARCHIVED_AGE,
            "Age of the oldest entry announced and not yet archived; 0 when none waits",
            labels=["storage"],
        )
        partitions = GaugeMetricFamily(
            metrics.PARTITIONS, "Partitions by state", labels=["storage", "state"]
        )
        gaps = CounterMetricFamily(
            metrics.GAPS,
            "Gaps recorded: entries the producer deleted before they were archived, and "
            "operators' skip-to",
            labels=["storage"],
        )
        for storage, totals in sorted(snapshot.overview.storages.items()):
            backlog.add_metric([storage], totals.backlog)
            age.add_metric([storage], totals.oldest_age_seconds(snapshot.now_ms))
            for condition, count in totals.partitions.items():
                partitions.add_metric([storage, condition.value], count)
            gaps.add_metric([storage], totals.gaps_total)
        yield from (backlog, age, partitions, gaps)
        yield GaugeMetricFamily(
            metrics.FLEET_BACKOFF,
            "Seconds left in the fleet-wide pause after failures; 0 when none",
            value=snapshot.fleet_backoff_seconds,
        )
        yield GaugeMetricFamily(
            metrics.STATE_REFRESHED,
            "When the state gauges were last computed (unix time)",
            value=snapshot.taken_at,
        )


def take_snapshot(store: RedisStateStore) -> Snapshot:
    overview = summarize(store.records.all())
    return Snapshot(overview, store.server_time_ms(), store.fleet.left(), time.time())


class StateMetricsRefresher(threading.Thread):
    """Recomputes the snapshot while this scheduler leads; drops it when it stops leading."""

    def __init__(
        self,
        store: RedisStateStore,
        collector: FleetStateCollector,
        leading: Callable[[], bool],
        interval: float,
        stop: threading.Event,
    ) -> None:
        super().__init__(name="state-metrics", daemon=True)
        self.store = store
        self.collector = collector
        self.leading = leading
        self.interval = interval
        self.stop = stop

    def run(self) -> None:
        while not self.stop.is_set():
            if not self.leading():
                self.collector.update(None)
                # Look again soon: a new leader should export its state at once.
                self.stop.wait(min(1.0, self.interval))
                continue
            started = time.monotonic()
            try:
                self.collector.update(take_snapshot(self.store))
            except redis.RedisError as exc:
                # The last snapshot stays; its timestamp shows how old it is.
                log.warning("could not refresh state metrics: %s", exc)
            # With very many partitions a scan takes long: it never takes more than a third
            # of the scheduler's time, which applying notifications needs.
            self.stop.wait(max(self.interval, 2 * (time.monotonic() - started)))
