"""One archiving attempt in-process (``archiver.runtime.entry_archiver``), against a real Redis."""

from __future__ import annotations

import contextlib

from archiver.core.object_names import PartitionId
from archiver.runtime.entry_archiver import LeaseKeeper
from archiver.store.state_store import RedisStateStore
from tests.store_calls import apply_notification, claim_next_entry
from tests.support import wait_for


def test_the_lease_keeper_renews_a_long_attempt_and_notices_when_it_is_fenced(
    store: RedisStateStore,
) -> None:
    # Renewed every third of it: long enough that a loaded machine's scheduling delays
    # cannot let it lapse between renewals.
    lease = 3.0
    claim = apply_notification(store, "s", 1, 1, 1, lease).claim
    assert claim is not None
    keeper = LeaseKeeper(store, lease, attempt_limit=3600)
    first = store.records.load(PartitionId("s", 1))
    assert first is not None
    assert first.state.lease_expires_ms is not None
    with keeper.keep("s", 1, claim) as held:
        # Well past the first lease, the grant is still ours: it was renewed.
        wait_for(
            lambda: store.server_time_ms() > first.state.lease_expires_ms + 1000,  # type: ignore[operator]
            timeout=10,
            what="the first lease to be long over",
        )
        assert claim_next_entry(store, "s", 1, lease) is None
        assert not held.lost.is_set()
        # An operator breaks the lease: the keeper's next renewal is refused.
        assert store.admin.release(PartitionId("s", 1), "ops", "test").done
        wait_for(held.lost.is_set, timeout=10, what="the keeper to see the grant lost")
    # Between attempts the same thread renews nothing.
    second = claim_next_entry(store, "s", 1, 3600)
    assert second is not None
    with keeper.keep("s", 1, second) as held_again:
        assert not held_again.lost.is_set()


def test_the_lease_keeper_renews_every_attempt_running_in_its_process(
    store: RedisStateStore,
) -> None:
    # A threads pool runs several attempts in one process, under one keeper.
    lease = 3.0
    claims = [apply_notification(store, "s", p, 1, 1, lease).claim for p in (1, 2, 3)]
    keeper = LeaseKeeper(store, lease, attempt_limit=3600)
    first = store.records.load(PartitionId("s", 1))
    assert first is not None
    assert first.state.lease_expires_ms is not None
    with contextlib.ExitStack() as running:
        held = [
            running.enter_context(keeper.keep("s", p, claim))
            for p, claim in zip((1, 2, 3), claims, strict=True)
            if claim is not None
        ]
        assert len(held) == 3
        wait_for(
            lambda: store.server_time_ms() > first.state.lease_expires_ms + 1000,  # type: ignore[operator]
            timeout=10,
            what="the first leases to be long over",
        )
        for partition in (1, 2, 3):
            assert claim_next_entry(store, "s", partition, lease) is None, partition
        # One fenced: only its attempt hears of it.
        assert store.admin.release(PartitionId("s", 2), "ops", "test").done
        wait_for(held[1].lost.is_set, timeout=10, what="the keeper to see grant 2 lost")
        assert not held[0].lost.is_set()
        assert not held[2].lost.is_set()


def test_an_attempt_past_its_time_limit_is_no_longer_renewed(store: RedisStateStore) -> None:
    # No pool kills it (Celery's threads pool has no hard time limit): its grant lapses, so
    # the partition goes to another worker, and the attempt hears it has lost its grant.
    lease = 3.0
    claim = apply_notification(store, "s", 1, 1, 1, lease).claim
    assert claim is not None
    keeper = LeaseKeeper(store, lease, attempt_limit=1.5)
    with keeper.keep("s", 1, claim) as held:
        wait_for(held.lost.is_set, timeout=10, what="the keeper to give the attempt up")
        taken_over = wait_for(
            lambda: claim_next_entry(store, "s", 1, lease), timeout=10, what="a new grant"
        )
        assert taken_over.token > claim.token
