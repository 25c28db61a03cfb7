"""Property tests: random interleavings of notifications, claims, uploads, commits, failures,
lease expiries and lost entries against the pure state machine, with its invariants checked
after every step."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from archiver.core.partition import (
    Claim,
    PartitionState,
    apply_notification,
    claim_next_entry,
    commit_success,
    new_partition,
    record_failure,
    renew_lease,
)

LEASE = 1000


@dataclass
class Worker:
    claim: Claim
    uploaded: bool = False


class PartitionMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.state: PartitionState | None = None
        self.now = 0
        self.low = 1  # the producer's oldest entry on disk
        self.high = 0  # the producer's newest entry
        self.archived: set[int] = set()  # objects in the bucket
        self.workers: list[Worker] = []
        self.last_ack: int | None = None
        self.start: int | None = None

    # the producer ------------------------------------------------------------------------

    @rule(count=st.integers(1, 4))
    def append_and_notify(self, count: int) -> None:
        self.high += count
        self._notify()

    @rule(lost=st.integers(1, 5))
    def lose_entries_and_notify(self, lost: int) -> None:
        """Entries vanish before they were archived: the next notification is a gap."""
        self.high += lost + 1
        self.low = min(self.low + lost, self.high)
        self._notify()

    @rule()
    def prune_acknowledged_and_notify(self) -> None:
        if self.state and self.state.acknowledged_lsn:
            self.low = max(self.low, min(self.state.acknowledged_lsn + 1, self.high))
        if self.high:
            self._notify()

    def _notify(self) -> None:
        if self.state is None:
            self.state = new_partition(self.low, self.high)
            self.start = self.low
        else:
            apply_notification(self.state, self.low, self.high)

    # the fleet ---------------------------------------------------------------------------

    @precondition(lambda self: self.state is not None)
    @rule()
    def claim(self) -> None:
        assert self.state is not None
        claim = claim_next_entry(self.state, self.now, LEASE)
        if claim:
            self.workers.append(Worker(claim))

    @precondition(lambda self: bool(self.workers))
    @rule(data=st.data())
    def upload(self, data: st.DataObject) -> None:
        worker = data.draw(st.sampled_from(self.workers))
        # Uploads only what the producer still has.
        if self.low <= worker.claim.lsn <= self.high:
            self.archived.add(worker.claim.lsn)
            worker.uploaded = True

    @precondition(lambda self: any(w.uploaded for w in self.workers))
    @rule(data=st.data())
    def commit(self, data: st.DataObject) -> None:
        assert self.state is not None
        worker = data.draw(st.sampled_from([w for w in self.workers if w.uploaded]))
        commit_success(self.state, worker.claim.lsn, worker.claim.token)
        self.workers.remove(worker)

    @precondition(lambda self: bool(self.workers))
    @rule(data=st.data())
    def fail(self, data: st.DataObject) -> None:
        assert self.state is not None
        worker = data.draw(st.sampled_from(self.workers))
        record_failure(self.state, worker.claim.lsn, worker.claim.token, "boom", self.now, LEASE)
        self.workers.remove(worker)

    @precondition(lambda self: bool(self.workers))
    @rule(data=st.data())
    def renew(self, data: st.DataObject) -> None:
        assert self.state is not None
        worker = data.draw(st.sampled_from(self.workers))
        renew_lease(self.state, worker.claim.lsn, worker.claim.token, self.now, LEASE)

    @rule(ms=st.sampled_from([1, LEASE // 2, LEASE, 3 * LEASE]))
    def time_passes(self, ms: int) -> None:
        """Leases run out; paused workers keep their stale grants and may act later."""
        self.now += ms

    # invariants --------------------------------------------------------------------------

    @invariant()
    def at_most_one_current_grant(self) -> None:
        if self.state is not None:
            current = [w for w in self.workers if self.state.holds(w.claim.lsn, w.claim.token)]
            assert len(current) <= 1
            if self.state.in_flight_lsn is not None:
                assert self.state.in_flight_lsn == self.state.next_lsn

    @invariant()
    def acknowledgements_only_move_forward(self) -> None:
        ack = self.state.acknowledged_lsn if self.state else None
        if self.last_ack is not None:
            assert ack is not None
            assert ack >= self.last_ack
        self.last_ack = ack

    @invariant()
    def never_ahead_of_the_archive_and_never_skipping_without_a_gap(self) -> None:
        if self.state is None or self.start is None:
            return
        skipped: set[int] = set()
        for gap in self.state.gaps:
            skipped.update(range(gap.expected, gap.actual))
        for lsn in range(self.start, self.state.next_lsn):
            assert lsn in self.archived or lsn in skipped, lsn
        if self.state.acknowledged_lsn is not None:
            assert self.state.acknowledged_lsn in self.archived
            assert self.state.acknowledged_lsn == self.state.next_lsn - 1 or any(
                g.expected == self.state.acknowledged_lsn + 1 for g in self.state.gaps
            )


PartitionMachine.TestCase.settings = settings(
    max_examples=300, stateful_step_count=60, deadline=None
)
TestPartitionMachine = PartitionMachine.TestCase
