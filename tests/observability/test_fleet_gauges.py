"""The fleet-state gauges: computed from Redis, exported by the leader only."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from archiver.core.object_names import PartitionId
from archiver.observability.fleet_gauges import FleetStateCollector, take_snapshot
from archiver.store.state_store import RedisStateStore
from tests.store_calls import apply_notification

HOUR = 3600.0


def exported(
    collector: FleetStateCollector,
) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    registry = CollectorRegistry()
    registry.register(collector)
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_the_leader_exports_the_fleet_state(store: RedisStateStore) -> None:
    apply_notification(store, "a", 1, 1, 4, HOUR)
    apply_notification(store, "a", 2, 5, 5, HOUR)
    apply_notification(store, "a", 2, 7, 9, HOUR)  # a gap: 5 and 6 were lost
    apply_notification(store, "b", 1, 1, 1, HOUR)
    store.admin.pause(PartitionId("b", 1), "me", "test")
    store.client.hset(store.keys.fleet, "until_ms", store.server_time_ms() + 60_000)
    collector = FleetStateCollector(lambda: True)
    collector.update(take_snapshot(store))
    samples = exported(collector)
    assert samples[("archiver_scheduler_leader", ())] == 1
    assert samples[("archiver_backlog_entries", (("storage", "a"),))] == 4 + 3
    assert samples[("archiver_backlog_entries", (("storage", "b"),))] == 1
    assert samples[("archiver_partitions", (("state", "in-flight"), ("storage", "a")))] == 2
    assert samples[("archiver_partitions", (("state", "paused"), ("storage", "b")))] == 1
    assert samples[("archiver_gaps_total", (("storage", "a"),))] == 1
    assert samples[("archiver_gaps_total", (("storage", "b"),))] == 0
    assert 50 < samples[("archiver_fleet_backoff_seconds", ())] <= 60
    assert samples[("archiver_oldest_unarchived_entry_age_seconds", (("storage", "a"),))] >= 0
    assert samples[("archiver_state_refresh_timestamp_seconds", ())] > 0


def test_a_standby_exports_only_that_it_is_not_leading(store: RedisStateStore) -> None:
    apply_notification(store, "a", 1, 1, 4, HOUR)
    leading = [True]
    collector = FleetStateCollector(lambda: leading[0])
    collector.update(take_snapshot(store))
    leading[0] = False
    assert exported(collector) == {("archiver_scheduler_leader", ()): 0}
