"""The per-partition state machine: the specification the Redis scripts implement.

One partition's archive progresses strictly in LSN order with at most one entry in flight.
Every transition here has a twin in ``archiver/lua/``; ``tests/test_state_store.py`` drives both
with the same random operations and compares them.

Invariants kept by these transitions:
- at most one LSN is in flight, and it is always ``next_lsn``;
- ``acknowledged_lsn`` only moves forward, and only onto an LSN whose archive was committed
  while its holder still owned the current fencing token;
- ``next_lsn`` skips ahead only through a recorded gap.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class PartitionCondition(enum.StrEnum):
    """What a partition is doing, as operators see it (and metrics count it)."""

    IDLE = "idle"  # everything announced is archived
    ACTIVE = "active"  # has work, nothing in flight right now
    IN_FLIGHT = "in-flight"
    CONFLICTED = "conflicted"  # stopped: an archive object holds other bytes
    STOPPED = "stopped"  # stopped: the entry failed too often in ways a retry cannot mend
    PAUSED = "paused"  # stopped by an operator


class NotificationOutcome(enum.StrEnum):
    APPLIED = "applied"
    STALE = "stale"
    GAP = "gap"


@dataclass(frozen=True)
class Gap:
    """Entries ``expected`` .. ``actual - 1`` were gone before they could be archived."""

    expected: int
    actual: int


@dataclass(frozen=True)
class VerifiedRun:
    """Archive objects of a partition that were downloaded and verified: every object from
    ``checked_from`` up to ``last``, the first of them at ``first``, with ``holes`` between."""

    first: int
    last: int
    checked_from: int
    holes: tuple[Gap, ...] = ()


@dataclass(frozen=True)
class Claim:
    """A grant to archive ``lsn``; ``token`` fences off every earlier holder."""

    lsn: int
    token: int


@dataclass
class PartitionState:
    # The next LSN to archive; every LSN below it (since the last gap) is archived.
    next_lsn: int
    # The newest LSN the producer has announced; never moves backwards.
    high_water_mark: int
    # The LSN being archived right now, if any; always equal to next_lsn when set.
    in_flight_lsn: int | None = None
    # Bumped at every grant; commits must present the current value.
    fencing_token: int = 0
    # When the in-flight grant may be handed to someone else (milliseconds, server clock).
    lease_expires_ms: int | None = None
    # When the current grant was made, and the newest token whose task is known to be sent:
    # a grant never marked as sent is an orphan once old enough (its sender died).
    claimed_ms: int | None = None
    dispatched_token: int | None = None
    # The newest LSN acknowledged to the producer.
    acknowledged_lsn: int | None = None
    # Gaps recorded so far, oldest first.
    gaps: list[Gap] = field(default_factory=list)
    # The last failure while archiving next_lsn; cleared by a commit.
    last_error: str | None = None
    # Failed attempts at next_lsn; drives the retry backoff.
    attempts: int = 0
    # Of those, failures of the entry itself (unreadable, unsafe, an object that does not
    # verify), as opposed to the store's: enough of them stop the partition.
    entry_failures: int = 0
    # An operator stopped this partition; nothing is claimed while set.
    paused: bool = False
    # An archive object exists with bytes other than the entry's: archiving stopped here.
    conflicted: bool = False
    # The entry failed too often on its own account: archiving stopped here for an operator.
    stopped: bool = False

    @property
    def has_work(self) -> bool:
        return self.next_lsn <= self.high_water_mark

    @property
    def backlog(self) -> int:
        """Entries announced and neither archived nor skipped past in a gap."""
        return max(0, self.high_water_mark - self.next_lsn + 1)

    @property
    def condition(self) -> PartitionCondition:
        if self.conflicted:
            return PartitionCondition.CONFLICTED
        if self.stopped:
            return PartitionCondition.STOPPED
        if self.paused:
            return PartitionCondition.PAUSED
        if self.in_flight_lsn is not None:
            return PartitionCondition.IN_FLIGHT
        return PartitionCondition.ACTIVE if self.has_work else PartitionCondition.IDLE

    def holds(self, lsn: int, token: int) -> bool:
        """True while ``(lsn, token)`` is still the current grant."""
        return self.in_flight_lsn == lsn and self.fencing_token == token


@dataclass(frozen=True)
class AppliedNotification:
    outcome: NotificationOutcome
    # The LSN to acknowledge again when everything announced is already archived.
    reacknowledge: int | None = None
    gap: Gap | None = None


def new_partition(low: int, high: int) -> PartitionState:
    """An unknown partition starts at the oldest entry the producer still has."""
    return PartitionState(next_lsn=low, high_water_mark=high)


def apply_notification(state: PartitionState, low: int, high: int) -> AppliedNotification:
    """Fold one watermark notification ``(low, high)`` into ``state``."""
    if state.next_lsn > high:
        return AppliedNotification(NotificationOutcome.STALE, reacknowledge=state.acknowledged_lsn)
    gap = None
    if state.next_lsn < low:
        gap = Gap(expected=state.next_lsn, actual=low)
        state.gaps.append(gap)
        state.next_lsn = low
        state.attempts = 0
        state.entry_failures = 0
        state.last_error = None
        # The entry in flight is gone from the producer: fence its holder off.
        state.in_flight_lsn = None
        state.lease_expires_ms = None
    state.high_water_mark = max(state.high_water_mark, high)
    outcome = NotificationOutcome.GAP if gap else NotificationOutcome.APPLIED
    return AppliedNotification(outcome, gap=gap)


def claim_next_entry(
    state: PartitionState, now_ms: int, lease_ms: int, orphan_ms: int | None = None
) -> Claim | None:
    """Grant ``next_lsn`` if there is work and no live grant; an expired grant is taken over,
    and with ``orphan_ms`` so is a grant that old whose task was never marked as sent."""
    if state.paused or state.conflicted or state.stopped or not state.has_work:
        return None
    if (
        state.in_flight_lsn is not None
        and state.lease_expires_ms is not None
        and state.lease_expires_ms > now_ms
        and not (
            orphan_ms is not None
            and state.dispatched_token != state.fencing_token
            and state.claimed_ms is not None
            and now_ms - state.claimed_ms >= orphan_ms
        )
    ):
        return None
    state.fencing_token += 1
    state.in_flight_lsn = state.next_lsn
    state.lease_expires_ms = now_ms + lease_ms
    state.claimed_ms = now_ms
    return Claim(state.next_lsn, state.fencing_token)


def mark_dispatched(state: PartitionState, token: int) -> None:
    """Note that grant ``token``'s task was sent, unless a newer grant was made since."""
    if state.fencing_token == token:
        state.dispatched_token = token


def renew_lease(state: PartitionState, lsn: int, token: int, now_ms: int, lease_ms: int) -> bool:
    if not state.holds(lsn, token):
        return False
    state.lease_expires_ms = now_ms + lease_ms
    state.dispatched_token = token  # a running holder's task was evidently sent
    return True


def commit_success(state: PartitionState, lsn: int, token: int) -> bool:
    """Record that ``lsn`` is durably archived; refused unless the grant is still current."""
    if not state.holds(lsn, token):
        return False
    state.acknowledged_lsn = lsn
    state.next_lsn = lsn + 1
    state.in_flight_lsn = None
    state.lease_expires_ms = None
    state.last_error = None
    state.attempts = 0
    state.entry_failures = 0
    return True


@dataclass(frozen=True)
class RecordedFailure:
    # Failed attempts at the LSN so far.
    attempts: int
    # The partition is stopped: the entry failed ``stop_after`` times on its own account.
    stopped: bool = False


def record_failure(
    state: PartitionState,
    lsn: int,
    token: int,
    error: str,
    now_ms: int,
    hold_ms: int,
    stop_after: int | None = None,
) -> RecordedFailure | None:
    """Note a failed attempt; the holder keeps the grant for ``hold_ms`` while it waits to retry.

    ``stop_after`` marks a failure of the entry itself: after that many the partition stops,
    since retrying an entry that cannot be archived only hides it. None when fenced off."""
    if not state.holds(lsn, token):
        return None
    state.last_error = error
    state.attempts += 1
    if stop_after is not None:
        state.entry_failures += 1
        if state.entry_failures >= stop_after:
            state.stopped = True
            state.in_flight_lsn = None
            state.lease_expires_ms = None
            return RecordedFailure(state.attempts, stopped=True)
    state.lease_expires_ms = now_ms + hold_ms
    return RecordedFailure(state.attempts)


def release_claim(state: PartitionState, lsn: int, token: int) -> bool:
    """Give up a grant whose task was never sent, so the partition can be claimed at once."""
    if not state.holds(lsn, token):
        return False
    state.in_flight_lsn = None
    state.lease_expires_ms = None
    return True


def mark_conflict(state: PartitionState, lsn: int, token: int, error: str) -> bool:
    """Stop the partition: the archive at ``lsn`` holds other bytes and must not be replaced."""
    if not state.holds(lsn, token):
        return False
    state.conflicted = True
    state.last_error = error
    state.in_flight_lsn = None
    state.lease_expires_ms = None
    return True
