"""Archiving one WAL entry: find its directory, skip it if archived, else stream its tar.

An archive object is never replaced. When one is already there (an earlier attempt crashed
after its upload, or another worker raced us), its bytes are compared with a fresh tar of the
entry: the tar is deterministic, so equal bytes mean the entry is archived, and different bytes
are a conflict that stops the partition.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from archiver.keys import archive_key, check_partition
from archiver.lsn import format_lsn
from archiver.sinks import Sink, WriteOutcome
from archiver.tarball import UnsafeEntry, entry_tar_chunks

log = logging.getLogger(__name__)


class ArchiveConflict(Exception):
    """The archive object exists with bytes other than the entry's."""


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
    # False only when an existing object could not be compared: its entry is gone from disk.
    verified: bool = True


def _unguarded(chunks: Iterator[bytes]) -> Iterator[bytes]:
    return chunks


class _Digest(Protocol):
    def update(self, data: bytes, /) -> None: ...


def _hashing(chunks: Iterator[bytes], digest: _Digest) -> Iterator[bytes]:
    for chunk in chunks:
        digest.update(chunk)
        yield chunk


def _check_same_bytes(sink: Sink, key: str, ours: str) -> None:
    theirs = sink.sha256(key)
    if theirs != ours:
        raise ArchiveConflict(
            f"{key} already exists with different bytes (sha256 {theirs}, entry gives {ours}); "
            "it is not replaced"
        )


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
    path = entry_path(storage_root, partition, lsn)
    name = format_lsn(lsn)
    if sink.exists(key):
        if not os.path.lexists(path):
            # The producer deletes only acknowledged entries, so this one was archived before.
            log.warning("archive exists and its entry is gone; not compared key=%s", key)
            return ArchivedEntry(key, uploaded=False, size=None, verified=False)
        digest = hashlib.sha256()
        for _chunk in _hashing(entry_tar_chunks(path, name), digest):
            pass
        _check_same_bytes(sink, key, digest.hexdigest())
        return ArchivedEntry(key, uploaded=False, size=None)
    digest = hashlib.sha256()
    result = sink.write(key, guard(_hashing(entry_tar_chunks(path, name), digest)))
    if result.outcome is WriteOutcome.ALREADY_EXISTS:
        _check_same_bytes(sink, key, digest.hexdigest())
        return ArchivedEntry(key, uploaded=False, size=result.size)
    return ArchivedEntry(key, uploaded=True, size=result.size)
