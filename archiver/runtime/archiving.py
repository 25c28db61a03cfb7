"""Archiving one WAL entry: find its directory, skip it if archived, else stream its tar.

An archive object is never replaced. When one is already there (an earlier attempt crashed
after its upload, or another worker raced us), its content is compared with a fresh tar of the
entry: the tar is deterministic, so equal content means the entry is archived, and different
content is a conflict that stops the partition. When the entry is gone from this host there is
nothing to compare with: the object is accepted only if the LSN was acknowledged before (so
the producer may have deleted it) and the object verifies on its own (its recorded checksum
and a sound tar of exactly this entry; one with no checksum is not accepted).
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from archiver.archive.catalog import Archive
from archiver.archive.checks import archive_problem
from archiver.archive.entry_match import entry_tar_sha256, existing_archive, stored_content
from archiver.core.encryption import SealedStream, new_sealed_stream, resumed_sealed_stream
from archiver.core.integrity import Verdict
from archiver.core.lsn import format_lsn
from archiver.core.object_names import ArchiveForm, Compression, form_key, sealed_identity
from archiver.core.object_stream import encoded
from archiver.core.tarball import entry_tar_chunks
from archiver.core.wal_layout import entry_path
from archiver.errors import (
    ArchiveConflict,
    EntryMissing,
    UndecodableArchive,
    UnverifiableArchive,
)
from archiver.sinks import Sink, WriteOutcome
from archiver.sinks.attributes import CHECKSUM_METADATA

log = logging.getLogger("archiver.archiving")

Guard = Callable[[Iterator[bytes]], Iterator[bytes]]
AcknowledgedThrough = Callable[[], int | None]


@dataclass(frozen=True)
class ArchivedEntry:
    key: str
    # False when the object was already in the sink and nothing was uploaded.
    uploaded: bool
    size: int | None


def _unguarded(chunks: Iterator[bytes]) -> Iterator[bytes]:
    return chunks


def _accept_existing(sink: Sink, key: str, form: ArchiveForm, path: Path, name: str) -> None:
    """Accept the object at ``key`` as the entry's archive if it holds the entry's tar and
    its bytes match the checksum recorded for them, making it durable and its SHA-256
    recorded (where it was written elsewhere, without one); raise ArchiveConflict if it holds
    anything else. The object is read whole: a recorded checksum equal to the entry's says
    nothing of bytes damaged since."""
    ours = entry_tar_sha256(path, name)
    # Compare content, not bytes: zstd's output may differ between library versions, and
    # each encryption of an entry differs from every other.
    try:
        download, tar_sha256 = stored_content(sink, key, form)
    except UndecodableArchive as exc:  # not what the entry gives
        raise ArchiveConflict(f"{exc}; it is not replaced") from exc
    if tar_sha256 != ours:
        raise ArchiveConflict(
            f"{key} already exists with other content (entry's tar sha256 {ours}); "
            "it is not replaced"
        )
    integrity = download.integrity()
    if integrity.verdict is Verdict.CORRUPT:
        raise ArchiveConflict(
            f"{key} holds the entry, but its bytes do not match the checksum recorded for "
            f"them ({integrity.detail}); it is not replaced"
        )
    sink.confirm_archived(key, download)


def _accept_without_entry(
    sink: Sink,
    storage: str,
    partition: int,
    lsn: int,
    form: ArchiveForm,
    path: Path,
    acknowledged_through: AcknowledgedThrough,
) -> ArchivedEntry:
    """The entry is not on this host. If it was acknowledged before, the producer may have
    deleted it, and an object at its name is accepted if it verifies on its own. If it never
    was, the entry is still the producer's and this host cannot see it (a disk not mounted
    here): an object at its name cannot be told from someone else's, and is not accepted."""
    existing = existing_archive(sink, storage, partition, lsn, form)
    if existing is None:
        raise EntryMissing(
            f"entry directory {path} does not exist on this host, and LSN {lsn} is not archived"
        )
    key, stored_as = existing
    acknowledged = acknowledged_through()
    if acknowledged is None or acknowledged < lsn:
        raise UnverifiableArchive(
            f"entry directory {path} is missing on this host and LSN {lsn} was never "
            f"acknowledged, so {key} cannot be compared with it; not accepted as its archive"
        )
    problem = archive_problem(
        sink, Archive(lsn, key, 0, stored_as.compression, stored_as.encrypted)
    )
    if problem is not None:
        raise UnverifiableArchive(
            f"entry directory {path} is missing, and {key} does not verify ({problem}); "
            "not accepted as its archive"
        )
    log.info("entry is gone; its archive verified key=%s", key)
    sink.confirm_archived(key, None)
    return ArchivedEntry(key, uploaded=False, size=None)


def _resumable(
    sink: Sink,
    key: str,
    form: ArchiveForm,
    pending: Mapping[str, str],
    sealing: Callable[[SealedStream], Iterator[bytes]],
) -> SealedStream | None:
    """The data key of an earlier write of ``key`` cut off after its attributes, if sealing
    the entry with it again gives exactly the bytes they record: hashed here, in memory, and
    nothing written. Else None, and a fresh key: one data key never seals two plaintexts."""
    resumed = resumed_sealed_stream(sink.keyring, sealed_identity(key), pending)
    recorded = pending.get(CHECKSUM_METADATA)
    if resumed is None or recorded is None or not form.encrypted:
        return None
    digest = hashlib.sha256()
    for chunk in sealing(resumed):
        digest.update(chunk)
    return resumed if digest.hexdigest() == recorded else None


def copy_entry(
    sink: Sink,
    storage: str,
    storage_root: Path,
    partition: int,
    lsn: int,
    compression: Compression = Compression.NONE,
    guard: Guard = _unguarded,
    fresh: bool = False,
    acknowledged_through: AcknowledgedThrough = lambda: None,
    encrypt: bool = False,
) -> ArchivedEntry:
    """``guard`` sees every chunk on its way to the sink and may abort the write by raising.

    The write is create-only: an object already under the name is compared, never replaced.
    Unless ``fresh`` (no earlier attempt at this LSN can have written anything), the archive is
    first looked for under the other name, so that an entry is never stored under both; and
    under both when the entry is gone from disk and there is nothing to write.
    ``acknowledged_through`` tells, when the entry is not on disk, the newest LSN of the
    partition ever acknowledged to the producer. With ``encrypt``, the entry is sealed with
    the sink's current key (a fresh data key each call)."""
    form = ArchiveForm(compression, encrypt)
    path = entry_path(storage_root, partition, lsn)
    name = format_lsn(lsn)
    on_disk = os.path.lexists(path)
    if not on_disk:
        return _accept_without_entry(
            sink, storage, partition, lsn, form, path, acknowledged_through
        )
    existing = None
    if not fresh:
        existing = existing_archive(sink, storage, partition, lsn, form, other_names_only=True)
    if existing is not None:
        key, stored_as = existing
        _accept_existing(sink, key, stored_as, path, name)
        return ArchivedEntry(key, uploaded=False, size=None)

    key = form_key(storage, partition, lsn, form)
    # One data key for every read of the source: each yields the same bytes. An earlier
    # attempt cut off after making its attributes is taken up with its data key.
    sealed = None
    if encrypt:
        pending = None if fresh else sink.pending_metadata(key)
        if pending:
            sealed = _resumable(
                sink,
                key,
                form,
                pending,
                lambda s: guard(encoded(entry_tar_chunks(path, name), form, s)),
            )
        sealed = sealed or new_sealed_stream(sink.keyring, sealed_identity(key))

    def source() -> Iterator[bytes]:
        return guard(encoded(entry_tar_chunks(path, name), form, sealed))

    result = sink.write(key, source, sealed.metadata if sealed else None)
    if result.outcome is WriteOutcome.ALREADY_EXISTS:
        # An earlier attempt wrote it, or another worker raced us.
        _accept_existing(sink, key, form, path, name)
        return ArchivedEntry(key, uploaded=False, size=result.size)
    return ArchivedEntry(key, uploaded=True, size=result.size)
