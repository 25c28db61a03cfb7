"""Reading partitions back: one in full (gaps, holder, audit trail), or all of them in
pipelined batches through the partition index."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from archiver.core.object_names import PartitionId
from archiver.core.partition import Gap, PartitionState
from archiver.store.codec import text as _text
from archiver.store.keys import RedisKeys, split_partition_id

# Gaps kept per partition; the total count is kept separately.
MAX_GAPS_KEPT = 100


@dataclass(frozen=True)
class GapRecord:
    gap: Gap
    at_ms: int
    # Recorded by an operator's skip-to rather than found missing at the producer.
    manual: bool


@dataclass(frozen=True)
class PartitionRecord:
    """A partition's state as stored, with the bookkeeping the core does not need.

    Records read in bulk (``partitions``) carry no gap list, holder or audit trail;
    ``gaps_total`` still counts the gaps.
    """

    storage: str
    partition: int
    state: PartitionState
    gaps_total: int
    created_ms: int | None
    progress_ms: int | None
    # When the oldest entry not yet archived was announced; None when nothing waits.
    oldest_unarchived_ms: int | None = None
    error_ms: int | None = None
    # Who runs the current grant ("host:pid"), once its task started.
    holder: str | None = None
    recent_gaps: tuple[GapRecord, ...] = ()
    audit: tuple[dict[str, Any], ...] = ()

    def waiting_since_ms(self) -> int | None:
        """Since when the partition has had work without archiving anything: the later of
        its last progress and the announcement of its oldest waiting entry."""
        if not self.state.has_work:
            return None
        times = [t for t in (self.progress_ms, self.oldest_unarchived_ms) if t is not None]
        return max(times) if times else None

    def to_json(self) -> dict[str, Any]:
        s = self.state
        return {
            "storage": self.storage,
            "partition": self.partition,
            "state": s.condition.value,
            "next_lsn": s.next_lsn,
            "high_water_mark": s.high_water_mark,
            "in_flight_lsn": s.in_flight_lsn,
            "acknowledged_lsn": s.acknowledged_lsn,
            "backlog": s.backlog,
            "oldest_unarchived_ms": self.oldest_unarchived_ms,
            "fencing_token": s.fencing_token,
            "lease_holder": self.holder,
            "lease_claimed_ms": s.claimed_ms if s.in_flight_lsn is not None else None,
            "lease_expires_ms": s.lease_expires_ms,
            "attempts": s.attempts,
            "paused": s.paused,
            "conflicted": s.conflicted,
            "stopped": s.stopped,
            "entry_failures": s.entry_failures,
            "gaps_total": self.gaps_total,
            # The newest gaps (at most MAX_GAPS_KEPT); gaps_total counts all.
            "gaps": [
                {
                    "expected": g.gap.expected,
                    "actual": g.gap.actual,
                    "at_ms": g.at_ms,
                    "manual": g.manual,
                }
                for g in self.recent_gaps
            ],
            "last_error": s.last_error,
            "last_error_ms": self.error_ms,
            "created_ms": self.created_ms,
            "progress_ms": self.progress_ms,
            "audit": list(self.audit),
        }


class PartitionRecords:
    def __init__(self, client: Any, keys: RedisKeys) -> None:
        self.client = client
        self.keys = keys

    def acknowledged(self, pid: PartitionId) -> int | None:
        """The partition's acknowledged LSN alone."""
        value = self.client.hget(self.keys.partition(pid), "acked")
        return None if value is None else int(value)

    def load(self, pid: PartitionId) -> PartitionRecord | None:
        pipe = self.client.pipeline(transaction=False)
        pipe.hgetall(self.keys.partition(pid))
        pipe.lrange(self.keys.gaps(pid), 0, -1)
        pipe.lrange(self.keys.audit(pid), 0, -1)
        fields, gaps, audit = pipe.execute()
        if not fields:
            return None
        return _record(pid, fields, gaps, audit)

    def partition_ids(self, batch: int = 500) -> Iterator[list[PartitionId]]:
        """The index in batches, paged with SSCAN: never one unbounded read."""
        members: list[PartitionId] = []
        for raw in self.client.sscan_iter(self.keys.partitions_index, count=batch):
            members.append(split_partition_id(_text(raw)))
            if len(members) >= batch:
                yield members
                members = []
        if members:
            yield members

    def scan_partition_ids(self, cursor: int, count: int) -> tuple[int, list[PartitionId]]:
        """One SSCAN step over the index: the next cursor (0 at the end) and members."""
        next_cursor, members = self.client.sscan(self.keys.partitions_index, cursor, count=count)
        return int(next_cursor), [split_partition_id(_text(m)) for m in members]

    def all(self, storage: str | None = None, batch: int = 500) -> Iterator[PartitionRecord]:
        """Every known partition (or one storage's), read in pipelined batches."""
        for members in self.partition_ids(batch):
            wanted = [m for m in members if storage in (None, m.storage)]
            if not wanted:
                continue
            pipe = self.client.pipeline(transaction=False)
            for member in wanted:
                pipe.hgetall(self.keys.partition(member))
            for member, fields in zip(wanted, pipe.execute(), strict=True):
                if fields:
                    yield _record(member, fields, [], [])


def _record(
    pid: PartitionId,
    raw_fields: dict[Any, Any],
    raw_gaps: list[Any],
    raw_audit: list[Any],
) -> PartitionRecord:
    fields = {_text(k): _text(v) for k, v in raw_fields.items()}

    def opt(name: str) -> int | None:
        return int(fields[name]) if fields.get(name) else None

    gaps = []
    for raw in raw_gaps:
        expected, actual, at_ms, *flags = _text(raw).split(" ")
        gaps.append(GapRecord(Gap(int(expected), int(actual)), int(at_ms), "manual" in flags))
    token = int(fields.get("token", 0))
    holder_token, _, holder = fields.get("holder", "").partition(" ")
    state = PartitionState(
        next_lsn=int(fields["next"]),
        high_water_mark=int(fields["high"]),
        in_flight_lsn=opt("inflight"),
        fencing_token=token,
        lease_expires_ms=opt("lease_until"),
        acknowledged_lsn=opt("acked"),
        gaps=[g.gap for g in gaps],
        last_error=fields.get("last_error"),
        attempts=int(fields.get("attempts", 0)),
        entry_failures=int(fields.get("entry_failures", 0)),
        claimed_ms=opt("claimed_ms"),
        dispatched_token=opt("dispatched"),
        paused=fields.get("paused") == "1",
        conflicted=fields.get("conflicted") == "1",
        stopped=fields.get("stopped") == "1",
        grant_lsn=opt("grant_lsn"),
        grants=int(fields.get("grants", 0)),
        started_token=int(holder_token) if holder_token else None,
    )
    return PartitionRecord(
        storage=pid.storage,
        partition=pid.partition,
        state=state,
        gaps_total=int(fields.get("gaps_total", 0)),
        created_ms=opt("created_ms"),
        progress_ms=opt("progress_ms"),
        oldest_unarchived_ms=opt("oldest_ms"),
        error_ms=opt("error_ms"),
        # Only the current grant's holder: an older one was fenced off.
        holder=holder
        if holder and holder_token == str(token) and state.in_flight_lsn is not None
        else None,
        recent_gaps=tuple(gaps),
        audit=tuple(json.loads(_text(a)) for a in raw_audit),
    )
