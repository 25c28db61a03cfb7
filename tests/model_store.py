"""The state store's interface over the pure core: the executable model the Lua scripts are
checked against (``tests/store/test_scripts_model.py``). Time comes from a clock the test controls;
return values are the ones ``RedisStateStore`` gives."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from archiver.core import fleet_backoff as core_fleet
from archiver.core import partition as core
from archiver.core.fleet_backoff import FleetBackoff
from archiver.core.object_names import PartitionId
from archiver.core.partition import (
    Claim,
    GrantCheck,
    NotificationOutcome,
    PartitionState,
    ReconcileResult,
    RecordedFailure,
    VerifiedRun,
)
from archiver.store.admin import AdminResult
from archiver.store.transitions import AttemptStart, CommitResult, DueCheck, NotificationResult

NO_STATE = "no state for this partition"


def ms(seconds: float) -> int:
    """Seconds as the store passes them to its scripts."""
    return max(1, round(seconds * 1000))


@dataclass
class ModelStateStore:
    clock: Callable[[], int]
    partitions: dict[tuple[str, int], PartitionState] = field(default_factory=dict)
    fleet: FleetBackoff = field(default_factory=FleetBackoff)

    def load_state(self, storage: str, partition: int) -> PartitionState | None:
        return self.partitions.get((storage, partition))

    def _held(self, storage: str, partition: int) -> PartitionState:
        """The partition's state, or a placeholder no grant matches (a script on a partition
        with no hash finds no grant either)."""
        return self.partitions.get((storage, partition)) or PartitionState(0, 0)

    def apply_notification(
        self,
        storage: str,
        partition: int,
        low: int,
        high: int,
        lease_seconds: float,
        first_low: int | None = None,
    ) -> NotificationResult:
        state = self.partitions.get((storage, partition))
        if state is None:
            state = core.new_partition(low if first_low is None else first_low, high)
            self.partitions[(storage, partition)] = state
        applied = core.apply_notification(state, low, high)
        claim = None
        if applied.outcome is not NotificationOutcome.STALE:
            claim = core.claim_next_entry(state, self.clock(), ms(lease_seconds))
        return NotificationResult(applied.outcome, applied.reacknowledge, claim, applied.gap)

    def check_partitions(
        self,
        partitions: list[tuple[str, int]],
        lease_seconds: float,
        orphan_seconds: float | None = None,
    ) -> list[DueCheck]:
        checks = []
        orphan_ms = ms(orphan_seconds) if orphan_seconds else None
        for storage, partition in partitions:
            state = self.partitions.get((storage, partition))
            if state is None:
                checks.append(DueCheck(PartitionId(storage, partition), None, None))
                continue
            now = self.clock()
            claim = core.claim_next_entry(state, now, ms(lease_seconds), orphan_ms)
            again = None if claim else core.when_to_look_again(state, now, orphan_ms)
            checks.append(DueCheck(PartitionId(storage, partition), claim, again))
        return checks

    def claim_next_entry(self, storage: str, partition: int, lease_seconds: float) -> Claim | None:
        return self.check_partitions([(storage, partition)], lease_seconds)[0].claim

    def start_attempt(
        self,
        storage: str,
        partition: int,
        lsn: int,
        token: int,
        lease_seconds: float,
        holder: str,
    ) -> AttemptStart:
        check = core.start_attempt(
            self._held(storage, partition), lsn, token, self.clock(), ms(lease_seconds)
        )
        return AttemptStart(
            held=check > GrantCheck.FENCED,
            pause=self.fleet_pause_left(),
            fresh=check is GrantCheck.FRESH,
        )

    def renew_lease(
        self, storage: str, partition: int, lsn: int, token: int, lease_seconds: float
    ) -> bool:
        state = self._held(storage, partition)
        return core.renew_lease(state, lsn, token, self.clock(), ms(lease_seconds))

    def commit_success(
        self,
        storage: str,
        partition: int,
        lsn: int,
        token: int,
        lease_seconds: float,
        claim_next: bool = True,
    ) -> CommitResult:
        committed, claim = core.commit_and_claim(
            self._held(storage, partition), lsn, token, self.clock(), ms(lease_seconds), claim_next
        )
        return CommitResult(committed, claim)

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
        state = self._held(storage, partition)
        now = self.clock()
        return core.record_failure(state, lsn, token, error, now, ms(hold_seconds), stop_after)

    def mark_dispatched(self, storage: str, partition: int, token: int) -> None:
        core.mark_dispatched(self._held(storage, partition), token)

    def release_claim(self, storage: str, partition: int, lsn: int, token: int) -> bool:
        return core.release_claim(self._held(storage, partition), lsn, token)

    def mark_conflict(self, storage: str, partition: int, lsn: int, token: int, error: str) -> bool:
        return core.mark_conflict(self._held(storage, partition), lsn, token, error)

    def reconcile(self, storage: str, partition: int, verified: VerifiedRun) -> ReconcileResult:
        state, result = core.reconcile(self.partitions.get((storage, partition)), verified)
        if state is not None:
            self.partitions[(storage, partition)] = state
        return result

    def pause(
        self, storage: str, partition: int, actor: str, reason: str, paused: bool = True
    ) -> AdminResult:
        state = self.partitions.get((storage, partition))
        why = NO_STATE if state is None else core.pause(state, paused)
        return AdminResult(why is None, why or "")

    def release(self, storage: str, partition: int, actor: str, reason: str) -> AdminResult:
        state = self.partitions.get((storage, partition))
        released = NO_STATE if state is None else core.release_grant(state)
        if isinstance(released, str):
            return AdminResult(False, released)
        return AdminResult(True, lsn=released)

    def requeue(
        self, storage: str, partition: int, actor: str, reason: str, lease_seconds: float
    ) -> AdminResult:
        state = self.partitions.get((storage, partition))
        claim = NO_STATE if state is None else core.requeue(state, self.clock(), ms(lease_seconds))
        if isinstance(claim, str):
            return AdminResult(False, claim)
        return AdminResult(True, claim=claim, lsn=claim.lsn)

    def skip_to(
        self, storage: str, partition: int, lsn: int, actor: str, reason: str
    ) -> AdminResult:
        state = self.partitions.get((storage, partition))
        previous = NO_STATE if state is None else core.skip_to(state, lsn)
        if isinstance(previous, str):
            return AdminResult(False, previous)
        return AdminResult(True, lsn=previous)

    def fleet_failure(self, min_seconds: float, max_seconds: float) -> float:
        now = self.clock()
        return core_fleet.fleet_failure(self.fleet, now, ms(min_seconds), ms(max_seconds)) / 1000

    def fleet_success(self, min_seconds: float) -> None:
        core_fleet.fleet_success(self.fleet, ms(min_seconds))

    def fleet_pause_left(self) -> float:
        return core_fleet.fleet_pause_left(self.fleet, self.clock()) / 1000
