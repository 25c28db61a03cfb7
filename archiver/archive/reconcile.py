"""Rebuilding partition state from the archive, for when Redis state was lost.

Each partition moves to just past its newest archived LSN, which is acknowledged as done; holes
below it become recorded gaps. Acknowledging lets the producer delete its entries, so every
object the partition moves past is downloaded and verified first (its recorded checksum, a
sound tar of exactly its entry): reconcile stops before the first one that is not, and says
why. An object with no checksum at all (written elsewhere) stops it too, unless the operator
accepts such objects, each one named. This is also how an archive the Go original wrote is
adopted: nothing in it is uploaded again.

An object beyond what was ever acknowledged may be someone else's (another fleet on the same
prefix, a producer that started its numbers over), and a hole there may be an entry still
waiting on the producer's disk. So past that point reconcile also needs the producer's side,
read from the storage root as a worker host would: an entry still on disk must be the one in
the object, and a hole must have no entry on disk. Where this host cannot read the storage,
it stops there. State is never moved backwards, and a conflicted, stopped or paused partition
is left for an operator, so running it on healthy state changes nothing.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from archiver.archive.catalog import Archive, partition_archives
from archiver.archive.checks import checked_in_order
from archiver.archive.entry_match import holds_entry
from archiver.core.object_names import PartitionId, check_storage, parse_partition
from archiver.core.partition import Gap, VerifiedRun
from archiver.core.wal_layout import entries_on_disk, entry_path, wal_dir
from archiver.errors import EntryError, InvalidName, SinkError
from archiver.sinks import Sink
from archiver.store.state_store import RedisStateStore

REFUSALS = {
    "conflicted": "the partition is conflicted: an operator must look at it first "
    "(archiver inspect partition; then archiver admin requeue)",
    "stopped": "the partition is stopped on an entry that failed: an operator must look at it "
    "first (archiver inspect partition; then archiver admin requeue)",
    "moved": "the partition's position moved below the verified objects meanwhile; run "
    "reconcile again",
    "paused": "the partition is paused by an operator: resume it first (archiver admin resume)",
}


@dataclass(frozen=True)
class ProducerView:
    """A partition's entries on the producer's disk, as this host sees them."""

    partition: int
    root: Path | None  # the storage root; None when this host cannot read the storage
    present: frozenset[int] = frozenset()


def producer_view(storage_root: Path | None, partition: int) -> ProducerView:
    """Readable only where the partition's WAL directory is there: a storage root alone may
    be the empty mount point of a volume that is not mounted."""
    if storage_root is None:
        return ProducerView(partition, None)
    try:
        if not wal_dir(storage_root, partition).is_dir():
            return ProducerView(partition, None)
        present = frozenset(entries_on_disk(storage_root, partition))
    except OSError:
        return ProducerView(partition, None)
    return ProducerView(partition, storage_root, present)


@dataclass(frozen=True)
class RefusedObject:
    """An archive object reconcile would not move past."""

    lsn: int
    key: str
    reason: str


@dataclass(frozen=True)
class ReconciledPartition:
    storage: str
    partition: int
    archived: int
    last_archived: int | None
    holes: list[Gap] = field(default_factory=list)
    changed: bool = False
    previous_next_lsn: int | None = None
    # Where the partition is (or, in a dry run, would be) afterwards.
    next_lsn: int | None = None
    # Objects downloaded and verified.
    verified: int = 0
    # The first object that did not verify: the partition was not moved past it.
    refused_object: RefusedObject | None = None
    # (key, why) of objects with no checksum that were accepted as they are.
    unverified: tuple[tuple[str, str], ...] = ()
    # Why the partition was left alone as a whole, if it was.
    refused: str | None = None

    def to_json(self) -> dict[str, Any]:
        refused_object = self.refused_object
        return {
            "storage": self.storage,
            "partition": self.partition,
            "archived": self.archived,
            "last_archived": self.last_archived,
            "holes": [{"expected": h.expected, "actual": h.actual} for h in self.holes],
            "changed": self.changed,
            "previous_next_lsn": self.previous_next_lsn,
            "next_lsn": self.next_lsn,
            "verified": self.verified,
            "unverified": [{"key": k, "reason": r} for k, r in self.unverified],
            "refused": self.refused,
            "refused_object": None
            if refused_object is None
            else {
                "lsn": refused_object.lsn,
                "key": refused_object.key,
                "reason": refused_object.reason,
            },
        }

    @property
    def problem(self) -> str | None:
        """What an operator has to look at, in one line, or None."""
        if self.refused is not None:
            return self.refused
        if self.refused_object is not None:
            o = self.refused_object
            return f"stopped before LSN {o.lsn} ({o.key}): {o.reason}"
        return None


def holes_in(lsns: list[int]) -> list[Gap]:
    """Missing runs between sorted LSNs, as gaps."""
    return [Gap(a + 1, b) for a, b in itertools.pairwise(lsns) if b > a + 1]


def storages_in(sink: Sink) -> Iterator[str]:
    for name in sink.list_directories(""):
        try:
            yield check_storage(name)
        except InvalidName:
            continue


def partitions_in(sink: Sink, storage: str) -> Iterator[int]:
    for name in sink.list_directories(f"{storage}/"):
        try:
            yield parse_partition(name)
        except InvalidName:
            continue


def unacknowledged_problem(
    sink: Sink,
    archives: list[Archive],
    verified: list[int],
    start: int,
    acknowledged: int,
    announced: int,
    view: ProducerView,
) -> RefusedObject | None:
    """The lowest LSN from ``start`` through the last verified one that the partition may not
    be moved past, as it was never acknowledged (it is above ``acknowledged``):
    - anything, when this host cannot read the partition's entries;
    - a hole, or an object that is not the entry, where the entry is still on disk;
    - an object whose entry is not on disk, unless the producer is known to have written
      and deleted it: it deletes from the oldest, so below its oldest entry still there, or
      with none there, up to the newest it announced (``announced``). Above that, the entry
      may not be written yet, and the object cannot be told from someone else's."""
    low = max(start, acknowledged + 1)
    if not verified or low > verified[-1]:
        return None
    keys = {a.lsn: a.key for a in archives}
    if view.root is None:
        return RefusedObject(
            low,
            keys.get(low, ""),
            f"LSN {low} was never acknowledged (acknowledged through {acknowledged or 'none'}), "
            "and this host cannot read the partition's entries to compare: run reconcile where "
            "ARCHIVER_STORAGES names the storage and its volume is mounted",
        )
    first_unwritten = _first_unwritten_object(verified, low, announced, view, keys)
    # Only entries below that one can refuse an LSN lower still.
    end = verified[-1] + 1 if first_unwritten is None else first_unwritten.lsn
    objects = set(verified)
    for lsn in sorted(lsn for lsn in view.present if low <= lsn < end):
        try:
            path = entry_path(view.root, view.partition, lsn)
        except EntryError as exc:
            return RefusedObject(lsn, "", f"entry {lsn} cannot be read: {exc}")
        if lsn not in objects:
            return RefusedObject(
                lsn, str(path), f"entry {lsn} is still on disk and was never archived"
            )
        mismatch = _mismatch(sink, [a for a in archives if a.lsn == lsn], path)
        if mismatch is not None:
            return mismatch
    return first_unwritten


def _first_unwritten_object(
    verified: list[int], low: int, announced: int, view: ProducerView, keys: dict[int, str]
) -> RefusedObject | None:
    """The first object from ``low`` whose entry is not on disk and is not known to have been
    written and deleted (see ``unacknowledged_problem``)."""
    oldest = min(view.present, default=None)
    deleted_below = announced + 1 if oldest is None else oldest
    for lsn in verified:
        if lsn >= low and lsn not in view.present and lsn >= deleted_below:
            return RefusedObject(
                lsn,
                keys[lsn],
                f"LSN {lsn} was never acknowledged and its entry is not on disk, though the "
                f"producer is not known to have written it (oldest entry on disk: "
                f"{oldest or 'none'}, newest announced: {announced or 'none'}): it cannot be "
                "told from someone else's archive",
            )
    return None


def _mismatch(sink: Sink, archives: list[Archive], path: Path) -> RefusedObject | None:
    """Why one of an LSN's objects is not the entry at ``path``, if one is not."""
    for archive in archives:
        try:
            same = holds_entry(sink, archive, path)
        except (EntryError, OSError, SinkError) as exc:
            return RefusedObject(archive.lsn, archive.key, f"cannot compare with the entry: {exc}")
        if not same:
            return RefusedObject(
                archive.lsn,
                archive.key,
                f"holds something other than entry {archive.lsn} on disk, which was never "
                "acknowledged: someone else's archive",
            )
    return None


def reconcile_partition(
    store: RedisStateStore,
    sink: Sink,
    storage: str,
    partition: int,
    dry_run: bool = False,
    parallel: int = 8,
    on_checked: Callable[[], None] = lambda: None,
    acknowledged: int | None = None,
    storage_root: Path | None = None,
    accept_unverified: bool = False,
) -> ReconciledPartition:
    """``acknowledged`` is the newest LSN of the partition ever acknowledged to the producer
    (it may be further than the state says, after a rollback); ``storage_root`` where this
    host reads the partition's entries, if it can; ``accept_unverified`` moves past objects
    with no checksum (a sound tar of their entry all the same), listing them."""
    archives = partition_archives(sink, storage, partition)
    lsns = sorted({a.lsn for a in archives})
    if not lsns:
        return ReconciledPartition(storage, partition, 0, None)
    record = store.records.load(PartitionId(storage, partition))
    previous = None if record is None else record.state.next_lsn
    result = ReconciledPartition(
        storage,
        partition,
        archived=len(lsns),
        last_archived=lsns[-1],
        previous_next_lsn=previous,
        next_lsn=previous,
    )
    if record is not None and (
        record.state.conflicted or record.state.stopped or record.state.paused
    ):
        state = record.state
        refusal = "conflicted" if state.conflicted else "stopped" if state.stopped else "paused"
        return replace(result, refused=REFUSALS[refusal])
    # Without state every object is checked, as if from LSN 1: none lies below the first.
    checked_from = 1 if previous is None else previous
    verified: list[int] = []
    unverified: list[tuple[int, str, str]] = []
    refused_object: RefusedObject | None = None
    for archive, found in checked_in_order(
        sink, [a for a in archives if a.lsn >= checked_from], parallel
    ):
        on_checked()
        problem = found.refusal(accept_unverified)
        if problem is not None:
            refused_object = RefusedObject(archive.lsn, archive.key, problem)
            break
        if found.unverified is not None:
            unverified.append((archive.lsn, archive.key, found.unverified))
        if not verified or verified[-1] != archive.lsn:
            verified.append(archive.lsn)
    if verified:
        in_state = None if record is None else record.state.acknowledged_lsn
        known = max(acknowledged or 0, in_state or 0)
        announced = 0 if record is None else record.state.high_water_mark
        # Without state, acknowledging the run acknowledges every LSN below it as well.
        start = 1 if previous is None else previous
        view = producer_view(storage_root, partition)
        beyond = unacknowledged_problem(sink, archives, verified, start, known, announced, view)
        if beyond is not None and (refused_object is None or beyond.lsn < refused_object.lsn):
            refused_object = beyond
    if refused_object is not None:
        # Both names of one LSN must verify; the run ends below it.
        verified = [lsn for lsn in verified if lsn < refused_object.lsn]
        unverified = [u for u in unverified if u[0] < refused_object.lsn]
    result = replace(
        result,
        verified=len(verified),
        refused_object=refused_object,
        unverified=tuple((key, why) for _lsn, key, why in unverified),
    )
    if not verified:
        return result
    # The hole between the old position and the first verified object (a prune, a rollback).
    behind = previous is not None and previous < verified[0]
    leading = [Gap(previous, verified[0])] if behind and previous is not None else []
    run = VerifiedRun(verified[0], verified[-1], checked_from, tuple(holes_in(verified)))
    holes = leading + list(run.holes)
    if dry_run:
        return replace(result, holes=holes, changed=True, next_lsn=run.last + 1)
    applied = store.transitions.reconcile(PartitionId(storage, partition), run)
    if applied.refused is not None:
        return replace(result, refused=REFUSALS[applied.refused])
    if not applied.changed:  # the partition got there on its own meanwhile
        previous = applied.previous_next_lsn
        return replace(result, previous_next_lsn=previous, next_lsn=previous)
    return replace(
        result,
        holes=holes,
        changed=True,
        previous_next_lsn=applied.previous_next_lsn,
        next_lsn=run.last + 1,
    )
