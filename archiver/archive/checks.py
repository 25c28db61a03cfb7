"""Whether an archive object can be trusted: its bytes match the checksum recorded when it was
written (the SHA-256, or else an MD5), and it is a sound tar of exactly its entry. Every path
that accepts an object without a fresh tar of the entry to compare it with (reconcile, a worker
whose entry is gone, verify, restore) asks this first. An object with no checksum at all is
unverified: a worker never accepts one, and the operator's commands only when told to."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from archiver.archive.catalog import Archive, opened_archive
from archiver.core.integrity import Verdict
from archiver.core.lsn import format_lsn
from archiver.core.object_stream import read_to_end
from archiver.core.tarball import read_entry_tar
from archiver.errors import DecryptionFailed, KeyUnavailable, SinkError, UnsafeArchive
from archiver.sinks import Sink


@dataclass(frozen=True)
class ObjectCheck:
    """What reading one archive object whole found."""

    # What is wrong with it: corrupt, unreadable, not a sound tar of its entry.
    problem: str | None = None
    # Why its bytes could not be checked against a recorded checksum.
    unverified: str | None = None
    # Why it could not be opened to check its content: sealed with a key not given.
    unopened: str | None = None

    def refusal(self, accept_unverified: bool = False) -> str | None:
        """Why the object may not be trusted, or None."""
        if self.problem is not None:
            return self.problem
        if self.unopened is not None:
            return self.unopened
        if self.unverified is not None and not accept_unverified:
            return f"cannot be verified: {self.unverified}"
        return None


def check_archive(sink: Sink, archive: Archive) -> ObjectCheck:
    """Checksum, then decryption and tar structure (checked also where there is no checksum);
    the plaintext never reaches the disk.

    Raises SinkError when the store fails: that says nothing about the object."""
    with tempfile.SpooledTemporaryFile(max_size=8 * 1024 * 1024) as spool:
        download = sink.download(archive.key, spool)
        integrity = download.integrity()
        if integrity.verdict is Verdict.CORRUPT:
            return ObjectCheck(problem=integrity.detail)
        unverified = integrity.detail if integrity.verdict is Verdict.UNVERIFIABLE else None
        spool.seek(0)
        try:
            tar = opened_archive(sink, archive, spool, download)
            read_entry_tar(tar, format_lsn(archive.lsn))
            read_to_end(tar)
        except KeyUnavailable as exc:
            return ObjectCheck(unopened=str(exc), unverified=unverified)
        except DecryptionFailed as exc:
            return ObjectCheck(f"does not decrypt: {exc}", unverified)
        except UnsafeArchive as exc:
            return ObjectCheck(f"bad tar: {exc}", unverified)
        except Exception as exc:  # a broken zstd frame, for one
            return ObjectCheck(f"bad tar: {type(exc).__name__}: {exc}", unverified)
    return ObjectCheck(unverified=unverified)


def archive_problem(sink: Sink, archive: Archive) -> str | None:
    """Why an object may not be trusted on its own, an unverified one included, or None."""
    return check_archive(sink, archive).refusal()


def readable_check(sink: Sink, archive: Archive) -> ObjectCheck:
    """``check_archive``, with a store failure reported as the object's problem."""
    try:
        return check_archive(sink, archive)
    except SinkError as exc:
        return ObjectCheck(problem=f"unreadable: {exc}")


def checked_in_order(
    sink: Sink, archives: list[Archive], parallel: int
) -> Iterator[tuple[Archive, ObjectCheck]]:
    """(archive, what its check found) in the order given, checked up to ``2 * parallel``
    ahead; a caller that stops early leaves no downloads running."""
    with ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="check") as pool:
        window: list[tuple[Archive, Future[ObjectCheck]]] = []
        try:
            for archive in archives:
                window.append((archive, pool.submit(readable_check, sink, archive)))
                if len(window) >= 2 * parallel:
                    checked, future = window.pop(0)
                    yield checked, future.result()
            while window:
                checked, future = window.pop(0)
                yield checked, future.result()
        finally:
            for _archive, pending in window:
                pending.cancel()
