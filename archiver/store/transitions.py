"""The partition's transitions: each one Lua script over one partition's keys (the scripts in
``archiver/store/lua/`` implement ``archiver.core.partition``), sent in one round trip where
many go together."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis

from archiver.core.object_names import PartitionId
from archiver.core.partition import (
    Claim,
    Gap,
    GrantCheck,
    NotificationOutcome,
    ReconcileResult,
    RecordedFailure,
    VerifiedRun,
)
from archiver.store.codec import ms as _ms
from archiver.store.codec import text as _text
from archiver.store.keys import RedisKeys
from archiver.store.records import MAX_GAPS_KEPT
from archiver.store.replication import ReplicaWait
from archiver.store.scripts import LuaScripts

# Announcements closer together than this share one mark (see add_mark in common.lua).
MARK_RESOLUTION_MS = 1000


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

    pid: PartitionId
    claim: Claim | None
    again_ms: int | None


@dataclass(frozen=True)
class CommitResult:
    committed: bool
    next_claim: Claim | None = None
    # On as many replicas as were asked for (always, when none were).
    replicated: bool = True


class PartitionTransitions:
    def __init__(self, scripts: LuaScripts, keys: RedisKeys) -> None:
        self.scripts = scripts
        self.keys = keys

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
                *{self.keys.partition_id(PartitionId(s, p)) for s, p, _, _ in notifications},
            )
            starts = first_lows or [low for _, _, low, _ in notifications]
            for (storage, partition, low, high), start in zip(notifications, starts, strict=True):
                self.scripts(
                    "apply_notification",
                    keys=self.keys.partition_keys(PartitionId(storage, partition)),
                    args=[low, high, _ms(lease_seconds), MAX_GAPS_KEPT, mark_resolution_ms, start],
                    client=pipe,
                )

        replies = self.scripts.pipelined(fill)[1:]
        return [
            _notification_result(reply, low)
            for (_, _, low, _), reply in zip(notifications, replies, strict=True)
        ]

    def check_partitions(
        self,
        partitions: list[PartitionId],
        lease_seconds: float,
        orphan_seconds: float | None = None,
    ) -> list[DueCheck]:
        """``claim_many``, also saying when to look again at each partition not claimed."""
        args = [_ms(lease_seconds)] + ([_ms(orphan_seconds)] if orphan_seconds else [])

        def fill(pipe: redis.client.Pipeline) -> None:
            for pid in partitions:
                self.scripts(
                    "claim_next_entry",
                    keys=[self.keys.partition(pid)],
                    args=args,
                    client=pipe,
                )

        checks = []
        for pid, reply in zip(partitions, self.scripts.pipelined(fill), strict=True):
            if not reply:
                checks.append(DueCheck(pid, None, None))
            elif _text(reply[0]):
                checks.append(DueCheck(pid, Claim(int(reply[0]), int(reply[1])), None))
            else:
                checks.append(DueCheck(pid, None, int(reply[1])))
        return checks

    def renew_lease(self, pid: PartitionId, lsn: int, token: int, lease_seconds: float) -> bool:
        return bool(
            self.scripts(
                "renew_lease",
                keys=[self.keys.partition(pid)],
                args=[lsn, token, _ms(lease_seconds)],
            )
        )

    def start_attempt(
        self,
        pid: PartitionId,
        lsn: int,
        token: int,
        lease_seconds: float,
        holder: str,
    ) -> AttemptStart:
        """Renew the grant for a running attempt, noting who holds it, and read the fleet
        pause, in one round trip."""
        return self.started(
            self.scripts.pipelined(
                lambda pipe: self.queue_start_attempt(pipe, pid, lsn, token, lease_seconds, holder)
            )
        )

    def queue_start_attempt(
        self,
        pipe: redis.client.Pipeline,
        pid: PartitionId,
        lsn: int,
        token: int,
        lease_seconds: float,
        holder: str,
    ) -> None:
        """``start_attempt`` as two calls on the caller's pipeline; ``started`` reads them."""
        self.scripts(
            "renew_lease",
            keys=[self.keys.partition(pid)],
            args=[lsn, token, _ms(lease_seconds), holder],
            client=pipe,
        )
        self.scripts("fleet_pause_left", keys=[self.keys.fleet], args=[], client=pipe)

    @staticmethod
    def started(replies: list[Any]) -> AttemptStart:
        held, pause_ms = (int(r) for r in replies)
        return AttemptStart(
            held=held > GrantCheck.FENCED, pause=pause_ms / 1000, fresh=held == GrantCheck.FRESH
        )

    def commit_success(
        self,
        pid: PartitionId,
        lsn: int,
        token: int,
        lease_seconds: float,
        claim_next: bool = True,
        replicas: ReplicaWait | None = None,
    ) -> CommitResult:
        """With ``replicas``, the commit is followed, in the same round trip and on the same
        connection, by a wait for the replicas to hold it (``CommitResult.replicated``)."""
        keys = [self.keys.partition(pid), self.keys.marks(pid)]
        args = [lsn, token, _ms(lease_seconds), 1 if claim_next else 0]
        if replicas is not None and replicas.enabled:

            def fill(pipe: Any) -> None:
                self.scripts("commit_success", keys=keys, args=args, client=pipe)
                replicas.queue(pipe)

            reply, waited = self.scripts.pipelined(fill)
            replicated = replicas.enough(waited) if int(reply[0]) else False
        else:
            reply = self.scripts("commit_success", keys=keys, args=args)
            replicated = True
        if not int(reply[0]):
            return CommitResult(committed=False)
        next_claim = Claim(int(reply[1]), int(reply[2])) if len(reply) > 1 else None
        return CommitResult(committed=True, next_claim=next_claim, replicated=replicated)

    def record_failure(
        self,
        pid: PartitionId,
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
        attempts, stopped = self.scripts(
            "record_failure", keys=[self.keys.partition(pid)], args=args
        )
        if int(attempts) < 0:
            return None
        return RecordedFailure(int(attempts), stopped=bool(int(stopped)))

    def mark_dispatched_many(self, sent: list[tuple[PartitionId, int]]) -> None:
        """Note, for many (partition, token), that the task of that grant was sent, so it is not
        taken for an orphan; one round trip."""
        if not sent:
            return

        def fill(pipe: redis.client.Pipeline) -> None:
            for pid, token in sent:
                self.scripts(
                    "mark_dispatched",
                    keys=[self.keys.partition(pid)],
                    args=[token],
                    client=pipe,
                )

        self.scripts.pipelined(fill)

    def release_claim(self, pid: PartitionId, lsn: int, token: int) -> bool:
        return bool(
            self.scripts("release_claim", keys=[self.keys.partition(pid)], args=[lsn, token])
        )

    def mark_conflict(self, pid: PartitionId, lsn: int, token: int, error: str) -> bool:
        return bool(
            self.scripts(
                "mark_conflict",
                keys=[self.keys.partition(pid)],
                args=[lsn, token, error[:2000]],
            )
        )

    def reconcile(
        self,
        pid: PartitionId,
        verified: VerifiedRun,
    ) -> ReconcileResult:
        """Move the partition past a run of verified archive objects (see reconcile.lua)."""

        def fill(pipe: redis.client.Pipeline) -> None:
            pipe.sadd(self.keys.partitions_index, self.keys.partition_id(pid))
            self.scripts(
                "reconcile",
                keys=self.keys.partition_keys(pid),
                args=[
                    verified.last,
                    MAX_GAPS_KEPT,
                    verified.first,
                    verified.checked_from,
                    *(f"{g.expected} {g.actual}" for g in verified.holes),
                ],
                client=pipe,
            )

        changed, previous, refused = self.scripts.pipelined(fill)[1]
        return ReconcileResult(
            bool(int(changed)), int(previous) if _text(previous) else None, _text(refused) or None
        )


def _notification_result(reply: list[Any], low: int) -> NotificationResult:
    outcome, reack, lsn, token, gap_expected = (_text(v) for v in reply)
    return NotificationResult(
        outcome=NotificationOutcome(outcome),
        reacknowledge=int(reack) if reack else None,
        claim=Claim(int(lsn), int(token)) if lsn else None,
        gap=Gap(int(gap_expected), low) if gap_expected else None,
    )
