"""Copying the primary's archive objects to mirrors (``ARCHIVER_MIRROR_URLS``).

A mirror gets the primary's bytes and metadata as they are (an encrypted object keeps its
wrapped data key), after they pass the checksum recorded for them. Mirrors are write-once like
the primary: an object already at the name is compared, never replaced, and one with other
content stops that mirror's partition (``MirrorConflict``). A mirror that is down only falls
behind: the copier tries again with backoff and catches up from the primary.
"""

from __future__ import annotations

import logging
import tempfile
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import IO, Any

from archiver.archive.catalog import Archive, partition_archives
from archiver.archive.entry_match import stored_content
from archiver.archive.scrub import Stop
from archiver.core.integrity import Verdict
from archiver.core.object_names import PartitionId, sealed_identity
from archiver.errors import (
    ArchiverError,
    DecryptionFailed,
    MirrorConflict,
    MirrorSourceUnusable,
    SinkError,
    UndecodableArchive,
)
from archiver.observability import metrics
from archiver.sinks import Download, Sink, WriteOutcome
from archiver.sinks.attributes import CHECKSUM_METADATA
from archiver.sinks.base import hashed_download

log = logging.getLogger("archiver.mirror")

SPOOL_IN_MEMORY = 8 * 1024 * 1024
READ_SIZE = 1024 * 1024


def _replayed(spool: IO[bytes]) -> Iterator[bytes]:
    spool.seek(0)
    while chunk := spool.read(READ_SIZE):
        yield chunk


def mirror_object(primary: Sink, mirror: Sink, archive: Archive) -> bool:
    """Copy one archive object to ``mirror``; True if it was written, False if the mirror held
    it already. Raises MirrorConflict, MirrorSourceUnusable or SinkError."""
    with tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY) as spool:
        download = primary.download(archive.key, spool)
        integrity = download.integrity()
        if integrity.verdict is Verdict.CORRUPT:
            raise MirrorSourceUnusable(
                f"{archive.key} on the primary fails its checksum ({integrity.detail}); not copied"
            )
        metadata: Mapping[str, str] = {
            k: v for k, v in download.metadata.items() if k != CHECKSUM_METADATA
        }
        result = mirror.write(archive.key, lambda: _replayed(spool), metadata)
        if result.outcome is WriteOutcome.CREATED:
            if result.sha256 != download.sha256:
                raise SinkError(f"{archive.key} changed while it was copied to the mirror")
            mirror.confirm_archived(archive.key, None)
            return True
    _compare_existing(primary, mirror, archive, download.sha256)
    return False


def _compare_existing(primary: Sink, mirror: Sink, archive: Archive, sha256: str) -> None:
    """The mirror holds an object at the name: the same bytes, or the same entry (sealed with
    another data key, compressed by another zstd), or a conflict."""
    there = hashed_download(mirror, archive.key)
    if there.sha256 == sha256:
        _check_record(mirror, archive, there)
        mirror.confirm_archived(archive.key, there)
        return
    _download, ours = stored_content(primary, archive.key, archive.form)
    try:
        _download, theirs = stored_content(mirror, archive.key, archive.form)
    except UndecodableArchive as exc:  # DecryptionFailed too; a missing key is not a conflict
        raise MirrorConflict(f"{archive.key} on the mirror does not open ({exc})") from exc
    if theirs != ours:
        raise MirrorConflict(
            f"{archive.key} is on the mirror with other content (tar SHA-256 {theirs}, the "
            f"primary's {ours}); it is not replaced"
        )
    mirror.confirm_archived(archive.key, None)


def _check_record(mirror: Sink, archive: Archive, there: Download) -> None:
    """The mirror's object has the primary's bytes: its record must describe them, and a
    sealed one's metadata must open, or the object could not be trusted or read later (its
    attributes lost in a crash, say). It is not replaced: a conflict, for an operator."""
    if there.integrity().verdict is Verdict.CORRUPT:
        raise MirrorConflict(
            f"{archive.key} is on the mirror with the primary's bytes, but its record does not "
            f"match them ({there.integrity().detail}); it is not replaced"
        )
    if archive.encrypted:
        try:
            mirror.keyring.open_key(there.metadata, sealed_identity(archive.key))
        except DecryptionFailed as exc:
            raise MirrorConflict(
                f"{archive.key} is on the mirror with the primary's bytes, but its metadata "
                f"does not open ({exc}); it is not replaced"
            ) from exc


@dataclass
class CopyPass:
    """What one pass over the partitions did, for each mirror."""

    copied: dict[str, int] = field(default_factory=dict)
    failed: dict[str, int] = field(default_factory=dict)
    conflicts: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"copied": self.copied, "failed": self.failed, "conflicts": self.conflicts}


class MirrorCopier:
    """Catches mirrors up with the primary, partition by partition, up to each partition's
    acknowledged LSN. Any number may run (the leading scheduler, ``archiver mirror``
    processes): a lease per mirror and partition keeps them off each other's work."""

    def __init__(
        self,
        primary: Sink,
        mirrors: Mapping[str, Sink],
        store: Any,
        lease_ms: int,
        retry_delay_ms: Any,
        batch: int = 200,
        publish_held: Callable[[PartitionId, int], None] | None = None,
    ) -> None:
        self.primary = primary
        self.mirrors = dict(mirrors)
        self.store = store
        self.lease_ms = lease_ms
        # attempts -> ms to wait before the next try
        self.retry_delay_ms = retry_delay_ms
        self.batch = batch
        # With ARCHIVER_ACK_POLICY=all: told of each partition's acknowledged LSN once the
        # mirrors were looked at, to publish what they hold and was held back for them.
        self.publish_held = publish_held
        self._probed: set[str] = set()

    def run_pass(self, stop: Stop | None = None) -> CopyPass:
        done = CopyPass(
            {n: 0 for n in self.mirrors}, {n: 0 for n in self.mirrors}, {n: 0 for n in self.mirrors}
        )
        cursor = 0
        while True:
            cursor, pids = self.store.records.scan_partition_ids(cursor, 500)
            for pid in pids:
                if stop is not None and stop.is_set():
                    return done
                self._partition(pid, done)
            if cursor == 0:
                return done

    def _partition(self, pid: PartitionId, done: CopyPass) -> None:
        acked = self.store.records.acknowledged(pid)
        if acked is None:
            return
        for name, sink in self.mirrors.items():
            progress = self.store.mirrors.load(name, pid)
            if progress.conflict is not None or (progress.through or 0) >= acked:
                continue
            self.catch_up(name, sink, pid, acked, done)
        if self.publish_held is not None:
            self.publish_held(pid, acked)

    def catch_up(self, name: str, sink: Sink, pid: PartitionId, acked: int, done: CopyPass) -> None:
        token = uuid.uuid4().hex
        mirrors = self.store.mirrors
        if not mirrors.claim(name, pid, token, self.lease_ms):
            return
        released = False
        try:
            if name not in self._probed:
                # A store that does not refuse a second create could let a copy replace an
                # archive: nothing is copied to it (WriteOnceUnsupported, retried and alerted).
                sink.probe()
                self._probed.add(name)
            through = mirrors.load(name, pid).through or 0
            listed = partition_archives(self.primary, pid.storage, pid.partition)
            todo = [a for a in listed if through < a.lsn <= acked]
            for archive in todo[: self.batch]:
                if mirror_object(self.primary, sink, archive):
                    done.copied[name] += 1
                    metrics.MIRROR_COPIED.labels(name).inc()
                if not mirrors.advance(name, pid, token, archive.lsn, self.lease_ms):
                    released = True  # another copier took over
                    return
            if len(todo) <= self.batch and todo and todo[-1].lsn == acked:
                # Done through the acknowledged LSN, whose archive the listing showed: an
                # empty or partial listing (a bucket root not mounted here) moves nothing.
                mirrors.advance(name, pid, token, acked, self.lease_ms)
        except MirrorConflict as exc:
            log.error(
                "mirror conflict; the mirror's partition stops mirror=%s partition=%s: %s",
                name,
                pid,
                exc,
            )
            mirrors.conflict(name, pid, token, str(exc))
            done.conflicts[name] += 1
            released = True
        except (SinkError, ArchiverError) as exc:
            attempts = mirrors.load(name, pid).attempts + 1
            delay = self.retry_delay_ms(attempts)
            log.warning(
                "mirror copy failed; retrying in %.1fs mirror=%s partition=%s: %s",
                delay / 1000,
                name,
                pid,
                exc,
            )
            mirrors.fail(name, pid, token, str(exc), delay)
            done.failed[name] += 1
            metrics.MIRROR_FAILURES.labels(name).inc()
            released = True
        finally:
            if not released:
                mirrors.release(name, pid, token)
