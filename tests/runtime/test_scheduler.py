"""The scheduler's handling of notifications, against a real Redis.

Dispatch is an injected callable here, recorded in a list; the system tests send real Celery
tasks to a real worker.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from archiver.config import Settings
from archiver.core.notification import Notification
from archiver.core.object_names import PartitionId
from archiver.errors import DispatchFailed
from archiver.runtime.dispatch import ArchiveTask
from archiver.runtime.scheduler import Scheduler
from archiver.store.state_store import RedisStateStore
from archiver.store.streams import Streams
from tests.archive_factory import new_bucket
from tests.store_calls import apply_notification, archive_and_acknowledge, mark_dispatched
from tests.support import recording_dispatch, stream_entries, wait_for


def _scheduler(
    store: RedisStateStore, streams: Streams, dispatched: list[ArchiveTask]
) -> Scheduler:
    settings = Settings.from_env({"ARCHIVER_STORAGES": "default=/srv/default"})
    return Scheduler(settings, store, streams, recording_dispatch(dispatched))


def _drain(scheduler: Scheduler, streams: Streams) -> None:
    streams.ensure_scheduler_group()
    while batch := streams.read_notifications(pending=False, count=100, block_ms=None):
        scheduler.handle(batch)


def test_bad_notifications_are_dead_lettered_and_good_ones_still_flow(
    store: RedisStateStore, streams: Streams
) -> None:
    dispatched: list[ArchiveTask] = []
    scheduler = _scheduler(store, streams, dispatched)
    bad = [
        {"storage": "default", "partition": "1", "low": "5"},
        {"storage": "default", "partition": "1", "low": "9", "high": "3"},
        {"storage": "elsewhere", "partition": "1", "low": "1", "high": "3"},
        {"storage": "default", "partition": "x", "low": "1", "high": "3"},
    ]
    for fields in bad:
        streams.client.xadd(streams.keys.notifications, fields)  # type: ignore[arg-type]
    streams.client.xadd(
        streams.keys.notifications,
        {"storage": "default", "partition": "1", "low": "1", "high": "3"},
    )
    _drain(scheduler, streams)
    rejected = stream_entries(streams.client, streams.keys.rejected_notifications)
    reasons = [fields["reason"] for _id, fields in rejected]
    assert len(reasons) == 4
    assert "missing field(s): high" in reasons[0]
    assert "above high water mark" in reasons[1]
    assert "unknown storage" in reasons[2]
    assert "partition id" in reasons[3]
    assert rejected[2][1]["field:storage"] == "elsewhere"
    assert dispatched == [("default", 1, 1, 1)]
    # Handled notifications are gone from the stream; nothing is left pending.
    assert streams.client.xlen(streams.keys.notifications) == 0
    assert streams.client.xpending(streams.keys.notifications, "scheduler")["pending"] == 0


def test_pending_notifications_of_a_crashed_scheduler_are_read_again(
    store: RedisStateStore, streams: Streams
) -> None:
    streams.ensure_scheduler_group()
    streams.client.xadd(
        streams.keys.notifications,
        {"storage": "default", "partition": "2", "low": "4", "high": "6"},
    )
    # A scheduler read it and died before applying it.
    assert len(streams.read_notifications(pending=False, count=10, block_ms=None)) == 1
    assert streams.read_notifications(pending=False, count=10, block_ms=None) == []
    pending = streams.read_notifications(pending=True, count=10, block_ms=None)
    assert len(pending) == 1
    dispatched: list[ArchiveTask] = []
    _scheduler(store, streams, dispatched).handle(pending)
    assert dispatched == [("default", 2, 4, 1)]
    assert streams.read_notifications(pending=True, count=10, block_ms=None) == []


def test_a_batch_abandoned_while_another_leads_is_applied_by_the_leader(
    store: RedisStateStore, streams: Streams
) -> None:
    """A paused leader woke up, read a batch after the new leader had replayed what was
    pending, and died: the leader applies it at its next sweep, not at the next change of
    leader, and the trim no longer stops below it."""
    streams.ensure_scheduler_group()
    dispatched: list[ArchiveTask] = []
    scheduler = _scheduler(store, streams, dispatched)
    assert scheduler.recover_pending(threading.Event())  # the new leader: nothing pending
    streams.publish_notification(Notification("default", 3, 1, 2))
    assert len(streams.read_notifications(pending=False, count=10, block_ms=None)) == 1
    assert scheduler.recover_pending(threading.Event())
    assert dispatched == [("default", 3, 1, 1)]
    assert streams.client.xlen(streams.keys.notifications) == 0


def test_sweep_dispatches_partitions_whose_grant_expired(
    store: RedisStateStore, streams: Streams
) -> None:
    dispatched: list[ArchiveTask] = []
    scheduler = _scheduler(store, streams, dispatched)
    # A grant that has already run out: its task was lost.
    apply_notification(store, "default", 7, 1, 2, lease_seconds=0.001)
    wait_for(lambda: scheduler.sweep() == 1, timeout=5, what="the sweep to re-dispatch")
    assert dispatched == [("default", 7, 1, 2)]
    assert scheduler.sweep() == 0  # the new grant is live


def test_a_task_that_cannot_be_sent_releases_its_claim_and_stays_pending(
    store: RedisStateStore, streams: Streams
) -> None:
    sent: list[ArchiveTask] = []
    broker_up = False

    def dispatch(tasks: Sequence[ArchiveTask]) -> list[Exception | None]:
        if not broker_up:
            return [ConnectionError("broker unreachable")] * len(tasks)
        return recording_dispatch(sent)(tasks)

    settings = Settings.from_env({"ARCHIVER_STORAGES": "default=/srv/default"})
    scheduler = Scheduler(settings, store, streams, dispatch)
    streams.ensure_scheduler_group()
    streams.client.xadd(
        streams.keys.notifications,
        {"storage": "default", "partition": "5", "low": "1", "high": "2"},
    )
    batch = streams.read_notifications(pending=False, count=10, block_ms=None)
    with pytest.raises(DispatchFailed):
        scheduler.handle(batch)
    record = store.records.load(PartitionId("default", 5))
    assert record is not None
    assert record.state.in_flight_lsn is None  # released, not stranded
    broker_up = True
    scheduler.handle(streams.read_notifications(pending=True, count=10, block_ms=None))
    assert sent == [("default", 5, 1, 2)]
    assert streams.read_notifications(pending=True, count=10, block_ms=None) == []


def test_sweep_takes_over_a_claim_whose_task_was_never_sent(
    store: RedisStateStore, streams: Streams
) -> None:
    dispatched: list[ArchiveTask] = []
    settings = Settings.from_env({"ARCHIVER_SWEEP_INTERVAL_SECONDS": "0.1"})
    scheduler = Scheduler(settings, store, streams, recording_dispatch(dispatched))
    # A scheduler claimed both and died; it had sent only partition 2's task.
    apply_notification(store, "default", 1, 1, 1, lease_seconds=600)
    sent = apply_notification(store, "default", 2, 1, 1, lease_seconds=600).claim
    assert sent is not None
    mark_dispatched(store, "default", 2, sent.token)
    wait_for(lambda: scheduler.sweep() == 1, timeout=10, what="the orphan to be taken over")
    assert dispatched == [("default", 1, 1, 2)]


def test_notifications_for_one_partition_are_folded_into_one(
    store: RedisStateStore, streams: Streams
) -> None:
    dispatched: list[ArchiveTask] = []
    scheduler = _scheduler(store, streams, dispatched)
    before = REGISTRY.get_sample_value("archiver_notifications_total", {"result": "gap"}) or 0
    for low, high in ((1, 3), (1, 5), (4, 6)):  # the producer lost 1..3 between the last two
        streams.publish_notification(Notification("default", 1, low, high))
    streams.publish_notification(Notification("default", 2, 1, 1))
    streams.ensure_scheduler_group()
    batch = streams.read_notifications(pending=False, count=100, block_ms=None)
    assert len(batch) == 4
    scheduler.handle(batch)
    # One claim per partition; partition 1 as if the three had been applied in turn.
    assert dispatched == [("default", 1, 4, 1), ("default", 2, 1, 1)]
    record = store.records.load(PartitionId("default", 1))
    assert record is not None
    assert (record.state.next_lsn, record.state.high_water_mark) == (4, 6)
    assert record.gaps_total == 1
    # Every notification is counted, with the outcome of the one it was folded into.
    after = REGISTRY.get_sample_value("archiver_notifications_total", {"result": "gap"}) or 0
    assert after - before == 3
    assert streams.client.xlen(streams.keys.notifications) == 0


def test_the_sweep_looks_only_at_what_is_due_and_learns_when_to_look_again(
    store: RedisStateStore, streams: Streams
) -> None:
    dispatched: list[ArchiveTask] = []
    scheduler = _scheduler(store, streams, dispatched)
    streams.ensure_scheduler_group()
    for partition in (1, 2, 3):
        streams.publish_notification(Notification("default", partition, 1, 1))
    scheduler.handle(streams.read_notifications(pending=False, count=10, block_ms=None))
    due = store.client.zrange(store.keys.due, 0, -1, withscores=True)
    now = store.server_time_ms()
    # Just claimed: looked at again once an unsent task would count as an orphan.
    assert {member for member, _ in due} == {"default/1", "default/2", "default/3"}
    assert all(now < score <= now + 23_000 for _, score in due)
    # Partition 3 is archived meanwhile; partition 2's task was lost and its grant ran out.
    three = store.records.load(PartitionId("default", 3))
    assert three is not None
    store.transitions.commit_success(
        PartitionId("default", 3), 1, three.state.fencing_token, 60, claim_next=False
    )
    store.client.hset(store.keys.partition(PartitionId("default", 2)), "lease_until", 1)
    store.client.zadd(store.keys.due, {"default/1": 0, "default/2": 0, "default/3": 0})
    dispatched.clear()

    assert scheduler.sweep() == 1
    assert dispatched == [("default", 2, 1, 2)]
    scores = dict(store.client.zrange(store.keys.due, 0, -1, withscores=True))
    # Idle: dropped until new work arrives. Live grant: looked at when its lease ends.
    assert "default/3" not in scores
    one = store.records.load(PartitionId("default", 1))
    assert one is not None
    assert scores["default/1"] == one.state.lease_expires_ms
    # A partition missing from the index is found again by the periodic resync.
    store.client.zrem(store.keys.due, "default/2")
    store.client.hset(store.keys.partition(PartitionId("default", 2)), "lease_until", 1)
    dispatched.clear()
    sweeps = 0
    while not dispatched:
        scheduler.sweep()
        sweeps += 1
        assert sweeps <= 30, "the resync should come within 30 sweeps"
    assert dispatched == [("default", 2, 1, 3)]


def test_with_ack_policy_all_a_reacknowledgement_waits_for_the_mirrors(
    store: RedisStateStore, streams: Streams, tmp_path: Path
) -> None:
    """After a reconcile the partition's state may be ahead of a mirror: the scheduler's
    acknowledgement of what is archived goes no further than every mirror holds."""
    settings = Settings.from_env(
        {
            "ARCHIVER_STORAGES": "default=/srv/default",
            "ARCHIVER_MIRROR_URLS": f"far={(tmp_path / 'mirror').as_uri()}",
            "ARCHIVER_ACK_POLICY": "all",
        }
    )
    scheduler = Scheduler(settings, store, streams, recording_dispatch([]))
    archive_and_acknowledge(
        store, new_bucket(tmp_path / "primary"), tmp_path / "wal", "default", 1, range(1, 4)
    )
    pid = PartitionId("default", 1)
    assert store.mirrors.claim("far", pid, "copier", 60_000)
    assert store.mirrors.advance("far", pid, "copier", 1, 60_000)

    def acknowledged() -> list[int]:
        _, acks = streams.read_acks("0", count=100)
        return [a.lsn for a in acks]

    streams.publish_notification(Notification("default", 1, 1, 3))
    _drain(scheduler, streams)
    assert acknowledged() == [1]
    assert store.mirrors.advance("far", pid, "copier", 3, 60_000)
    streams.publish_notification(Notification("default", 1, 1, 3))
    _drain(scheduler, streams)
    assert acknowledged() == [1, 3]
