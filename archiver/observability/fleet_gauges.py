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
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import redis
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from archiver.core.object_names import PartitionId
from archiver.observability import metrics
from archiver.observability.overview import Overview, summarize
from archiver.store.records import PartitionRecord
from archiver.store.state_store import RedisStateStore

log = logging.getLogger("archiver.state_metrics")


@dataclass
class MirrorTotals:
    lag_entries: int = 0
    # Partitions by how the mirror stands on them: current, behind, failing, conflicted.
    partitions: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(("current", "behind", "failing", "conflicted"), 0)
    )


@dataclass(frozen=True)
class Snapshot:
    overview: Overview
    now_ms: int
    fleet_backoff_seconds: float
    taken_at: float  # unix time
    mirrors: dict[str, MirrorTotals] = field(default_factory=dict)


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
        if snapshot.mirrors:
            lag = GaugeMetricFamily(
                metrics.MIRROR_LAG,
                "Acknowledged entries a mirror may not hold yet, summed over partitions",
                labels=["mirror"],
            )
            standing = GaugeMetricFamily(
                metrics.MIRROR_PARTITIONS,
                "Partitions by how a mirror stands on them: current, behind, failing (copies "
                "failing, retried with backoff), conflicted (stopped for an operator)",
                labels=["mirror", "state"],
            )
            for name, mirror in sorted(snapshot.mirrors.items()):
                lag.add_metric([name], mirror.lag_entries)
                for state, count in mirror.partitions.items():
                    standing.add_metric([name, state], count)
            yield from (lag, standing)
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


def take_snapshot(store: RedisStateStore, mirror_names: Sequence[str] = ()) -> Snapshot:
    records = list(store.records.all())
    overview = summarize(records)
    mirrors = {name: mirror_totals(store, name, records) for name in mirror_names}
    return Snapshot(overview, store.server_time_ms(), store.fleet.left(), time.time(), mirrors)


def mirror_totals(
    store: RedisStateStore, name: str, records: list[PartitionRecord]
) -> MirrorTotals:
    totals = MirrorTotals()
    for start in range(0, len(records), 500):
        batch = records[start : start + 500]
        pids = [PartitionId(r.storage, r.partition) for r in batch]
        for record, progress in zip(batch, store.mirrors.load_many(name, pids), strict=True):
            acknowledged = record.state.acknowledged_lsn
            totals.lag_entries += progress.lag(acknowledged)
            totals.partitions[progress.standing(acknowledged)] += 1
    return totals


class StateMetricsRefresher(threading.Thread):
    """Recomputes the snapshot while this scheduler leads; drops it when it stops leading."""

    def __init__(
        self,
        store: RedisStateStore,
        collector: FleetStateCollector,
        leading: Callable[[], bool],
        interval: float,
        stop: threading.Event,
        mirror_names: Sequence[str] = (),
    ) -> None:
        super().__init__(name="state-metrics", daemon=True)
        self.mirror_names = list(mirror_names)
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
                self.collector.update(take_snapshot(self.store, self.mirror_names))
            except redis.RedisError as exc:
                # The last snapshot stays; its timestamp shows how old it is.
                log.warning("could not refresh state metrics: %s", exc)
            # With very many partitions a scan takes long: it never takes more than a third
            # of the scheduler's time, which applying notifications needs.
            self.stop.wait(max(self.interval, 2 * (time.monotonic() - started)))
