"""The notification and acknowledgement streams, against a real Redis."""

from __future__ import annotations

import redis

from archiver.core.notification import Notification
from archiver.core.object_names import PartitionId
from archiver.store.keys import RedisKeys
from archiver.store.state_store import RedisStateStore
from archiver.store.streams import Streams
from tests.store_calls import apply_notification

HOUR = 3600.0


def acks_of(streams: Streams, partition: int) -> list[int]:
    _, acks = streams.read_acks("0", count=10_000)
    return [a.lsn for a in acks if a.partition == partition]


def test_an_acknowledgement_never_follows_a_newer_one_of_its_partition(streams: Streams) -> None:
    streams.publish_ack("s", 1, 5)
    streams.publish_ack("s", 1, 4)  # a late retry of an older one
    streams.publish_acks([("s", 1, 3), ("s", 2, 1), ("s", 1, 5), ("s", 1, 6)])
    assert acks_of(streams, 1) == [5, 5, 6]  # a repeat of the newest is published again
    assert acks_of(streams, 2) == [1]


def test_a_reacknowledgement_read_before_a_commit_is_not_published_after_it(
    store: RedisStateStore, streams: Streams
) -> None:
    """The scheduler reads the acknowledged LSN in one round trip and publishes it in a later
    one; a worker's commit and acknowledgement can fall in between."""
    claim = apply_notification(store, "s", 1, 1, 1, HOUR).claim
    assert claim is not None
    assert store.transitions.commit_success(
        PartitionId("s", 1), claim.lsn, claim.token, HOUR
    ).committed
    streams.publish_ack("s", 1, 1)
    stale = apply_notification(store, "s", 1, 1, 1, HOUR)
    assert stale.reacknowledge == 1  # read now...
    claim = apply_notification(store, "s", 1, 1, 2, HOUR).claim
    assert claim is not None
    assert store.transitions.commit_success(
        PartitionId("s", 1), claim.lsn, claim.token, HOUR
    ).committed
    streams.publish_ack("s", 1, 2)  # ...a worker acknowledges 2...
    streams.publish_acks([("s", 1, stale.reacknowledge)])  # ...and the scheduler publishes
    assert acks_of(streams, 1) == [1, 2]


def test_the_trim_spares_notifications_another_scheduler_read_and_did_not_apply(
    redis_client: redis.Redis, keys: RedisKeys
) -> None:
    """A paused leader that wakes up applies what it had read and trims the stream: what the
    new leader read meanwhile, before it, must survive the new leader's crash."""
    new_leader, old_leader, successor = (Streams(redis_client, keys) for _ in range(3))
    new_leader.ensure_scheduler_group()
    for partition in range(1, 5):
        new_leader.publish_notification(Notification("s", partition, 1, 1))
    read_first = new_leader.read_notifications(pending=False, count=2, block_ms=None)
    read_later = old_leader.read_notifications(pending=False, count=2, block_ms=None)
    old_leader.done_with_notifications([message_id for message_id, _ in read_later])
    # The new leader crashes before applying its batch; its successor reads it again, whole.
    again = successor.read_notifications(pending=True, count=10, block_ms=None)
    assert [message_id for message_id, _ in again] == [m for m, _ in read_first]
    assert all(fields for _, fields in again)
    successor.done_with_notifications([message_id for message_id, _ in again])
    assert successor.queued_notifications() == 0
