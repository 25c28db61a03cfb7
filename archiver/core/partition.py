"""The per-partition state machine: the specification the Redis scripts implement.

One partition's archive progresses strictly in LSN order with at most one entry in flight.
Every transition here has a twin in ``archiver/store/lua/``;
``tests/store/test_scripts_model.py`` drives both with the same random operations and compares
them.

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
    # How many grants ``grant_lsn`` has had, and the token of the newest grant an attempt was
    # started under: after the first grant or start, an earlier attempt may have written.
    grant_lsn: int | None = None
    grants: int = 0
    started_token: int | None = None

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
        # The entry in flight is gone from the producer: fence its holder off.
        _start_entry_over(state)
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
    if state.grant_lsn == state.next_lsn:
        state.grants += 1
    else:
        state.grant_lsn, state.grants = state.next_lsn, 1
    return Claim(state.next_lsn, state.fencing_token)


def when_to_look_again(state: PartitionState, now_ms: int, orphan_ms: int | None) -> int | None:
    """After a claim was refused: when the live grant may be taken over (its lease's end, or
    sooner when it can become an orphan), or None when there is nothing to claim at all."""
    if state.paused or state.conflicted or state.stopped or not state.has_work:
        return None
    if state.in_flight_lsn is None:
        return None
    again = now_ms if state.lease_expires_ms is None else state.lease_expires_ms
    if (
        orphan_ms is not None
        and state.fencing_token != state.dispatched_token
        and state.claimed_ms is not None
    ):
        again = min(again, state.claimed_ms + orphan_ms)
    return max(again, now_ms)


class GrantCheck(enum.IntEnum):
    """What renewing a grant as an attempt starts under it says."""

    FENCED = 0
    HELD = 1
    # No earlier attempt at this LSN can have written an archive: the LSN's first grant and
    # first start, no failure yet, and the partition has archived before.
    FRESH = 2


def start_attempt(
    state: PartitionState, lsn: int, token: int, now_ms: int, lease_ms: int
) -> GrantCheck:
    if not renew_lease(state, lsn, token, now_ms, lease_ms):
        return GrantCheck.FENCED
    started_before = state.started_token == token
    state.started_token = token
    if (
        not started_before
        and state.grants == 1
        and state.attempts == 0
        and state.acknowledged_lsn is not None
    ):
        return GrantCheck.FRESH
    return GrantCheck.HELD


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
    _start_entry_over(state)
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
            _drop_grant(state)
            return RecordedFailure(state.attempts, stopped=True)
    state.lease_expires_ms = now_ms + hold_ms
    return RecordedFailure(state.attempts)


def release_claim(state: PartitionState, lsn: int, token: int) -> bool:
    """Give up a grant whose task was never sent, so the partition can be claimed at once."""
    if not state.holds(lsn, token):
        return False
    _drop_grant(state)
    return True


def commit_and_claim(
    state: PartitionState, lsn: int, token: int, now_ms: int, lease_ms: int, claim_next: bool
) -> tuple[bool, Claim | None]:
    """``commit_success``, then (with ``claim_next``) the grant of the next entry, as one
    transition: a worker goes straight on with it."""
    if not commit_success(state, lsn, token):
        return False, None
    return True, claim_next_entry(state, now_ms, lease_ms) if claim_next else None


def mark_conflict(state: PartitionState, lsn: int, token: int, error: str) -> bool:
    """Stop the partition: the archive at ``lsn`` holds other bytes and must not be replaced."""
    if not state.holds(lsn, token):
        return False
    state.conflicted = True
    state.last_error = error
    _drop_grant(state)
    return True


@dataclass(frozen=True)
class ReconcileResult:
    changed: bool
    previous_next_lsn: int | None
    # Why nothing changed although the archive is ahead: "conflicted", "stopped", "paused" or
    # "moved".
    refused: str | None = None


def reconcile(
    state: PartitionState | None, run: VerifiedRun
) -> tuple[PartitionState | None, ReconcileResult]:
    """Move a partition past a run of verified archive objects, after its state was lost.

    Never backwards, never past what was not verified, never out of a conflict, a stop or a
    pause;
    holes above the old position (and the one up to the first verified object) become gaps.
    Whoever held the old position is fenced off. Returns the state (created if there was
    none) and what happened."""
    previous = None if state is None else state.next_lsn
    if state is not None and state.conflicted:
        return state, ReconcileResult(False, previous, "conflicted")
    if state is not None and state.stopped:
        return state, ReconcileResult(False, previous, "stopped")
    if state is not None and state.paused:
        return state, ReconcileResult(False, previous, "paused")
    target = run.last + 1
    if state is not None and state.next_lsn >= target:
        return state, ReconcileResult(False, previous)
    if state is not None and state.next_lsn < run.checked_from:
        return state, ReconcileResult(False, previous, "moved")
    if state is None:
        state = PartitionState(next_lsn=target, high_water_mark=run.last)
    else:
        state.high_water_mark = max(state.high_water_mark, run.last)
    holes = list(run.holes)
    if previous is not None and previous < run.first:
        holes.insert(0, Gap(previous, run.first))
    for hole in holes:
        expected = hole.expected if previous is None else max(hole.expected, previous)
        if expected < hole.actual:
            state.gaps.append(Gap(expected, hole.actual))
    state.next_lsn = target
    state.acknowledged_lsn = run.last
    state.fencing_token += 1
    _start_entry_over(state)
    return state, ReconcileResult(True, previous)


# Operators' changes. Each returns why it does not apply, or its result; the texts are the
# ones ``archiver admin`` prints.


def pause(state: PartitionState, paused: bool) -> str | None:
    """Pause or resume; an entry in flight still finishes. Returns why not, or None."""
    if paused and state.paused:
        return "already paused"
    if not paused and not state.paused:
        return "not paused"
    state.paused = paused
    return None


def release_grant(state: PartitionState) -> int | str:
    """Break the lease: the holder is fenced off. Returns the released LSN, or why not."""
    if state.in_flight_lsn is None:
        return "nothing is in flight"
    lsn = state.in_flight_lsn
    state.fencing_token += 1
    _drop_grant(state)
    return lsn


def requeue(state: PartitionState, now_ms: int, lease_ms: int) -> Claim | str:
    """Grant the next entry again now, clearing a conflict or stop mark and the backoff."""
    if state.paused:
        return "paused: resume it first"
    if not state.has_work:
        return "nothing to archive: every announced entry is archived"
    _start_entry_over(state)
    state.conflicted = False
    state.stopped = False
    claim = claim_next_entry(state, now_ms, lease_ms)
    assert claim is not None  # nothing is left that could refuse it
    return claim


def skip_to(state: PartitionState, lsn: int) -> int | str:
    """Give up the entries below ``lsn`` for good: a manual gap. Returns the previous next
    LSN, or why not."""
    if lsn <= state.next_lsn:
        return f"LSN {lsn} is not above the next LSN to archive, {state.next_lsn}"
    if lsn > state.high_water_mark + 1:
        return f"LSN {lsn} is beyond the newest announced entry + 1 ({state.high_water_mark} + 1)"
    previous = state.next_lsn
    state.gaps.append(Gap(previous, lsn))
    state.fencing_token += 1
    state.next_lsn = lsn
    _start_entry_over(state)
    state.conflicted = False
    state.stopped = False
    return previous


def _drop_grant(state: PartitionState) -> None:
    state.in_flight_lsn = None
    state.lease_expires_ms = None


def _start_entry_over(state: PartitionState) -> None:
    """No grant, and no failures counted: for a new entry, or an old one given a clean slate."""
    _drop_grant(state)
    state.attempts = 0
    state.entry_failures = 0
    state.last_error = None
