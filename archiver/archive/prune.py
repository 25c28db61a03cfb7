"""Retention: deleting a partition's archives below an LSN, in batches, never the newest."""

from __future__ import annotations

from collections.abc import Callable

from archiver.archive.catalog import Archive, partition_archives
from archiver.sinks import Sink
from archiver.sinks.base import DELETE_BATCH


def plan_prune(sink: Sink, storage: str, partition: int, before: int) -> list[Archive]:
    """Archives with an LSN below ``before``, less the partition's newest archive, which is
    always kept: it records how far the partition got."""
    archives = partition_archives(sink, storage, partition)
    if not archives:
        return []
    newest = archives[-1].lsn
    return [a for a in archives if a.lsn < before and a.lsn != newest]


def prune(
    sink: Sink, archives: list[Archive], on_batch: Callable[[int], None] = lambda _n: None
) -> int:
    """Delete ``archives`` in requests of at most DELETE_BATCH keys; returns how many."""
    deleted = 0
    for start in range(0, len(archives), DELETE_BATCH):
        batch = [a.key for a in archives[start : start + DELETE_BATCH]]
        sink.delete(batch)
        deleted += len(batch)
        on_batch(len(batch))
    return deleted
