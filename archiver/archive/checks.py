"""Whether an archive object can be trusted: its bytes match the SHA-256 recorded when it was
written, and it is a sound tar of exactly its entry. Every path that accepts an object without
a fresh tar of the entry to compare it with (reconcile, a worker whose entry is gone, verify,
restore) asks this first."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor

from archiver.archive.catalog import Archive
from archiver.core.compression import decoded
from archiver.core.lsn import format_lsn
from archiver.core.tarball import read_entry_tar
from archiver.errors import SinkError, UnsafeArchive
from archiver.sinks import Sink


def archive_problem(sink: Sink, archive: Archive) -> str | None:
    """What is wrong with one archive object, or None: checksum, then tar structure.

    Raises SinkError when the store fails: that says nothing about the object."""
    with tempfile.SpooledTemporaryFile(max_size=8 * 1024 * 1024) as spool:
        download = sink.download(archive.key, spool)
        if download.recorded_sha256 is None:
            return "no recorded SHA-256"
        if download.sha256 != download.recorded_sha256:
            return f"SHA-256 {download.sha256} does not match recorded {download.recorded_sha256}"
        spool.seek(0)
        try:
            read_entry_tar(decoded(spool, archive.compression), format_lsn(archive.lsn))  # type: ignore[arg-type]
        except UnsafeArchive as exc:
            return f"bad tar: {exc}"
        except Exception as exc:  # a broken zstd frame, for one
            return f"bad tar: {type(exc).__name__}: {exc}"
    return None


def readable_problem(sink: Sink, archive: Archive) -> str | None:
    """``archive_problem``, with a store failure reported as the object's problem."""
    try:
        return archive_problem(sink, archive)
    except SinkError as exc:
        return f"unreadable: {exc}"


def checked_in_order(
    sink: Sink, archives: list[Archive], parallel: int
) -> Iterator[tuple[Archive, str | None]]:
    """(archive, problem) in the order given, checked up to ``2 * parallel`` ahead; a caller
    that stops early leaves no downloads running."""
    with ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="check") as pool:
        window: list[tuple[Archive, Future[str | None]]] = []
        try:
            for archive in archives:
                window.append((archive, pool.submit(readable_problem, sink, archive)))
                if len(window) >= 2 * parallel:
                    checked, future = window.pop(0)
                    yield checked, future.result()
            while window:
                checked, future = window.pop(0)
                yield checked, future.result()
        finally:
            for _archive, pending in window:
                pending.cancel()
