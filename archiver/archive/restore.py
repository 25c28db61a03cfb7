"""Restoring a partition from the archive into ``DIR/<lsn>/`` directories.

One listing plans the whole restore. Objects are downloaded ahead in parallel, each checked
against the checksum recorded at upload (an object with none only when the operator accepts
it, with a warning), and extracted in LSN order, each into a temporary
directory that is renamed into place once complete. A journal, ``DIR/.restored``, names the
storage, partition and archive it restores, and records each finished entry: an interrupted
restore resumes where it stopped, and a restore of anything else into the same directory is
refused rather than mixed in.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from archiver.archive.catalog import Archive, opened_archive, partition_archives
from archiver.core.integrity import Verdict
from archiver.core.lsn import format_lsn
from archiver.core.object_stream import read_to_end
from archiver.core.tarball import extract_entry
from archiver.errors import (
    ChecksumMismatch,
    Discontinuity,
    ForeignDestination,
    NothingToRestore,
    RestoreError,
    UnverifiedObject,
)
from archiver.sinks import Sink

# A header naming what is restored, then one line per finished entry: its LSN name and the
# object it came from.
JOURNAL = ".restored"
JOURNAL_HEADER = "# wal-archiver restore"
# An entry being extracted: removed when a run that was killed is resumed.
_TEMPORARY = re.compile(r"\.tmp-[0-9a-z]{13}-[0-9a-f]{8}")
SPOOL_IN_MEMORY = 8 * 1024 * 1024


@dataclass(frozen=True)
class RestoreOrigin:
    """What a destination directory restores: one partition from one archive."""

    storage: str
    partition: int
    archive: str

    def header(self) -> str:
        return (
            f"{JOURNAL_HEADER} storage={self.storage} partition={self.partition} "
            f"archive={self.archive}"
        )

    def describe(self) -> str:
        return f"partition {self.storage}/{self.partition} from {self.archive}"

    @classmethod
    def parse(cls, header: str) -> RestoreOrigin | None:
        words = header.removeprefix(JOURNAL_HEADER).strip().split(" ", 2)
        fields = dict(word.partition("=")[::2] for word in words)
        try:
            return cls(fields["storage"], int(fields["partition"]), fields["archive"])
        except (KeyError, ValueError):
            return None


@dataclass
class RestoreSummary:
    entries: int = 0
    # Entries already restored by an earlier run, not fetched again.
    skipped: int = 0
    bytes: int = 0
    first_lsn: int | None = None
    last_lsn: int | None = None
    seconds: float = 0.0
    # Entries restored from objects with no checksum, accepted as they were.
    unverified: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "entries": self.entries,
            "unverified": self.unverified,
            "skipped": self.skipped,
            "bytes": self.bytes,
            "first_lsn": self.first_lsn,
            "last_lsn": self.last_lsn,
            "seconds": round(self.seconds, 3),
        }


def plan_restore(
    archives: list[Archive], from_lsn: int | None, to_lsn: int | None
) -> tuple[list[Archive], Discontinuity | None]:
    """The contiguous run of archives to restore, and where it breaks, if it does."""
    wanted = [
        a
        for a in archives
        if (from_lsn is None or a.lsn >= from_lsn) and (to_lsn is None or a.lsn <= to_lsn)
    ]
    plan: list[Archive] = []
    expected = from_lsn if from_lsn is not None else (wanted[0].lsn if wanted else None)
    for archive in wanted:
        if plan and archive.lsn == plan[-1].lsn:
            continue  # the same LSN under both names: verify reports it; restore takes one
        if archive.lsn != expected:
            return plan, Discontinuity(expected, archive.lsn)  # type: ignore[arg-type]
        plan.append(archive)
        expected = archive.lsn + 1
    if expected is not None and to_lsn is not None and expected <= to_lsn:
        return plan, Discontinuity(expected, None)
    if expected is None and (from_lsn is not None or to_lsn is not None):
        return plan, Discontinuity(from_lsn or 1, None)
    return plan, None


# Told of each object restored without a checksum to check it by: (key, why).
OnUnverified = Callable[[str, str], None]


@dataclass(frozen=True)
class _Prepared:
    directory: Path
    # Why the object could not be verified, if it could not.
    unverified: str | None


def _fetch_and_extract(
    sink: Sink, archive: Archive, destination: Path, accept_unverified: bool
) -> _Prepared:
    """Download, check and extract one entry into a temporary directory beside its final
    place; runs in the download threads, so extraction overlaps the downloads."""
    name = format_lsn(archive.lsn)
    temp = destination / f".tmp-{name}-{uuid.uuid4().hex[:8]}"
    with tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY) as spool:
        download = sink.download(archive.key, spool)
        integrity = download.integrity()
        if integrity.verdict is Verdict.CORRUPT:
            raise ChecksumMismatch(f"{archive.key} is corrupt: {integrity.detail}")
        unverified = None
        if integrity.verdict is Verdict.UNVERIFIABLE:
            if not accept_unverified:
                raise UnverifiedObject(
                    f"{archive.key} cannot be verified: {integrity.detail}. Refusing to trust "
                    "it; restore with --accept-unverified to take such objects as they are"
                )
            unverified = integrity.detail
        spool.seek(0)
        temp.mkdir()
        try:
            tar = opened_archive(sink, archive, spool, download)
            extract_entry(tar, name, temp)
            read_to_end(tar)
        except BaseException:
            shutil.rmtree(temp, ignore_errors=True)
            raise
    return _Prepared(temp, unverified)


def _ahead(
    sink: Sink, plan: list[Archive], destination: Path, parallel: int, accept_unverified: bool
) -> Iterator[tuple[Archive, Future[_Prepared]]]:
    """Entries fetched and extracted at most ``2 * parallel`` ahead, yielded in plan order.

    Whatever was prepared beyond a failure is removed, so the restored entries stay a prefix.
    """
    with ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="restore") as pool:
        window: list[tuple[Archive, Future[_Prepared]]] = []
        try:
            for archive in plan:
                job = pool.submit(_fetch_and_extract, sink, archive, destination, accept_unverified)
                window.append((archive, job))
                if len(window) >= 2 * parallel:
                    yield window.pop(0)
            while window:
                yield window.pop(0)
        finally:
            for _archive, future in window:
                future.cancel()
            for _archive, future in window:
                if not future.cancelled() and future.exception() is None:
                    shutil.rmtree(future.result().directory, ignore_errors=True)


def restore_partition(
    sink: Sink,
    storage: str,
    partition: int,
    destination: Path,
    from_lsn: int | None = None,
    to_lsn: int | None = None,
    parallel: int = 8,
    on_planned: Callable[[int], None] = lambda _total: None,
    on_entry: Callable[[Archive], None] = lambda _archive: None,
    accept_unverified: bool = False,
    on_unverified: OnUnverified = lambda _key, _why: None,
) -> RestoreSummary:
    """Restore, then raise Discontinuity if the archive broke off before the end. An object
    with no checksum stops it with UnverifiedObject, unless ``accept_unverified``: then
    ``on_unverified`` hears of each such object restored."""
    started = time.monotonic()
    summary = RestoreSummary()
    plan, discontinuity = plan_restore(
        partition_archives(sink, storage, partition), from_lsn, to_lsn
    )
    if not plan:
        raise discontinuity or NothingToRestore(
            f"nothing to restore: {sink.describe()} holds no archive of {storage}/{partition}"
        )
    try:
        destination.mkdir(parents=True, exist_ok=True)
        finished = _open_journal(destination, RestoreOrigin(storage, partition, sink.describe()))
    except OSError as exc:
        raise RestoreError(f"cannot restore into {destination}: {exc}") from exc
    todo = []
    for archive in plan:
        name = format_lsn(archive.lsn)
        if name in finished and (destination / name).is_dir():
            summary.skipped += 1
            on_entry(archive)
        else:
            todo.append(archive)
    on_planned(len(plan))
    if plan:
        summary.first_lsn, summary.last_lsn = plan[0].lsn, plan[-1].lsn
    for stale in destination.iterdir():  # left by a run of this restore that was killed
        if _TEMPORARY.fullmatch(stale.name):
            shutil.rmtree(stale, ignore_errors=True)
    try:
        with open(destination / JOURNAL, "a", encoding="utf-8") as journal:
            for archive, job in _ahead(sink, todo, destination, parallel, accept_unverified):
                prepared = job.result()
                directory = prepared.directory
                try:
                    _install(directory, archive, destination)
                except BaseException:
                    shutil.rmtree(directory, ignore_errors=True)
                    raise
                journal.write(f"{format_lsn(archive.lsn)} {archive.key}\n")
                journal.flush()
                if prepared.unverified is not None:
                    summary.unverified += 1
                    on_unverified(archive.key, prepared.unverified)
                summary.entries += 1
                summary.bytes += archive.size
                on_entry(archive)
    except OSError as exc:  # the destination's disk: full, read-only, gone
        raise RestoreError(
            f"writing into {destination} failed: {exc}; what was restored before stays, "
            "and a run again resumes"
        ) from exc
    summary.seconds = time.monotonic() - started
    if discontinuity is not None:
        raise discontinuity
    return summary


def _open_journal(destination: Path, origin: RestoreOrigin) -> set[str]:
    """The entries an earlier run of this same restore finished; starts the journal of a new
    one. Refuses a destination that holds anything else: another partition's or another
    archive's restore, or files that no restore put there."""
    path = destination / JOURNAL
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        others = sorted(p.name for p in destination.iterdir())
        if others:
            raise ForeignDestination(
                f"{destination} is not empty ({', '.join(others[:3])}"
                f"{', ...' if len(others) > 3 else ''}) and holds no restore journal; "
                "restore into an empty directory"
            ) from None
        with open(path, "x", encoding="utf-8") as journal:
            journal.write(origin.header() + "\n")
        return set()
    entries = lines[1:] if lines and lines[0].startswith(JOURNAL_HEADER) else lines
    recorded = _recorded_origin(lines[0] if entries is not lines else None, entries, origin)
    if recorded is not None:
        raise ForeignDestination(
            f"{destination} holds a restore of {recorded}, not of {origin.describe()}; "
            "restore into another directory"
        )
    return {line.split(" ", 1)[0] for line in entries if line}


def _recorded_origin(header: str | None, entries: list[str], origin: RestoreOrigin) -> str | None:
    """What the journal restores, when it is not ``origin``. A journal without a header
    (older releases) is judged by its entries' object names."""
    if header is not None:
        recorded = RestoreOrigin.parse(header)
        if recorded == origin:
            return None
        return header if recorded is None else recorded.describe()
    prefix = f"{origin.storage}/{origin.partition}/"
    foreign = sorted(
        key
        for line in entries
        if " " in line
        if not (key := line.split(" ", 1)[1]).startswith(prefix)
    )
    return f"objects such as {foreign[0]}" if foreign else None


def _install(prepared: Path, archive: Archive, destination: Path) -> None:
    final = destination / format_lsn(archive.lsn)
    if final.exists():
        shutil.rmtree(final)  # an unfinished earlier restore of this entry
    prepared.rename(final)
