"""Fleet-wide figures folded from partition records, one pass, in bounded memory.

The scheduler's state metrics and ``archiver inspect summary`` show the same numbers, so both
come from here; ``archiver inspect partitions`` filters and ranks with the same definitions.
"""

from __future__ import annotations

import enum
import heapq
import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from archiver.core.partition import PartitionCondition
from archiver.store.records import PartitionRecord

RECENT_ERRORS = 10


@dataclass
class StorageOverview:
    partitions: dict[PartitionCondition, int] = field(
        default_factory=lambda: dict.fromkeys(PartitionCondition, 0)
    )
    backlog: int = 0
    # When the oldest entry not yet archived in this storage was announced (server clock).
    oldest_unarchived_ms: int | None = None
    gaps_total: int = 0

    def oldest_age_seconds(self, now_ms: int) -> float:
        if self.oldest_unarchived_ms is None:
            return 0.0
        return max(0, now_ms - self.oldest_unarchived_ms) / 1000


@dataclass(frozen=True)
class ErrorNote:
    at_ms: int
    storage: str
    partition: int
    lsn: int
    error: str


@dataclass
class Overview:
    storages: dict[str, StorageOverview] = field(default_factory=dict)
    # The newest last errors of partitions still failing, newest first.
    recent_errors: list[ErrorNote] = field(default_factory=list)

    def add(self, record: PartitionRecord) -> None:
        state = record.state
        totals = self.storages.setdefault(record.storage, StorageOverview())
        totals.partitions[state.condition] += 1
        totals.backlog += state.backlog
        totals.gaps_total += record.gaps_total
        oldest = record.oldest_unarchived_ms if state.has_work else None
        if oldest is not None and (
            totals.oldest_unarchived_ms is None or oldest < totals.oldest_unarchived_ms
        ):
            totals.oldest_unarchived_ms = oldest
        if state.last_error:
            note = ErrorNote(
                record.error_ms or 0,
                record.storage,
                record.partition,
                state.next_lsn,
                state.last_error,
            )
            self.recent_errors.append(note)
            if len(self.recent_errors) > 2 * RECENT_ERRORS:
                self._trim_errors()

    def _trim_errors(self) -> None:
        self.recent_errors = heapq.nlargest(RECENT_ERRORS, self.recent_errors, key=_error_time)

    def finish(self) -> Overview:
        self._trim_errors()
        return self

    def total(self) -> StorageOverview:
        """All storages together."""
        total = StorageOverview()
        for totals in self.storages.values():
            for condition, count in totals.partitions.items():
                total.partitions[condition] += count
            total.backlog += totals.backlog
            total.gaps_total += totals.gaps_total
            if totals.oldest_unarchived_ms is not None and (
                total.oldest_unarchived_ms is None
                or totals.oldest_unarchived_ms < total.oldest_unarchived_ms
            ):
                total.oldest_unarchived_ms = totals.oldest_unarchived_ms
        return total


def _error_time(note: ErrorNote) -> int:
    return note.at_ms


def summarize(records: Iterable[PartitionRecord]) -> Overview:
    overview = Overview()
    for record in records:
        overview.add(record)
    return overview.finish()


class SortKey(enum.StrEnum):
    BACKLOG = "backlog"
    AGE = "age"


@dataclass(frozen=True)
class PartitionFilter:
    """Which partitions ``archiver inspect partitions`` shows."""

    storage: str | None = None
    condition: PartitionCondition | None = None
    # Backlog of at least this many entries.
    lagging: int | None = None
    # Work waiting and no progress for at least this long.
    stuck_seconds: float | None = None

    def matches(self, record: PartitionRecord, now_ms: int) -> bool:
        state = record.state
        if self.storage is not None and record.storage != self.storage:
            return False
        if self.condition is not None and state.condition is not self.condition:
            return False
        if self.lagging is not None and state.backlog < self.lagging:
            return False
        if self.stuck_seconds is not None:
            since = record.waiting_since_ms()
            if since is None or now_ms - since < self.stuck_seconds * 1000:
                return False
        return True


def select(
    records: Iterable[PartitionRecord],
    wanted: PartitionFilter,
    now_ms: int,
    sort: SortKey | None,
    limit: int,
) -> list[PartitionRecord]:
    """At most ``limit`` matching records, the largest first when sorted; memory stays
    O(limit) however many partitions stream past."""
    matching: Iterator[PartitionRecord] = (r for r in records if wanted.matches(r, now_ms))
    if sort is SortKey.BACKLOG:
        return heapq.nlargest(limit, matching, key=lambda r: r.state.backlog)
    if sort is SortKey.AGE:
        return heapq.nlargest(limit, matching, key=lambda r: _age_ms(r, now_ms))
    return list(itertools.islice(matching, limit))


def _age_ms(record: PartitionRecord, now_ms: int) -> int:
    if record.oldest_unarchived_ms is None or not record.state.has_work:
        return 0
    return now_ms - record.oldest_unarchived_ms
