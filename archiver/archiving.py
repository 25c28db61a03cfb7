"""Archiving one WAL entry: find its directory, skip it if archived, else stream its tar.

An archive object is never replaced. When one is already there (an earlier attempt crashed
after its upload, or another worker raced us), its content is compared with a fresh tar of the
entry: the tar is deterministic, so equal content means the entry is archived, and different
content is a conflict that stops the partition. When the entry is gone from this host there is
nothing to compare with: the object is accepted only if it verifies on its own (its recorded
SHA-256 and a sound tar of exactly this entry).
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from archiver.archive_check import archive_problem
from archiver.catalog import Archive
from archiver.compression import decoded, encode
from archiver.keys import Compression, archive_key, check_partition
from archiver.lsn import format_lsn
from archiver.sinks import Sink, SinkError, WriteOutcome
from archiver.sinks.base import hashing
from archiver.tarball import EntryError, EntryMissing, UnsafeEntry, entry_tar_chunks

log = logging.getLogger(__name__)

Guard = Callable[[Iterator[bytes]], Iterator[bytes]]


class ArchiveConflict(Exception):
    """The archive object exists with content other than the entry's."""


class UnverifiableArchive(EntryError):
    """The entry is not on this host, and the object at its name does not verify on its own."""


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


def _tar_sha256(path: Path, name: str) -> str:
    digest = hashlib.sha256()
    for _ in hashing(entry_tar_chunks(path, name), digest):
        pass
    return digest.hexdigest()


def _stored_content(sink: Sink, key: str, compression: Compression) -> tuple[str, str]:
    """SHA-256 of an object's bytes and of the tar inside it, read in bounded memory."""
    with tempfile.TemporaryFile() as spool:
        object_sha256 = sink.download(key, spool).sha256
        spool.seek(0)
        digest = hashlib.sha256()
        tar = decoded(spool, compression)
        while chunk := tar.read(1024 * 1024):
            digest.update(chunk)
        return object_sha256, digest.hexdigest()


def _accept_existing(sink: Sink, key: str, compression: Compression, path: Path, name: str) -> None:
    """Accept the object at ``key`` as the entry's archive if it holds the entry's tar, making
    it durable and its checksum recorded; raise ArchiveConflict if it holds anything else."""
    ours = _tar_sha256(path, name)
    if compression is Compression.NONE and sink.recorded_sha256(key) == ours:
        sink.confirm_archived(key, ours)
        return
    # Compare content, not bytes: zstd's output may differ between library versions.
    try:
        object_sha256, tar_sha256 = _stored_content(sink, key, compression)
    except SinkError:
        raise
    except Exception as exc:  # not a zstd frame, for one: not what the entry gives
        raise ArchiveConflict(
            f"{key} already exists and cannot be decoded ({type(exc).__name__}: {exc}); "
            "it is not replaced"
        ) from exc
    if tar_sha256 != ours:
        raise ArchiveConflict(
            f"{key} already exists with other content (entry's tar sha256 {ours}); "
            "it is not replaced"
        )
    sink.confirm_archived(key, object_sha256)


def existing_archive(
    sink: Sink,
    storage: str,
    partition: int,
    lsn: int,
    preferred: Compression,
    other_names_only: bool = False,
) -> tuple[str, Compression] | None:
    """The archive object of ``lsn`` under either name, the preferred one looked up first
    (or not at all, with ``other_names_only``)."""
    names = [c for c in Compression if c is not preferred]
    for compression in names if other_names_only else [preferred, *names]:
        key = archive_key(storage, partition, lsn, compression)
        if sink.exists(key):
            return key, compression
    return None


def _accept_without_entry(
    sink: Sink, storage: str, partition: int, lsn: int, compression: Compression, path: Path
) -> ArchivedEntry:
    """The entry is gone from this host (acknowledged and deleted, or its disk is not mounted
    here): an object at its name is accepted only if it verifies on its own."""
    existing = existing_archive(sink, storage, partition, lsn, compression)
    if existing is None:
        raise EntryMissing(
            f"entry directory {path} does not exist on this host, and LSN {lsn} is not archived"
        )
    key, stored_as = existing
    problem = archive_problem(sink, Archive(lsn, key, 0, stored_as))
    if problem is not None:
        raise UnverifiableArchive(
            f"entry directory {path} is missing, and {key} does not verify ({problem}); "
            "not accepted as its archive"
        )
    log.info("entry is gone; its archive verified key=%s", key)
    sink.confirm_archived(key, None)
    return ArchivedEntry(key, uploaded=False, size=None)


def archive_entry(
    sink: Sink,
    storage: str,
    storage_root: Path,
    partition: int,
    lsn: int,
    compression: Compression = Compression.NONE,
    guard: Guard = _unguarded,
    fresh: bool = False,
) -> ArchivedEntry:
    """``guard`` sees every chunk on its way to the sink and may abort the write by raising.

    The write is create-only: an object already under the name is compared, never replaced.
    Unless ``fresh`` (no earlier attempt at this LSN can have written anything), the archive is
    first looked for under the other name, so that an entry is never stored under both; and
    under both when the entry is gone from disk and there is nothing to write."""
    path = entry_path(storage_root, partition, lsn)
    name = format_lsn(lsn)
    on_disk = os.path.lexists(path)
    if not on_disk:
        return _accept_without_entry(sink, storage, partition, lsn, compression, path)
    existing = None
    if not fresh:
        existing = existing_archive(
            sink, storage, partition, lsn, compression, other_names_only=True
        )
    if existing is not None:
        key, stored_as = existing
        _accept_existing(sink, key, stored_as, path, name)
        return ArchivedEntry(key, uploaded=False, size=None)

    def source() -> Iterator[bytes]:
        return guard(encode(entry_tar_chunks(path, name), compression))

    key = archive_key(storage, partition, lsn, compression)
    result = sink.write(key, source)
    if result.outcome is WriteOutcome.ALREADY_EXISTS:
        # An earlier attempt wrote it, or another worker raced us.
        _accept_existing(sink, key, compression, path, name)
        return ArchivedEntry(key, uploaded=False, size=result.size)
    return ArchivedEntry(key, uploaded=True, size=result.size)
