"""The pure per-partition state machine."""

from archiver.core.partition import (
    Claim,
    Gap,
    NotificationOutcome,
    PartitionState,
    apply_notification,
    claim_next_entry,
    commit_success,
    mark_dispatched,
    new_partition,
    record_failure,
    renew_lease,
)

LEASE = 1000


def test_unknown_partition_starts_at_low() -> None:
    state = new_partition(11, 13)
    assert (state.next_lsn, state.high_water_mark) == (11, 13)
    assert claim_next_entry(state, 0, LEASE) == Claim(11, 1)


def test_nothing_to_do_when_next_is_above_high_reacknowledges_last_ack() -> None:
    state = PartitionState(next_lsn=4, high_water_mark=3, acknowledged_lsn=3)
    applied = apply_notification(state, 1, 3)
    assert applied.outcome is NotificationOutcome.STALE
    assert applied.reacknowledge == 3
    assert claim_next_entry(state, 0, LEASE) is None


def test_gap_is_recorded_and_skipped_and_fences_the_holder() -> None:
    state = new_partition(1, 3)
    claim = claim_next_entry(state, 0, LEASE)
    assert claim is not None
    applied = apply_notification(state, 11, 13)
    assert applied.outcome is NotificationOutcome.GAP
    assert applied.gap == Gap(1, 11)
    assert state.gaps == [Gap(1, 11)]
    assert state.next_lsn == 11
    assert not commit_success(state, claim.lsn, claim.token)
    assert claim_next_entry(state, 0, LEASE) == Claim(11, 2)


def test_high_water_mark_never_moves_backwards() -> None:
    state = new_partition(1, 10)
    apply_notification(state, 1, 5)
    assert state.high_water_mark == 10


def test_one_entry_in_flight_until_its_lease_expires() -> None:
    state = new_partition(1, 5)
    first = claim_next_entry(state, 0, LEASE)
    assert first == Claim(1, 1)
    assert claim_next_entry(state, LEASE - 1, LEASE) is None
    taken_over = claim_next_entry(state, LEASE, LEASE)
    assert taken_over == Claim(1, 2)
    # The first holder is fenced off: it can neither renew, fail nor commit.
    assert not renew_lease(state, 1, 1, LEASE, LEASE)
    assert not record_failure(state, 1, 1, "late", LEASE, LEASE)
    assert not commit_success(state, 1, 1)
    assert not state.acknowledged_lsn
    assert commit_success(state, 1, 2)
    assert (state.acknowledged_lsn, state.next_lsn) == (1, 2)


def test_failure_keeps_the_grant_and_counts_attempts() -> None:
    state = new_partition(1, 1)
    claim = claim_next_entry(state, 0, LEASE)
    assert claim is not None
    assert record_failure(state, 1, claim.token, "boom", 10, 5000)
    assert (state.attempts, state.last_error, state.lease_expires_ms) == (1, "boom", 5010)
    assert claim_next_entry(state, 4000, LEASE) is None
    assert commit_success(state, 1, claim.token)
    assert (state.attempts, state.last_error) == (0, None)


def test_paused_partition_is_not_claimed() -> None:
    state = new_partition(1, 1)
    state.paused = True
    assert claim_next_entry(state, 0, LEASE) is None


def test_a_grant_never_marked_as_sent_is_an_orphan_once_old_enough() -> None:
    state = new_partition(1, 5)
    orphan = claim_next_entry(state, 0, 60_000)
    assert orphan is not None
    assert claim_next_entry(state, 4_999, 60_000, orphan_ms=5_000) is None
    taken = claim_next_entry(state, 5_000, 60_000, orphan_ms=5_000)
    assert taken == Claim(1, orphan.token + 1)
    mark_dispatched(state, taken.token)
    assert claim_next_entry(state, 50_000, 60_000, orphan_ms=5_000) is None  # sent: it waits
