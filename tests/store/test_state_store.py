"""The state store on a real Redis: exact LSNs, leases on the server's clock, the fleet pause,
capped gaps, bulk listing. ``tests/store/test_scripts_model.py`` checks every script against the
core's transitions."""

from __future__ import annotations

import pytest

from archiver.core.lsn import MAX_LSN
from archiver.core.object_names import PartitionId
from archiver.core.partition import (
    Claim,
    Gap,
    VerifiedRun,
)
from archiver.store.state_store import RedisStateStore
from tests.clock import Clock
from tests.store_calls import apply_notification, claim_next_entry, mark_dispatched
from tests.support import wait_for

HOUR = 3600.0


def test_lsns_near_2_to_the_64_are_exact(store: RedisStateStore) -> None:
    """Lua numbers are doubles; the scripts must not round LSNs above 2**53."""
    low = MAX_LSN - 2
    result = apply_notification(store, "s", 1, low, MAX_LSN, HOUR)
    claim = result.claim
    assert claim is not None
    assert claim.lsn == low
    for expected in (low + 1, MAX_LSN):
        commit = store.transitions.commit_success(PartitionId("s", 1), claim.lsn, claim.token, HOUR)
        assert commit.next_claim is not None
        claim = commit.next_claim
        assert claim.lsn == expected
    assert (
        store.transitions.commit_success(
            PartitionId("s", 1), claim.lsn, claim.token, HOUR
        ).next_claim
        is None
    )
    record = store.records.load(PartitionId("s", 1))
    assert record is not None
    assert record.state.acknowledged_lsn == MAX_LSN
    assert record.state.next_lsn == MAX_LSN + 1


def test_an_expired_grant_is_taken_over_and_its_holder_fenced(
    clocked_store: RedisStateStore, clock: Clock
) -> None:
    store = clocked_store
    first = apply_notification(store, "s", 1, 1, 3, lease_seconds=2).claim
    assert first is not None
    clock.advance(1999)
    assert claim_next_entry(store, "s", 1, HOUR) is None  # still live
    clock.advance(1)  # the lease runs out on the scripts' clock; the grant is handed over
    second = claim_next_entry(store, "s", 1, HOUR)
    assert second == Claim(1, first.token + 1)
    assert not store.transitions.commit_success(
        PartitionId("s", 1), first.lsn, first.token, HOUR
    ).committed
    assert store.transitions.commit_success(
        PartitionId("s", 1), second.lsn, second.token, HOUR
    ).committed


def test_fleet_pause_doubles_on_failure_and_relaxes_on_success(
    clocked_store: RedisStateStore, clock: Clock
) -> None:
    store = clocked_store
    assert store.fleet.left() == 0
    assert store.fleet.failure(1, 4) == pytest.approx(1)
    # A failure during the pause joins it instead of doubling it again.
    clock.advance(400)
    assert store.fleet.failure(1, 4) == pytest.approx(0.6)
    assert store.fleet.left() == pytest.approx(0.6)

    def pause_over() -> None:
        clock.advance(int(store.fleet.left() * 1000))
        assert store.fleet.left() == 0

    pause_over()
    assert store.fleet.failure(1, 4) == pytest.approx(2)
    pause_over()
    assert store.fleet.failure(1, 4) == pytest.approx(4)
    pause_over()
    assert store.fleet.failure(1, 4) == pytest.approx(4)  # capped
    store.fleet.success(1)
    store.fleet.success(1)
    store.fleet.success(1)
    pause_over()
    assert store.fleet.failure(1, 4) == pytest.approx(1)


def test_gaps_are_capped_but_counted(store: RedisStateStore) -> None:
    apply_notification(store, "s", 1, 1, 1, HOUR)
    for i in range(105):
        apply_notification(store, "s", 1, 10 * (i + 1), 10 * (i + 1), HOUR)
    record = store.records.load(PartitionId("s", 1))
    assert record is not None
    assert record.gaps_total == 105
    assert len(record.state.gaps) == 100
    assert record.state.gaps[-1].actual == 1050


def test_partitions_are_listed_through_the_index(store: RedisStateStore) -> None:
    for partition in range(1, 1201):
        apply_notification(store, "a" if partition % 2 else "b", partition, 1, 1, HOUR)
    assert len(list(store.records.all())) == 1200
    only_b = list(store.records.all("b"))
    assert len(only_b) == 600
    assert {r.storage for r in only_b} == {"b"}


def test_reconcile_records_a_hole_that_straddles_the_old_position(store: RedisStateStore) -> None:
    claim = apply_notification(store, "s", 1, 1, 4, HOUR).claim
    for _ in range(4):
        assert claim is not None
        claim = store.transitions.commit_success(
            PartitionId("s", 1), claim.lsn, claim.token, HOUR
        ).next_claim
    record = store.records.load(PartitionId("s", 1))
    assert record is not None
    assert (record.state.next_lsn, record.state.acknowledged_lsn) == (5, 4)
    # The archive holds 1-3 and 8: the hole 4-7 straddles next=5.
    # Reconcile verified every object from the old position on: only 8.
    result = store.transitions.reconcile(
        PartitionId("s", 1), VerifiedRun(first=8, last=8, checked_from=5)
    )
    assert (result.changed, result.previous_next_lsn) == (True, 5)
    record = store.records.load(PartitionId("s", 1))
    assert record is not None
    assert record.state.gaps == [Gap(5, 8)]
    assert (record.state.next_lsn, record.state.acknowledged_lsn) == (9, 8)


def test_a_late_mark_of_an_old_grant_does_not_hide_an_orphan(store: RedisStateStore) -> None:
    old = apply_notification(store, "s", 1, 1, 2, lease_seconds=0.001).claim
    assert old is not None
    new = wait_for(lambda: claim_next_entry(store, "s", 1, HOUR), timeout=5, what="a takeover")
    mark_dispatched(store, "s", 1, old.token)  # arrives after the newer grant
    record = store.records.load(PartitionId("s", 1))
    assert record is not None
    assert record.state.dispatched_token is None
    mark_dispatched(store, "s", 1, new.token)
    record = store.records.load(PartitionId("s", 1))
    assert record is not None
    assert record.state.dispatched_token == new.token


def test_scripts_lost_by_the_server_are_loaded_again(store: RedisStateStore) -> None:
    """After a restart or SCRIPT FLUSH, direct calls and pipelines both carry on."""
    store.client.script_flush()
    first = apply_notification(store, "s", 1, 1, 2, HOUR).claim  # a pipeline
    assert first is not None
    store.client.script_flush()
    assert store.transitions.commit_success(
        PartitionId("s", 1), first.lsn, first.token, HOUR
    ).committed  # a direct call
    store.client.script_flush()
    started = store.transitions.start_attempt(PartitionId("s", 1), 2, first.token + 1, HOUR, "me:1")
    assert (started.held, started.pause) == (True, 0.0)


def test_an_attempt_is_fresh_only_if_nothing_can_have_written_before(
    store: RedisStateStore,
) -> None:
    """Fresh: the LSN's first grant, first start, no failure, and not the partition's first
    entry. A fresh attempt does not look for an existing archive before writing."""
    first = apply_notification(store, "s", 1, 1, 3, HOUR).claim
    assert first is not None
    # The partition's first entry: state may have been lost before, so never fresh.
    assert not store.transitions.start_attempt(
        PartitionId("s", 1), 1, first.token, HOUR, "me:1"
    ).fresh
    second = store.transitions.commit_success(PartitionId("s", 1), 1, first.token, HOUR).next_claim
    assert second is not None
    assert store.transitions.start_attempt(PartitionId("s", 1), 2, second.token, HOUR, "me:1").fresh
    # The same grant started again (a redelivered task): its first run may have written.
    assert not store.transitions.start_attempt(
        PartitionId("s", 1), 2, second.token, HOUR, "me:2"
    ).fresh
    # A failure, then a new grant of the same LSN: not fresh either.
    assert store.transitions.release_claim(PartitionId("s", 1), 2, second.token)
    regrant = claim_next_entry(store, "s", 1, HOUR)
    assert regrant is not None
    assert regrant.lsn == 2
    assert not store.transitions.start_attempt(
        PartitionId("s", 1), 2, regrant.token, HOUR, "me:3"
    ).fresh
    third = store.transitions.commit_success(PartitionId("s", 1), 2, regrant.token, HOUR).next_claim
    assert third is not None
    store.transitions.record_failure(PartitionId("s", 1), 3, third.token, "boom", HOUR)
    assert not store.transitions.start_attempt(
        PartitionId("s", 1), 3, third.token, HOUR, "me:4"
    ).fresh
    # A renewal without a holder is not a start, and says nothing about freshness.
    assert store.transitions.renew_lease(PartitionId("s", 1), 3, third.token, HOUR)


def test_reconcile_leaves_a_partition_paused_meanwhile_alone(store: RedisStateStore) -> None:
    # Paused after reconcile read the state, before it moved it: the pause holds.
    apply_notification(store, "s", 1, 1, 3, HOUR)
    assert store.admin.pause(PartitionId("s", 1), "ops", "looking at the bucket").done
    result = store.transitions.reconcile(
        PartitionId("s", 1), VerifiedRun(first=1, last=3, checked_from=1)
    )
    assert (result.changed, result.refused) == (False, "paused")
    record = store.records.load(PartitionId("s", 1))
    assert record is not None
    assert (record.state.next_lsn, record.state.acknowledged_lsn) == (1, None)
