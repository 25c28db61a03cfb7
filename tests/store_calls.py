"""One-at-a-time forms of the state store's batched calls, which only tests make: production
code always sends many partitions in one round trip."""

from __future__ import annotations

from pathlib import Path

from archiver.core.object_names import PartitionId
from archiver.core.partition import Claim
from archiver.dev.producer import write_entry
from archiver.runtime.archiving import copy_entry
from archiver.sinks import Sink
from archiver.store.state_store import RedisStateStore
from archiver.store.transitions import MARK_RESOLUTION_MS, NotificationResult
from tests.archive_factory import entry_files


def apply_notification(
    store: RedisStateStore,
    storage: str,
    partition: int,
    low: int,
    high: int,
    lease_seconds: float,
    mark_resolution_ms: int = MARK_RESOLUTION_MS,
) -> NotificationResult:
    return store.transitions.apply_notifications(
        [(storage, partition, low, high)], lease_seconds, mark_resolution_ms
    )[0]


def claim_next_entry(
    store: RedisStateStore, storage: str, partition: int, lease_seconds: float
) -> Claim | None:
    (check,) = store.transitions.check_partitions([PartitionId(storage, partition)], lease_seconds)
    return check.claim


def claim_many(
    store: RedisStateStore,
    partitions: list[tuple[str, int]],
    lease_seconds: float,
    orphan_seconds: float | None = None,
) -> list[tuple[str, int, Claim]]:
    pids = [PartitionId(*p) for p in partitions]
    return [
        (check.pid.storage, check.pid.partition, check.claim)
        for check in store.transitions.check_partitions(pids, lease_seconds, orphan_seconds)
        if check.claim is not None
    ]


def mark_dispatched(store: RedisStateStore, storage: str, partition: int, token: int) -> None:
    store.transitions.mark_dispatched_many([(PartitionId(storage, partition), token)])


def archive_and_acknowledge(
    store: RedisStateStore, sink: Sink, root: Path, storage: str, partition: int, lsns: range
) -> None:
    """What a worker does for each LSN, without Celery: claim, archive, commit."""
    claim = apply_notification(store, storage, partition, lsns.start, lsns.stop - 1, 30).claim
    for lsn in lsns:
        claim = claim or claim_next_entry(store, storage, partition, 30)
        assert claim is not None, lsn
        assert claim.lsn == lsn, (claim, lsn)
        write_entry(root, partition, lsn, entry_files(partition, lsn))
        copy_entry(sink, storage, root, partition, lsn, encrypt=sink.keyring.encrypting)
        commit = store.transitions.commit_success(
            PartitionId(storage, partition), lsn, claim.token, 30, claim_next=False
        )
        assert commit.committed
        claim = None
