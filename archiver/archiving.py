"""Archiving one WAL entry: find its directory, skip it if archived, else stream its tar."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from archiver.keys import archive_key, check_partition
from archiver.lsn import format_lsn
from archiver.sinks import Sink, WriteOutcome
from archiver.tarball import UnsafeEntry, entry_tar_chunks


def entry_path(storage_root: Path, partition: int, lsn: int) -> Path:
    """``<storage root>/<partition>/wal/<lsn>``; refused if it resolves outside the root."""
    path = storage_root / str(check_partition(partition)) / "wal" / format_lsn(lsn)
    root = os.path.realpath(storage_root)
    resolved = os.path.realpath(path)
    if os.path.commonpath([root, resolved]) != root:
        raise UnsafeEntry(f"entry {path} resolves to {resolved}, outside storage root {root}")
    return path


@dataclass(frozen=True)
class ArchivedEntry:
    key: str
    # False when the object was already in the sink and nothing was uploaded.
    uploaded: bool
    size: int | None


def _unguarded(chunks: Iterator[bytes]) -> Iterator[bytes]:
    return chunks


def archive_entry(
    sink: Sink,
    storage: str,
    storage_root: Path,
    partition: int,
    lsn: int,
    guard: Callable[[Iterator[bytes]], Iterator[bytes]] = _unguarded,
) -> ArchivedEntry:
    """``guard`` sees every chunk on its way to the sink and may abort the write by raising."""
    key = archive_key(storage, partition, lsn)
    if sink.exists(key):
        return ArchivedEntry(key, uploaded=False, size=None)
    path = entry_path(storage_root, partition, lsn)
    result = sink.write(key, guard(entry_tar_chunks(path, format_lsn(lsn))))
    return ArchivedEntry(key, result.outcome is WriteOutcome.CREATED, result.size)
