"""Every Lua script against the pure core, side by side, on random interleavings.

A hypothesis state machine drives ``RedisStateStore`` (the real scripts, on a real Redis) and
``ModelStateStore`` (the core's transitions) with the same calls, under a clock the test
controls: the scripts read the time from a key the test sets. After every step both must hold
the same state and have given the same answers, and the guarantees are checked on it:
- at most one grant per partition is live, always for its next LSN;
- an acknowledgement never passes an LSN that is neither archived (and verified) nor a
  recorded gap, and never goes back;
- a partition never moves past such an LSN either;
- a conflicted or stopped partition is never claimed.
The stream and leadership scripts are checked against small models of their own.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from archiver.archive.reconcile import holes_in
from archiver.core.notification import Notification
from archiver.core.object_names import PartitionId
from archiver.core.partition import Claim, Gap, PartitionState, VerifiedRun
from archiver.store.client import connect
from archiver.store.keys import RedisKeys
from archiver.store.leadership import LeaderLease
from archiver.store.state_store import RedisStateStore
from archiver.store.streams import Streams
from tests.clock import TEST_CLOCK, Clock
from tests.model_store import ModelStateStore
from tests.store_calls import claim_next_entry, mark_dispatched

STORAGE = "s"
PARTITIONS = (1, 2)
LEASE = 5.0
ORPHAN = 3.0
HOLD = 20.0
STOP_AFTER = 2

lsns = st.integers(1, 12)
partitions = st.sampled_from(PARTITIONS)
picks = st.integers(0, 20)


def _union_covers(gaps: list[Gap], lsn: int) -> bool:
    return any(g.expected <= lsn < g.actual for g in gaps)


ADMIN = {"pause", "release", "requeue", "skip_to"}


class ScriptsAgainstModel(RuleBasedStateMachine):
    url: str = ""

    def __init__(self) -> None:
        super().__init__()
        self.client = connect(self.url)
        self.client.flushall()
        self.clock = Clock(self.client)
        keys = RedisKeys("archiver")
        self.real = RedisStateStore(self.client, keys, script_prelude=TEST_CLOCK)
        self.model = ModelStateStore(self.clock)
        self.streams = Streams(self.client, keys)
        # Every grant ever made, so that stale ones are replayed too.
        self.made: list[tuple[int, Claim]] = []
        # LSNs whose archive object is written and verified, per partition.
        self.archived: dict[int, set[int]] = {p: set() for p in PARTITIONS}
        # Where each partition started, and its acknowledgements so far.
        self.start: dict[int, int] = {}
        self.acked: dict[int, list[int]] = {p: [] for p in PARTITIONS}
        # The acknowledgement stream as published, and the newest LSN published per partition.
        self.published: list[tuple[int, int]] = []
        self.newest_published: dict[int, int] = {}

    # helpers ---------------------------------------------------------------------------------

    def state(self, partition: int) -> PartitionState | None:
        return self.model.load_state(STORAGE, partition)

    def _grant(self, pick: int) -> tuple[int, Claim]:
        """A grant made so far, the newest ones most often: stale ones get replayed too."""
        return (
            self.made[-1 - pick % len(self.made)] if pick < 12 else self.made[pick % len(self.made)]
        )

    def has_grants(self) -> bool:
        return bool(self.made)

    def _note_claim(self, partition: int, claim: Claim | None, stopped_before: bool) -> None:
        if claim is None:
            return
        assert not stopped_before, f"partition {partition} was claimed while stopped"
        self.made.append((partition, claim))

    def _stopped(self, partition: int) -> bool:
        state = self.state(partition)
        return state is not None and (state.conflicted or state.stopped)

    def both(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """Call ``method`` on both stores (on the part of the real one that has it, or the
        tests' one-at-a-time form); their answers must agree."""
        if method == "claim_next_entry":
            real = claim_next_entry(self.real, STORAGE, *args, **kwargs)
        else:
            part = self.real.admin if method in ADMIN else self.real.transitions
            real = getattr(part, method)(PartitionId(STORAGE, args[0]), *args[1:], **kwargs)
        model = getattr(self.model, method)(STORAGE, *args, **kwargs)
        assert real == model, f"{method}{args}: scripts {real!r}, model {model!r}"
        return real

    # the producer and the scheduler ----------------------------------------------------------

    @rule(partition=partitions, low=lsns, high=lsns, fold=st.integers(0, 2))
    def notify(self, partition: int, low: int, high: int, fold: int) -> None:
        low, high = min(low, high), max(low, high)
        first_low = max(1, low - fold)
        stopped = self._stopped(partition)
        real = self.real.transitions.apply_notifications(
            [(STORAGE, partition, low, high)], LEASE, first_lows=[first_low]
        )[0]
        model = self.model.apply_notification(
            STORAGE, partition, low, high, LEASE, first_low=first_low
        )
        assert real == model
        self.start.setdefault(partition, first_low)
        self._note_claim(partition, real.claim, stopped)

    @rule(partition=partitions, orphans=st.booleans())
    def sweep(self, partition: int, orphans: bool) -> None:
        stopped = self._stopped(partition)
        orphan = ORPHAN if orphans else None
        real = self.real.transitions.check_partitions(
            [PartitionId(STORAGE, partition)], LEASE, orphan
        )
        model = self.model.check_partitions([(STORAGE, partition)], LEASE, orphan)
        assert real == model
        self._note_claim(partition, real[0].claim, stopped)

    @rule(partition=partitions)
    def claim(self, partition: int) -> None:
        stopped = self._stopped(partition)
        self._note_claim(partition, self.both("claim_next_entry", partition, LEASE), stopped)

    @precondition(has_grants)
    @rule(pick=picks)
    def mark_dispatched(self, pick: int) -> None:
        partition, grant = self._grant(pick)
        mark_dispatched(self.real, STORAGE, partition, grant.token)
        self.model.mark_dispatched(STORAGE, partition, grant.token)

    @precondition(has_grants)
    @rule(pick=picks)
    def release_claim(self, pick: int) -> None:
        partition, grant = self._grant(pick)
        self.both("release_claim", partition, grant.lsn, grant.token)

    # a worker ----------------------------------------------------------------------------------

    @precondition(has_grants)
    @rule(pick=picks)
    def start_attempt(self, pick: int) -> None:
        partition, grant = self._grant(pick)
        self.both("start_attempt", partition, grant.lsn, grant.token, LEASE, "host:1")

    @precondition(has_grants)
    @rule(pick=picks)
    def renew(self, pick: int) -> None:
        partition, grant = self._grant(pick)
        self.both("renew_lease", partition, grant.lsn, grant.token, LEASE)

    @precondition(has_grants)
    @rule(pick=picks)
    def upload(self, pick: int) -> None:
        """The worker writes and verifies the grant's object (a fenced one may too)."""
        partition, grant = self._grant(pick)
        self.archived[partition].add(grant.lsn)

    @precondition(has_grants)
    @rule(pick=picks, claim_next=st.booleans())
    def archive_and_commit(self, pick: int, claim_next: bool) -> None:
        """The worker's whole attempt: write and verify the object, then commit."""
        partition, grant = self._grant(pick)
        self.archived[partition].add(grant.lsn)
        stopped = self._stopped(partition)
        result = self.both(
            "commit_success", partition, grant.lsn, grant.token, LEASE, claim_next=claim_next
        )
        self._note_claim(partition, result.next_claim, stopped)

    @precondition(has_grants)
    @rule(pick=picks, of_entry=st.booleans())
    def fail(self, pick: int, of_entry: bool) -> None:
        partition, grant = self._grant(pick)
        stop_after = STOP_AFTER if of_entry else None
        self.both(
            "record_failure", partition, grant.lsn, grant.token, "boom", HOLD, stop_after=stop_after
        )

    @precondition(has_grants)
    @rule()
    def entry_keeps_failing(self) -> None:
        """The current grant's entry fails on its own account until the partition stops."""
        partition, grant = self.made[-1]
        for _ in range(STOP_AFTER):
            self.both(
                "record_failure", partition, grant.lsn, grant.token, "bad", HOLD, stop_after=2
            )

    @precondition(has_grants)
    @rule(pick=picks)
    def conflict(self, pick: int) -> None:
        partition, grant = self._grant(pick)
        self.both("mark_conflict", partition, grant.lsn, grant.token, "other bytes")

    # recovery and operators --------------------------------------------------------------------

    @rule(
        partition=partitions,
        ahead=st.one_of(st.none(), st.integers(0, 3)),
        moved=st.integers(-2, 2),
    )
    def reconcile(self, partition: int, ahead: int | None, moved: int) -> None:
        """What ``archiver reconcile`` passes on: the verified objects from the position it
        read. With ``ahead``, one is found that far past it first (written before a state
        loss); with ``moved``, the position moved by that much since it was read."""
        state = self.state(partition)
        position = 1 if state is None else max(1, state.next_lsn - moved)
        if ahead is not None:
            self.archived[partition].add(position + ahead)
        checked_from = 1 if state is None else position
        verified = sorted(lsn for lsn in self.archived[partition] if lsn >= checked_from)
        if not verified:
            return
        run = VerifiedRun(verified[0], verified[-1], checked_from, tuple(holes_in(verified)))
        self.both("reconcile", partition, run)
        self.start.setdefault(partition, verified[0])

    @rule(partition=partitions, lsn=lsns)
    def archived_elsewhere(self, partition: int, lsn: int) -> None:
        """A verified object at an LSN the state has not reached: written before the state
        was lost, say. Only reconcile moves over it."""
        self.archived[partition].add(lsn)

    @rule(partition=partitions)
    def lose_state(self, partition: int) -> None:
        """Redis loses the partition (no AOF): the archive stays, and reconcile rebuilds."""
        self.client.delete(*self.real.keys.partition_keys(PartitionId(STORAGE, partition)))
        self.model.partitions.pop((STORAGE, partition), None)
        self.start.pop(partition, None)
        self.acked[partition] = []

    @rule(partition=partitions, paused=st.booleans())
    def pause(self, partition: int, paused: bool) -> None:
        self.both("pause", partition, "ops", "test", paused=paused)

    @rule(partition=partitions)
    def admin_release(self, partition: int) -> None:
        self.both("release", partition, "ops", "test")

    @rule(partition=partitions)
    def requeue(self, partition: int) -> None:
        result = self.both("requeue", partition, "ops", "test", LEASE)
        if result.claim:
            self.made.append((partition, result.claim))

    @rule(partition=partitions, lsn=lsns)
    def skip_to(self, partition: int, lsn: int) -> None:
        self.both("skip_to", partition, lsn, "ops", "test")

    # the fleet and the clock --------------------------------------------------------------------

    @rule()
    def fleet_failure(self) -> None:
        real = self.real.fleet.failure(1.0, 8.0)
        assert real == self.model.fleet_failure(1.0, 8.0)

    @rule()
    def fleet_success(self) -> None:
        self.real.fleet.success(1.0)
        self.model.fleet_success(1.0)
        assert self.real.fleet.left() == self.model.fleet_pause_left()

    @rule(ms=st.integers(1, 8000))
    def advance_clock(self, ms: int) -> None:
        self.clock.advance(ms)

    # the streams -------------------------------------------------------------------------------

    @rule(partition=partitions, back=st.integers(0, 2))
    def publish_ack(self, partition: int, back: int) -> None:
        """A worker's acknowledgement, or a late one (a retry, a re-acknowledgement)."""
        state = self.state(partition)
        if state is None or state.acknowledged_lsn is None:
            return
        lsn = max(1, state.acknowledged_lsn - back)
        self.streams.publish_acks([(STORAGE, partition, lsn)])
        if lsn >= self.newest_published.get(partition, 0):
            self.newest_published[partition] = lsn
            self.published.append((partition, lsn))
        _, acks = self.streams.read_acks("0", count=100_000)
        assert [(a.partition, a.lsn) for a in acks] == self.published

    # what must hold after every step ----------------------------------------------------------

    @invariant()
    def scripts_and_model_agree(self) -> None:
        for partition in PARTITIONS:
            record = self.real.records.load(PartitionId(STORAGE, partition))
            real = None if record is None else record.state
            assert real == self.state(partition), f"partition {partition}"
        assert self.real.fleet.left() == self.model.fleet_pause_left()

    @invariant()
    def guarantees_hold(self) -> None:
        for partition in PARTITIONS:
            state = self.state(partition)
            if state is None:
                continue
            # At most one live grant, always for the next LSN.
            assert state.in_flight_lsn in (None, state.next_lsn)
            # Nothing below next_lsn (since the start) is neither archived nor a gap: the
            # partition never moved past an unverified entry, and so no acknowledgement did.
            for lsn in range(self.start[partition], state.next_lsn):
                assert lsn in self.archived[partition] or _union_covers(state.gaps, lsn), (
                    f"partition {partition} moved past LSN {lsn}, neither archived nor a gap"
                )
            acked = self.acked[partition]
            if state.acknowledged_lsn is not None:
                assert state.acknowledged_lsn < state.next_lsn
                assert not acked or state.acknowledged_lsn >= acked[-1], "ack went back"
                if not acked or acked[-1] != state.acknowledged_lsn:
                    acked.append(state.acknowledged_lsn)


class NotificationTrim(RuleBasedStateMachine):
    """done_with_notifications.lua: two schedulers read and finish batches in any order (a
    paused leader woke up); the stream keeps exactly what is undelivered or still pending."""

    url: str = ""

    def __init__(self) -> None:
        super().__init__()
        self.client = connect(self.url)
        self.client.flushall()
        self.streams = Streams(self.client, RedisKeys("archiver"))
        self.streams.ensure_scheduler_group()
        self.notifications: list[str] = []
        self.delivered = 0
        self.batches: dict[int, list[str]] = {0: [], 1: []}
        self.pending: set[str] = set()
        self.trimmed = 0

    @rule()
    def publish_notification(self) -> None:
        self.notifications.append(
            self.streams.publish_notification(_notification(len(self.notifications)))
        )

    @rule(reader=st.sampled_from([0, 1]), count=st.integers(1, 3))
    def read_notifications(self, reader: int, count: int) -> None:
        if not self.notifications:
            return
        read = self.streams.read_notifications(pending=False, count=count, block_ms=None)
        expected = self.notifications[self.delivered : self.delivered + count]
        assert [message_id for message_id, _ in read] == expected
        self.delivered += len(expected)
        self.pending.update(expected)
        self.batches[reader] = expected

    @rule(reader=st.sampled_from([0, 1]))
    def done_with_notifications(self, reader: int) -> None:
        batch = self.batches[reader]
        if not batch:
            return
        self.streams.done_with_notifications(batch)
        self.pending.difference_update(batch)
        self.batches[reader] = []
        # Trimmed: everything delivered and handled below the oldest one still pending.
        keep_from = min((self.notifications.index(p) for p in self.pending), default=self.delivered)
        self.trimmed = max(self.trimmed, keep_from)
        entries: Any = self.client.xrange("archiver:notifications")
        assert [str(message_id) for message_id, _ in entries] == self.notifications[self.trimmed :]


class Leadership(RuleBasedStateMachine):
    """hold_leadership.lua and release_leadership.lua against who should hold the lease."""

    url: str = ""

    def __init__(self) -> None:
        super().__init__()
        client = connect(self.url)
        client.flushall()
        keys = RedisKeys("archiver")
        self.leases = {name: LeaderLease(client, keys.leader, name, 3600) for name in ("a", "b")}
        self.leader: str | None = None

    @rule(name=st.sampled_from(["a", "b"]), release=st.booleans())
    def leadership(self, name: str, release: bool) -> None:
        lease = self.leases[name]
        if release:
            lease.release()
            if self.leader == name:
                self.leader = None
        else:
            expected = self.leader in (None, name)
            assert lease.hold() == expected
            if expected:
                self.leader = name


def _notification(n: int) -> Notification:
    return Notification(STORAGE, 100 + n, 1, 1)


def run_machine(machine: type[Any], url: str, examples: int) -> None:
    machine.url = url
    machine.TestCase.settings = settings(
        max_examples=examples,
        stateful_step_count=50,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    machine.TestCase().runTest()


def test_every_partition_script_behaves_like_the_core(redis_url: str) -> None:
    run_machine(ScriptsAgainstModel, redis_url, examples=600)


def test_the_notification_trim_keeps_what_is_not_handled(redis_url: str) -> None:
    run_machine(NotificationTrim, redis_url, examples=100)


def test_leadership_goes_to_one_scheduler_at_a_time(redis_url: str) -> None:
    run_machine(Leadership, redis_url, examples=100)


def test_the_model_covers_every_script() -> None:
    """A new script needs a rule here: the list of scripts is read from the package."""
    from importlib import resources

    names = {
        p.name.removesuffix(".lua") for p in (resources.files("archiver.store") / "lua").iterdir()
    }
    covered = {
        "common",
        "apply_notification",
        "claim_next_entry",
        "renew_lease",
        "commit_success",
        "record_failure",
        "release_claim",
        "mark_conflict",
        "mark_dispatched",
        "reconcile",
        "admin_pause",
        "admin_release",
        "admin_requeue",
        "admin_skip_to",
        "fleet_failure",
        "fleet_success",
        "fleet_pause_left",
        "publish_acks",
        "done_with_notifications",
        "hold_leadership",
        "release_leadership",
        # Held to archiver/core/mirror_progress.py in tests/store/test_mirror_progress.py.
        "mirror_progress",
    }
    assert names == covered
