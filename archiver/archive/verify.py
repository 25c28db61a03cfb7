"""Checking the archive before it is needed: ranges, gaps, corrupt and unverifiable objects,
strays, leftovers."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from archiver.archive.catalog import Archive
from archiver.archive.checks import ObjectCheck, readable_check
from archiver.archive.reconcile import holes_in, storages_in
from archiver.core.object_names import parse_archive_name, parse_partition, partition_prefix
from archiver.core.partition import Gap
from archiver.errors import InvalidName
from archiver.sinks import Sink
from archiver.store.records import PartitionRecord


@dataclass
class PartitionReport:
    storage: str
    partition: int
    ranges: list[tuple[int, int]] = field(default_factory=list)
    gaps: list[Gap] = field(default_factory=list)
    # (key, what is wrong) for objects that fail their checksum or are not a sound entry tar
    bad: list[tuple[str, str]] = field(default_factory=list)
    # (key, why) for sound tars with no checksum to check their bytes against
    unverified: list[tuple[str, str]] = field(default_factory=list)
    # (key, why) for objects sealed with a key not given: neither passed nor called corrupt
    unopened: list[tuple[str, str]] = field(default_factory=list)
    # LSNs stored under two names (.tar and .tar.zst, say)
    duplicates: list[int] = field(default_factory=list)
    strays: list[str] = field(default_factory=list)
    leftovers: list[str] = field(default_factory=list)
    archives: int = 0
    bytes: int = 0
    # Whether the partition's state was read, to tell recorded gaps from lost objects.
    state_checked: bool = False
    # Gaps the state does not account for: objects lost from the archive.
    unrecorded: list[Gap] = field(default_factory=list)

    def problems(self, ignore_gaps: bool = False, accept_unverified: bool = False) -> int:
        """With ``ignore_gaps``, gaps the partition's state records are not problems; gaps it
        does not record (lost objects) still are, when the state was checked. With
        ``accept_unverified``, objects with no checksum are not problems either."""
        gaps = len(self.unrecorded) if ignore_gaps else len(self.gaps)
        unverified = 0 if accept_unverified else len(self.unverified)
        found = len(self.bad) + len(self.unopened) + len(self.duplicates)
        found += len(self.strays) + len(self.leftovers)
        return gaps + unverified + found

    def check_gaps_against(self, record: PartitionRecord | None) -> None:
        """Sort the archive's gaps into those the state records (a producer's gap, a skip-to,
        a reconcile) and those it does not. With no record, or older gaps no longer kept,
        nothing can be told apart and nothing is flagged."""
        if record is None:
            return
        recorded = [g.gap for g in record.recent_gaps]
        if record.gaps_total > len(recorded):
            return
        self.state_checked = True
        self.unrecorded = [g for g in self.gaps if not _covered(g, recorded)]

    def to_json(self) -> dict[str, Any]:
        return {
            "storage": self.storage,
            "partition": self.partition,
            "archives": self.archives,
            "bytes": self.bytes,
            "ranges": [{"first": a, "last": b} for a, b in self.ranges],
            "gaps": [
                {
                    "expected": g.expected,
                    "actual": g.actual,
                    "recorded": (g not in self.unrecorded) if self.state_checked else None,
                }
                for g in self.gaps
            ],
            "state_checked": self.state_checked,
            "bad": [{"key": k, "problem": p} for k, p in self.bad],
            "unverified": [{"key": k, "reason": r} for k, r in self.unverified],
            "unopened": [{"key": k, "reason": r} for k, r in self.unopened],
            "duplicates": self.duplicates,
            "strays": self.strays,
            "leftovers": self.leftovers,
        }


def _covered(hole: Gap, recorded: list[Gap]) -> bool:
    """Every LSN of ``hole`` lies in one of the ``recorded`` gaps (which may be split)."""
    lsn = hole.expected
    for gap in sorted(recorded, key=lambda g: g.expected):
        if gap.expected <= lsn < gap.actual:
            lsn = gap.actual
        if lsn >= hole.actual:
            return True
    return False


def ranges_of(lsns: list[int]) -> list[tuple[int, int]]:
    ranges: list[tuple[int, int]] = []
    for lsn in lsns:
        if ranges and lsn == ranges[-1][1] + 1:
            ranges[-1] = (ranges[-1][0], lsn)
        elif not ranges or lsn != ranges[-1][1]:
            ranges.append((lsn, lsn))
    return ranges


def verify_partition(
    sink: Sink,
    storage: str,
    partition: int,
    parallel: int = 8,
    on_archive: Callable[[], None] = lambda: None,
) -> PartitionReport:
    report = PartitionReport(storage, partition)
    archives: list[Archive] = []
    for obj in sink.list(partition_prefix(storage, partition)):
        parsed = parse_archive_name(obj.key)
        if parsed is not None:
            archives.append(
                Archive(parsed.lsn, obj.key, obj.size, parsed.compression, parsed.encrypted)
            )
        else:
            report.strays.append(obj.key)
    archives.sort(key=lambda a: (a.lsn, a.key))
    lsns = [a.lsn for a in archives]
    report.duplicates = sorted({a for a, b in itertools.pairwise(lsns) if a == b})
    unique = sorted(set(lsns))
    report.ranges = ranges_of(unique)
    report.gaps = holes_in(unique)
    report.archives = len(archives)
    report.bytes = sum(a.size for a in archives)
    report.leftovers = list(sink.leftovers(partition_prefix(storage, partition)))

    def check(archive: Archive) -> tuple[Archive, ObjectCheck]:
        found = readable_check(sink, archive)
        on_archive()
        return archive, found

    with ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="verify") as pool:
        for archive, found in pool.map(check, archives):
            if found.problem is not None:
                report.bad.append((archive.key, found.problem))
            if found.unverified is not None:
                report.unverified.append((archive.key, found.unverified))
            if found.unopened is not None:
                report.unopened.append((archive.key, found.unopened))
    return report


def partitions_to_verify(
    sink: Sink, storage: str | None, partition: int | None
) -> Iterator[tuple[str, int | None, str | None]]:
    """(storage, partition, stray) triples: a partition to verify, or a stray directory."""
    storages = [storage] if storage else list(storages_in(sink))
    for name in storages:
        if partition is not None:
            yield name, partition, None
            continue
        for directory in sink.list_directories(f"{name}/"):
            try:
                yield name, parse_partition(directory), None
            except InvalidName:
                yield name, None, f"{name}/{directory}/"
