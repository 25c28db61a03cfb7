"""Rebuilding partition state from the archive, for when Redis state was lost.

Each partition moves to just past its newest archived LSN, which is acknowledged as done; holes
below it become recorded gaps. State is never moved backwards, so running it on healthy state
changes nothing. The producer's next notification then resumes work without re-uploading.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from archiver.catalog import partition_archives
from archiver.keys import InvalidName, check_storage, parse_partition
from archiver.partition import Gap
from archiver.sinks import Sink
from archiver.state_store import RedisStateStore


@dataclass(frozen=True)
class ReconciledPartition:
    storage: str
    partition: int
    archived: int
    last_archived: int | None
    holes: list[Gap] = field(default_factory=list)
    changed: bool = False
    previous_next_lsn: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "storage": self.storage,
            "partition": self.partition,
            "archived": self.archived,
            "last_archived": self.last_archived,
            "holes": [{"expected": h.expected, "actual": h.actual} for h in self.holes],
            "changed": self.changed,
            "previous_next_lsn": self.previous_next_lsn,
            "next_lsn": None if self.last_archived is None else self.last_archived + 1,
        }


def holes_in(lsns: list[int]) -> list[Gap]:
    """Missing runs between sorted LSNs, as gaps."""
    return [Gap(a + 1, b) for a, b in itertools.pairwise(lsns) if b > a + 1]


def storages_in(sink: Sink) -> Iterator[str]:
    for name in sink.list_directories(""):
        try:
            yield check_storage(name)
        except InvalidName:
            continue


def partitions_in(sink: Sink, storage: str) -> Iterator[int]:
    for name in sink.list_directories(f"{storage}/"):
        try:
            yield parse_partition(name)
        except InvalidName:
            continue


def reconcile_partition(
    store: RedisStateStore, sink: Sink, storage: str, partition: int, dry_run: bool = False
) -> ReconciledPartition:
    lsns = sorted({a.lsn for a in partition_archives(sink, storage, partition)})
    if not lsns:
        return ReconciledPartition(storage, partition, 0, None)
    holes = holes_in(lsns)
    if dry_run:
        record = store.load(storage, partition)
        behind = record is None or record.state.next_lsn <= lsns[-1]
        previous = None if record is None else record.state.next_lsn
        return ReconciledPartition(storage, partition, len(lsns), lsns[-1], holes, behind, previous)
    changed, previous = store.reconcile(storage, partition, lsns[-1], holes)
    return ReconciledPartition(storage, partition, len(lsns), lsns[-1], holes, changed, previous)
