"""Fleet figures: states, backlog, the age of the oldest waiting entry, filters and ranking.

The records come from a real Redis, written by the real scripts.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from click.testing import CliRunner, Result

from archiver.cli import main
from archiver.core.object_names import PartitionId
from archiver.core.partition import PartitionCondition
from archiver.observability.overview import PartitionFilter, SortKey, select, summarize
from archiver.store.state_store import RedisStateStore
from tests.store_calls import apply_notification, claim_next_entry

HOUR = 3600.0


def oldest(store: RedisStateStore, partition: int) -> int | None:
    record = store.records.load(PartitionId("s", partition))
    assert record is not None
    return record.oldest_unarchived_ms


def marks(store: RedisStateStore, partition: int) -> list[tuple[int, int]]:
    """The partition's announcement marks as (high, ms) pairs."""
    raw: list[Any] = store.client.lrange(store.keys.marks(PartitionId("s", partition)), 0, -1)
    pairs = [str(m).split(" ") for m in raw]
    return [(int(high), int(ms)) for high, ms in pairs]


def archive_next(store: RedisStateStore, partition: int) -> None:
    """Commit the partition's next entry, claiming it first unless it is in flight."""
    record = store.records.load(PartitionId("s", partition))
    assert record is not None
    lsn, token = record.state.in_flight_lsn, record.state.fencing_token
    if lsn is None:
        claim = claim_next_entry(store, "s", partition, HOUR)
        assert claim is not None
        lsn, token = claim.lsn, claim.token
    assert store.transitions.commit_success(
        PartitionId("s", partition), lsn, token, HOUR, claim_next=False
    ).committed


def test_the_oldest_waiting_entry_is_the_first_announcement_not_yet_archived(
    store: RedisStateStore,
) -> None:
    # Resolution 0: every announcement gets its own mark.
    apply_notification(store, "s", 1, 1, 2, HOUR, mark_resolution_ms=0)
    first = oldest(store, 1)
    assert first is not None
    apply_notification(store, "s", 1, 1, 4, HOUR, mark_resolution_ms=0)
    assert [high for high, _ in marks(store, 1)] == [2, 4]
    second_ms = marks(store, 1)[1][1]
    # Archiving 1 leaves 2, announced with the first mark.
    archive_next(store, 1)
    assert oldest(store, 1) == first
    # Archiving 2 leaves 3 and 4, announced with the second.
    archive_next(store, 1)
    assert oldest(store, 1) == second_ms
    archive_next(store, 1)
    archive_next(store, 1)
    # Nothing waits: no age, no marks left behind.
    assert oldest(store, 1) is None
    assert store.client.exists(store.keys.marks(PartitionId("s", 1))) == 0


def test_marks_stay_few_and_err_on_the_old_side(store: RedisStateStore) -> None:
    apply_notification(store, "s", 1, 1, 1, HOUR, mark_resolution_ms=0)
    first = oldest(store, 1)
    for high in range(2, 100):
        apply_notification(store, "s", 1, 1, high, HOUR, mark_resolution_ms=0)
    assert len(marks(store, 1)) == 32
    # The last mark was widened to cover every later announcement, keeping its older time.
    last_high, last_ms = marks(store, 1)[-1]
    assert last_high == 99
    for _ in range(50):
        archive_next(store, 1)
    age_base = oldest(store, 1)
    assert age_base is not None
    assert first is not None
    assert first <= age_base <= last_ms


def test_a_gap_moves_the_oldest_waiting_entry_on(store: RedisStateStore) -> None:
    apply_notification(store, "s", 1, 1, 3, HOUR, mark_resolution_ms=0)
    apply_notification(store, "s", 1, 1, 6, HOUR, mark_resolution_ms=0)
    later = marks(store, 1)[-1][1]
    apply_notification(store, "s", 1, 5, 6, HOUR, mark_resolution_ms=0)
    assert oldest(store, 1) == later


def make_fleet(store: RedisStateStore) -> None:
    """s/1 idle, s/2 in flight (backlog 10), s/3 active (backlog 3), s/4 conflicted,
    s/5 paused, t/1 in flight (backlog 1)."""
    c = apply_notification(store, "s", 1, 1, 1, HOUR).claim
    assert c is not None
    store.transitions.commit_success(PartitionId("s", 1), c.lsn, c.token, HOUR)
    apply_notification(store, "s", 2, 1, 10, HOUR)
    c = apply_notification(store, "s", 3, 1, 3, HOUR).claim
    assert c is not None
    store.transitions.release_claim(PartitionId("s", 3), c.lsn, c.token)
    c = apply_notification(store, "s", 4, 1, 2, HOUR).claim
    assert c is not None
    store.transitions.record_failure(PartitionId("s", 4), c.lsn, c.token, "boom", HOUR)
    store.transitions.mark_conflict(
        PartitionId("s", 4), c.lsn, c.token, "ArchiveConflict: other bytes"
    )
    apply_notification(store, "s", 5, 7, 8, HOUR)
    store.admin.pause(PartitionId("s", 5), "me", "test")
    apply_notification(store, "t", 1, 1, 1, HOUR)


def test_summarize_counts_states_backlog_and_errors(store: RedisStateStore) -> None:
    make_fleet(store)
    overview = summarize(store.records.all())
    s = overview.storages["s"]
    assert s.partitions == {
        PartitionCondition.IDLE: 1,
        PartitionCondition.IN_FLIGHT: 1,
        PartitionCondition.ACTIVE: 1,
        PartitionCondition.CONFLICTED: 1,
        PartitionCondition.PAUSED: 1,
        PartitionCondition.STOPPED: 0,
    }
    assert s.backlog == 0 + 10 + 3 + 2 + 2
    assert overview.storages["t"].backlog == 1
    assert overview.total().backlog == 18
    assert s.oldest_unarchived_ms is not None
    assert [(e.storage, e.partition, e.error) for e in overview.recent_errors] == [
        ("s", 4, "ArchiveConflict: other bytes")
    ]


def test_filters_and_ranking(store: RedisStateStore) -> None:
    make_fleet(store)
    now = store.server_time_ms()

    def pick(
        wanted: PartitionFilter, sort: SortKey | None = None, limit: int = 100, at: int = now
    ) -> list[Any]:
        return [
            (r.storage, r.partition) for r in select(store.records.all(), wanted, at, sort, limit)
        ]

    assert sorted(pick(PartitionFilter(condition=PartitionCondition.IN_FLIGHT))) == [
        ("s", 2),
        ("t", 1),
    ]
    assert sorted(pick(PartitionFilter(storage="s", lagging=3))) == [("s", 2), ("s", 3)]
    assert pick(PartitionFilter(), SortKey.BACKLOG, limit=2) == [("s", 2), ("s", 3)]
    # Nothing has waited an hour; a minute from now, everything with work has waited.
    assert pick(PartitionFilter(stuck_seconds=3600)) == []
    stuck = pick(PartitionFilter(stuck_seconds=59), at=now + 60_000)
    assert sorted(stuck) == [("s", 2), ("s", 3), ("s", 4), ("s", 5), ("t", 1)]


@pytest.fixture
def run(redis_url: str) -> Any:
    def invoke(*args: str) -> Result:
        return CliRunner().invoke(
            main,
            list(args),
            env={"ARCHIVER_REDIS_URL": redis_url, "ARCHIVER_BROKER_URL": redis_url},
            catch_exceptions=False,
        )

    return invoke


def test_inspect_summary(run: Any, store: RedisStateStore) -> None:
    make_fleet(store)
    store.client.rpush("archiver.s", "m1", "m2")  # two task messages waiting
    result = run("inspect", "summary", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["partitions"] == {
        "idle": 1,
        "active": 1,
        "in-flight": 2,
        "conflicted": 1,
        "paused": 1,
        "stopped": 0,
    }
    assert summary["backlog"] == 18
    assert summary["storages"]["t"]["backlog"] == 1
    assert summary["queues"] == {"archiver.s": 2, "archiver.t": 0}
    assert summary["fleet_backoff_seconds"] == 0
    assert summary["scheduler_leader"] is None
    assert summary["recent_errors"][0]["partition"] == 4
    human = run("inspect", "summary")
    assert human.exit_code == 0
    for text in ("scheduler leader: NONE", "fleet backoff: none", "other bytes", "in-flight"):
        assert text in human.output


def test_inspect_partitions_filters(run: Any, store: RedisStateStore) -> None:
    make_fleet(store)
    result = run("inspect", "partitions", "--state", "paused", "--json")
    assert [(p["storage"], p["partition"]) for p in json.loads(result.output)] == [("s", 5)]
    result = run("inspect", "partitions", "--lagging", "3", "--sort", "backlog", "--json")
    assert [p["backlog"] for p in json.loads(result.output)] == [10, 3]
    result = run("inspect", "partitions", "--sort", "age", "--limit", "1", "--json")
    assert len(json.loads(result.output)) == 1
    bad = run("inspect", "partitions", "--state", "sleeping")
    assert bad.exit_code == 2
    assert "sleeping" in bad.output
