"""Partition state in Redis: every transition is one Lua script over one partition's keys.

The scripts in ``archiver/store/lua/`` implement the transitions of ``archiver.core.partition``;
this module only names keys, passes arguments and turns replies back into the core's types.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import redis
import redis.cluster
from redis.exceptions import NoScriptError

from archiver.core.partition import (
    Claim,
    Gap,
    GrantCheck,
    NotificationOutcome,
    PartitionState,
    ReconcileResult,
    RecordedFailure,
    VerifiedRun,
)
from archiver.store.cluster_pipeline import ClusterBatch
from archiver.store.keys import RedisKeys, split_partition_id
from archiver.store.scripts import LuaScripts
from archiver.store.streams import STREAM_SCRIPTS

# Gaps kept per partition; the total count is kept separately.
MAX_GAPS_KEPT = 100
# Announcements closer together than this share one mark (see add_mark in common.lua).
MARK_RESOLUTION_MS = 1000


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


@dataclass(frozen=True)
class NotificationResult:
    outcome: NotificationOutcome
    reacknowledge: int | None
    claim: Claim | None
    gap: Gap | None


@dataclass(frozen=True)
class AttemptStart:
    # The grant is still ours.
    held: bool
    # Seconds left in the fleet-wide pause.
    pause: float
    # No earlier attempt at this LSN can have written its archive: no need to look for one.
    fresh: bool


@dataclass(frozen=True)
class DueCheck:
    """What the sweep found at one partition: a claim it made, or when to look again (a live
    grant holds it), or neither (nothing to do until new work arrives)."""

    storage: str
    partition: int
    claim: Claim | None
    again_ms: int | None


@dataclass(frozen=True)
class CommitResult:
    committed: bool
    next_claim: Claim | None = None


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


@dataclass(frozen=True)
class AdminResult:
    """An operator's change: done, or refused with the reason."""

    done: bool
    reason: str = ""
    claim: Claim | None = None
    lsn: int | None = None


class RedisStateStore:
    def __init__(
        self,
        client: redis.Redis | redis.cluster.RedisCluster,
        keys: RedisKeys,
        script_prelude: str = "",
    ) -> None:
        self.client: Any = client
        self.keys = keys
        self._lua = LuaScripts(
            client,
            (
                "apply_notification",
                "claim_next_entry",
                "renew_lease",
                "commit_success",
                "record_failure",
                "release_claim",
                "mark_conflict",
                "reconcile",
                "mark_dispatched",
                "fleet_failure",
                "fleet_success",
                "fleet_pause_left",
                "admin_pause",
                "admin_release",
                "admin_requeue",
                "admin_skip_to",
                *STREAM_SCRIPTS,
            ),
            script_prelude,
        )

    def pipelined(self, fill: Callable[[redis.client.Pipeline], None]) -> list[Any]:
        """One round trip for what ``fill`` queues; made again, refilled, if the server had
        lost the scripts."""
        for attempt in (1, 2):
            pipe: Any = (
                ClusterBatch(self.client)
                if isinstance(self.client, redis.cluster.RedisCluster)
                else self.client.pipeline(transaction=False)
            )
            fill(pipe)
            try:
                replies: list[Any] = pipe.execute()
                return replies
            except NoScriptError:
                if attempt == 2:
                    raise
                self._lua.load()
        raise AssertionError("unreachable")

    def apply_notification(
        self,
        storage: str,
        partition: int,
        low: int,
        high: int,
        lease_seconds: float,
        mark_resolution_ms: int = MARK_RESOLUTION_MS,
    ) -> NotificationResult:
        """Fold a notification into the partition and claim its next entry if it can."""
        return self.apply_notifications(
            [(storage, partition, low, high)], lease_seconds, mark_resolution_ms
        )[0]

    def apply_notifications(
        self,
        notifications: list[tuple[str, int, int, int]],
        lease_seconds: float,
        mark_resolution_ms: int = MARK_RESOLUTION_MS,
        first_lows: list[int] | None = None,
    ) -> list[NotificationResult]:
        """``apply_notification`` for many (storage, partition, low, high), one round trip.
        Where several notifications were folded into one, ``first_lows`` holds the low of the
        first: an unknown partition starts there."""
        if not notifications:
            return []

        def fill(pipe: redis.client.Pipeline) -> None:
            # The index lives outside the partitions' slots; sweeps repair it if this is lost.
            pipe.sadd(
                self.keys.partitions_index,
                *{self.keys.partition_id(s, p) for s, p, _, _ in notifications},
            )
            starts = first_lows or [low for _, _, low, _ in notifications]
            for (storage, partition, low, high), start in zip(notifications, starts, strict=True):
                self._lua(
                    "apply_notification",
                    keys=self.keys.partition_keys(storage, partition),
                    args=[low, high, _ms(lease_seconds), MAX_GAPS_KEPT, mark_resolution_ms, start],
                    client=pipe,
                )

        replies = self.pipelined(fill)[1:]
        return [
            _notification_result(reply, low)
            for (_, _, low, _), reply in zip(notifications, replies, strict=True)
        ]

    def claim_next_entry(self, storage: str, partition: int, lease_seconds: float) -> Claim | None:
        reply = self._lua(
            "claim_next_entry",
            keys=[self.keys.partition(storage, partition)],
            args=[_ms(lease_seconds)],
        )
        return Claim(int(reply[0]), int(reply[1])) if reply and _text(reply[0]) else None

    def claim_many(
        self,
        partitions: list[tuple[str, int]],
        lease_seconds: float,
        orphan_seconds: float | None = None,
    ) -> list[tuple[str, int, Claim]]:
        """Claim the next entry of each partition that has work, in one round trip; with
        ``orphan_seconds``, also take over grants whose task was never marked as sent."""
        return [
            (check.storage, check.partition, check.claim)
            for check in self.check_partitions(partitions, lease_seconds, orphan_seconds)
            if check.claim is not None
        ]

    def check_partitions(
        self,
        partitions: list[tuple[str, int]],
        lease_seconds: float,
        orphan_seconds: float | None = None,
    ) -> list[DueCheck]:
        """``claim_many``, also saying when to look again at each partition not claimed."""
        args = [_ms(lease_seconds)] + ([_ms(orphan_seconds)] if orphan_seconds else [])

        def fill(pipe: redis.client.Pipeline) -> None:
            for storage, partition in partitions:
                self._lua(
                    "claim_next_entry",
                    keys=[self.keys.partition(storage, partition)],
                    args=args,
                    client=pipe,
                )

        checks = []
        for (storage, partition), reply in zip(partitions, self.pipelined(fill), strict=True):
            if not reply:
                checks.append(DueCheck(storage, partition, None, None))
            elif _text(reply[0]):
                claim = Claim(int(reply[0]), int(reply[1]))
                checks.append(DueCheck(storage, partition, claim, None))
            else:
                checks.append(DueCheck(storage, partition, None, int(reply[1])))
        return checks

    # The due index: which partitions the sweep looks at, and when. Entries are added when
    # work arrives and removed only when a look finds none, so every partition with work is
    # in it; the scheduler adds the whole partition index again now and then, in case an
    # addition was lost (the index is outside the partitions' slots, so no script keeps it).

    def mark_due(self, partitions: Iterable[tuple[str, int]], at_ms: int, only_new: bool) -> None:
        """Look at ``partitions`` by ``at_ms``: sooner if already due later, or (with
        ``only_new``) only those not in the index at all."""
        members = {self.keys.partition_id(s, p): at_ms for s, p in partitions}
        if members:
            self.client.zadd(self.keys.due, members, nx=only_new, lt=not only_new)

    def mark_due_after_apply(
        self, claimed: list[tuple[str, int]], working: list[tuple[str, int]], at_ms: int
    ) -> None:
        """After applying notifications, in one round trip: partitions just claimed are looked
        at again by ``at_ms`` (their task may never be sent); others with work are added if
        they are not in the index yet."""
        if not claimed and not working:
            return
        pipe = self.client.pipeline(transaction=False)
        if claimed:
            members = {self.keys.partition_id(s, p): at_ms for s, p in claimed}
            pipe.zadd(self.keys.due, members, lt=True)
        if working:
            members = {self.keys.partition_id(s, p): at_ms for s, p in working}
            pipe.zadd(self.keys.due, members, nx=True)
        pipe.execute()

    def due_partitions(self, now_ms: int, limit: int) -> list[tuple[str, int]]:
        members = self.client.zrangebyscore(self.keys.due, "-inf", now_ms, start=0, num=limit)
        return [split_partition_id(_text(m)) for m in members]

    def reschedule(self, later: dict[tuple[str, int], int], done: list[tuple[str, int]]) -> None:
        """After a look: when to look again, or (``done``: nothing to do) not until new work."""
        if not later and not done:
            return
        pipe = self.client.pipeline(transaction=False)
        if later:
            pipe.zadd(
                self.keys.due, {self.keys.partition_id(s, p): at for (s, p), at in later.items()}
            )
        if done:
            pipe.zrem(self.keys.due, *(self.keys.partition_id(s, p) for s, p in done))
        pipe.execute()

    def due_count(self) -> int:
        return int(self.client.zcard(self.keys.due))

    def renew_lease(
        self, storage: str, partition: int, lsn: int, token: int, lease_seconds: float
    ) -> bool:
        return bool(
            self._lua(
                "renew_lease",
                keys=[self.keys.partition(storage, partition)],
                args=[lsn, token, _ms(lease_seconds)],
            )
        )

    def start_attempt(
        self,
        storage: str,
        partition: int,
        lsn: int,
        token: int,
        lease_seconds: float,
        holder: str,
    ) -> AttemptStart:
        """Renew the grant for a running attempt, noting who holds it, and read the fleet
        pause, in one round trip."""
        return self.started(
            self.pipelined(
                lambda pipe: self.queue_start_attempt(
                    pipe, storage, partition, lsn, token, lease_seconds, holder
                )
            )
        )

    def queue_start_attempt(
        self,
        pipe: redis.client.Pipeline,
        storage: str,
        partition: int,
        lsn: int,
        token: int,
        lease_seconds: float,
        holder: str,
    ) -> None:
        """``start_attempt`` as two calls on the caller's pipeline; ``started`` reads them."""
        self._lua(
            "renew_lease",
            keys=[self.keys.partition(storage, partition)],
            args=[lsn, token, _ms(lease_seconds), holder],
            client=pipe,
        )
        self._lua("fleet_pause_left", keys=[self.keys.fleet], args=[], client=pipe)

    @staticmethod
    def started(replies: list[Any]) -> AttemptStart:
        held, pause_ms = (int(r) for r in replies)
        return AttemptStart(
            held=held > GrantCheck.FENCED, pause=pause_ms / 1000, fresh=held == GrantCheck.FRESH
        )

    def commit_success(
        self,
        storage: str,
        partition: int,
        lsn: int,
        token: int,
        lease_seconds: float,
        claim_next: bool = True,
    ) -> CommitResult:
        reply = self._lua(
            "commit_success",
            keys=[self.keys.partition(storage, partition), self.keys.marks(storage, partition)],
            args=[lsn, token, _ms(lease_seconds), 1 if claim_next else 0],
        )
        if not int(reply[0]):
            return CommitResult(committed=False)
        next_claim = Claim(int(reply[1]), int(reply[2])) if len(reply) > 1 else None
        return CommitResult(committed=True, next_claim=next_claim)

    def record_failure(
        self,
        storage: str,
        partition: int,
        lsn: int,
        token: int,
        error: str,
        hold_seconds: float,
        stop_after: int | None = None,
    ) -> RecordedFailure | None:
        """None when the caller was fenced off. ``stop_after``: a failure of the entry itself,
        which stops the partition once it happened that many times (see the core's)."""
        args = [lsn, token, error[:2000], _ms(hold_seconds)]
        if stop_after is not None:
            args.append(stop_after)
        attempts, stopped = self._lua(
            "record_failure", keys=[self.keys.partition(storage, partition)], args=args
        )
        if int(attempts) < 0:
            return None
        return RecordedFailure(int(attempts), stopped=bool(int(stopped)))

    def mark_dispatched(self, storage: str, partition: int, token: int) -> None:
        """Note that the task for grant ``token`` was sent, so it is not taken for an orphan."""
        self._lua("mark_dispatched", keys=[self.keys.partition(storage, partition)], args=[token])

    def mark_dispatched_many(self, sent: list[tuple[str, int, int]]) -> None:
        """``mark_dispatched`` for many (storage, partition, token), in one round trip."""
        if not sent:
            return

        def fill(pipe: redis.client.Pipeline) -> None:
            for storage, partition, token in sent:
                self._lua(
                    "mark_dispatched",
                    keys=[self.keys.partition(storage, partition)],
                    args=[token],
                    client=pipe,
                )

        self.pipelined(fill)

    def release_claim(self, storage: str, partition: int, lsn: int, token: int) -> bool:
        return bool(
            self._lua(
                "release_claim", keys=[self.keys.partition(storage, partition)], args=[lsn, token]
            )
        )

    def mark_conflict(self, storage: str, partition: int, lsn: int, token: int, error: str) -> bool:
        return bool(
            self._lua(
                "mark_conflict",
                keys=[self.keys.partition(storage, partition)],
                args=[lsn, token, error[:2000]],
            )
        )

    def reconcile(
        self,
        storage: str,
        partition: int,
        verified: VerifiedRun,
    ) -> ReconcileResult:
        """Move the partition past a run of verified archive objects (see reconcile.lua)."""

        def fill(pipe: redis.client.Pipeline) -> None:
            pipe.sadd(self.keys.partitions_index, self.keys.partition_id(storage, partition))
            self._lua(
                "reconcile",
                keys=self.keys.partition_keys(storage, partition),
                args=[
                    verified.last,
                    MAX_GAPS_KEPT,
                    verified.first,
                    verified.checked_from,
                    *(f"{g.expected} {g.actual}" for g in verified.holes),
                ],
                client=pipe,
            )

        changed, previous, refused = self.pipelined(fill)[1]
        return ReconcileResult(
            bool(int(changed)), int(previous) if _text(previous) else None, _text(refused) or None
        )

    def count(self, event: str, amount: int = 1) -> None:
        """Fleet-wide event counters (fenced attempts, conflicts, re-dispatches...)."""
        self.client.hincrby(self.keys.stats, event, amount)

    def counters(self) -> dict[str, int]:
        return {_text(k): int(v) for k, v in self.client.hgetall(self.keys.stats).items()}

    def fleet_failure(self, min_seconds: float, max_seconds: float) -> float:
        """Start (or join) a fleet-wide pause; returns the seconds left in it."""
        left = self._lua(
            "fleet_failure", keys=[self.keys.fleet], args=[_ms(min_seconds), _ms(max_seconds)]
        )
        return int(left) / 1000

    def fleet_success(self, min_seconds: float, pipe: redis.client.Pipeline | None = None) -> None:
        self._lua(
            "fleet_success",
            keys=[self.keys.fleet],
            args=[_ms(min_seconds)],
            client=pipe or self.client,
        )

    def fleet_pause_left(self) -> float:
        return int(self._lua("fleet_pause_left", keys=[self.keys.fleet], args=[])) / 1000

    def server_time_ms(self) -> int:
        """Redis's clock, which every stored time was read from."""
        seconds, micros = self.client.time()
        return int(seconds) * 1000 + int(micros) // 1000

    # Operators' changes: one script each, refused unless its precondition holds, and
    # recorded in the partition's audit trail.

    def _admin_keys(self, storage: str, partition: int) -> list[str]:
        return [self.keys.partition(storage, partition), self.keys.audit(storage, partition)]

    def pause(
        self, storage: str, partition: int, actor: str, reason: str, paused: bool = True
    ) -> AdminResult:
        done, why = self._lua(
            "admin_pause",
            keys=self._admin_keys(storage, partition),
            args=["1" if paused else "0", actor, reason],
        )
        if int(done) and not paused:
            self._due_now(storage, partition)
        return AdminResult(bool(int(done)), _text(why))

    def _due_now(self, storage: str, partition: int) -> None:
        """After an operator's change: the sweep looks at the partition at once."""
        self.mark_due([(storage, partition)], self.server_time_ms(), only_new=False)

    def release(self, storage: str, partition: int, actor: str, reason: str) -> AdminResult:
        done, detail = self._lua(
            "admin_release", keys=self._admin_keys(storage, partition), args=[actor, reason]
        )
        if not int(done):
            return AdminResult(False, _text(detail))
        self._due_now(storage, partition)
        return AdminResult(True, lsn=int(detail))

    def requeue(
        self, storage: str, partition: int, actor: str, reason: str, lease_seconds: float
    ) -> AdminResult:
        reply = self._lua(
            "admin_requeue",
            keys=self._admin_keys(storage, partition),
            args=[_ms(lease_seconds), actor, reason],
        )
        if not int(reply[0]):
            return AdminResult(False, _text(reply[1]))
        claim = Claim(int(reply[1]), int(reply[2]))
        self._due_now(storage, partition)
        return AdminResult(True, claim=claim, lsn=claim.lsn)

    def skip_to(
        self, storage: str, partition: int, lsn: int, actor: str, reason: str
    ) -> AdminResult:
        done, detail = self._lua(
            "admin_skip_to",
            keys=[
                *self.keys.partition_keys(storage, partition),
                self.keys.audit(storage, partition),
            ],
            args=[lsn, MAX_GAPS_KEPT, actor, reason],
        )
        if not int(done):
            return AdminResult(False, _text(detail))
        self._due_now(storage, partition)
        return AdminResult(True, lsn=int(detail))

    def load(self, storage: str, partition: int) -> PartitionRecord | None:
        pipe = self.client.pipeline(transaction=False)
        pipe.hgetall(self.keys.partition(storage, partition))
        pipe.lrange(self.keys.gaps(storage, partition), 0, -1)
        pipe.lrange(self.keys.audit(storage, partition), 0, -1)
        fields, gaps, audit = pipe.execute()
        if not fields:
            return None
        return _record(storage, partition, fields, gaps, audit)

    def partition_ids(self, batch: int = 500) -> Iterator[list[tuple[str, int]]]:
        """The index in batches, paged with SSCAN: never one unbounded read."""
        members: list[tuple[str, int]] = []
        for raw in self.client.sscan_iter(self.keys.partitions_index, count=batch):
            members.append(split_partition_id(_text(raw)))
            if len(members) >= batch:
                yield members
                members = []
        if members:
            yield members

    def scan_partition_ids(self, cursor: int, count: int) -> tuple[int, list[tuple[str, int]]]:
        """One SSCAN step over the index: the next cursor (0 at the end) and members."""
        next_cursor, members = self.client.sscan(self.keys.partitions_index, cursor, count=count)
        return int(next_cursor), [split_partition_id(_text(m)) for m in members]

    def partitions(self, storage: str | None = None, batch: int = 500) -> Iterator[PartitionRecord]:
        """Every known partition (or one storage's), read in pipelined batches."""
        for members in self.partition_ids(batch):
            wanted = [m for m in members if storage in (None, m[0])]
            if not wanted:
                continue
            pipe = self.client.pipeline(transaction=False)
            for member in wanted:
                pipe.hgetall(self.keys.partition(*member))
            for (member_storage, member_partition), fields in zip(
                wanted, pipe.execute(), strict=True
            ):
                if fields:
                    yield _record(member_storage, member_partition, fields, [], [])


def _notification_result(reply: list[Any], low: int) -> NotificationResult:
    outcome, reack, lsn, token, gap_expected = (_text(v) for v in reply)
    return NotificationResult(
        outcome=NotificationOutcome(outcome),
        reacknowledge=int(reack) if reack else None,
        claim=Claim(int(lsn), int(token)) if lsn else None,
        gap=Gap(int(gap_expected), low) if gap_expected else None,
    )


def _record(
    storage: str,
    partition: int,
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
        storage=storage,
        partition=partition,
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
