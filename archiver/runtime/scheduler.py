"""The scheduler: applies watermark notifications to partition state and dispatches work.

It never tracks partitions in memory: Redis holds all state, so a restarted (or another)
scheduler carries on where the last one stopped. Notifications are read through a consumer
group and deleted only after they were applied, so a crash re-reads them; applying one twice
changes nothing.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from dataclasses import dataclass, replace

import redis
from kombu.exceptions import OperationalError

from archiver.config import Settings
from archiver.core.notification import Notification, RawFields, parse_notification, readable_fields
from archiver.core.object_names import PartitionId
from archiver.core.partition import NotificationOutcome
from archiver.errors import DispatchFailed, InvalidNotification
from archiver.observability import metrics
from archiver.observability.logs import entry_fields
from archiver.runtime.dispatch import Dispatch, dispatch_claims
from archiver.store.leadership import LeaderLease
from archiver.store.replication import ReplicaWait
from archiver.store.state_store import RedisStateStore
from archiver.store.streams import Streams

log = logging.getLogger("archiver.scheduler")


@dataclass
class Folded:
    """The notifications of one partition in a batch, as one."""

    notification: Notification
    # Where the partition starts if it is unknown: the first notification's low.
    first_low: int
    count: int = 1


BATCH = 500
BLOCK_MS = 1000
# A sweep looks at no more than this many batches of due partitions before notifications get
# their turn again.
SWEEP_BATCHES = 20
# How often (in sweeps) a pass adding the whole partition index to the due index starts.
RESYNC_EVERY_SWEEPS = 30


class Scheduler:
    def __init__(
        self,
        settings: Settings,
        store: RedisStateStore,
        streams: Streams,
        dispatch: Dispatch,
        leader: LeaderLease | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.streams = streams
        self.dispatch = dispatch
        self.replicas = ReplicaWait(
            store.client,
            store.keys,
            settings.redis_min_replicas,
            settings.redis_replica_timeout_seconds,
        )
        # None: act without asking (a single scheduler, or tests).
        self.leader = leader
        # With storages configured, notifications for any other storage are rejected.
        self.known_storages = frozenset(settings.storages) or None
        # True while this scheduler acts (read by the state metrics).
        self.leading = False
        # Redis's clock minus ours, in ms: due times are kept on Redis's clock.
        self._clock_offset_ms = 0
        self._sweeps = 0
        # Where the pass adding the partition index to the due index is; None between passes.
        self._resync_cursor: int | None = None
        self.more_due = False

    def _hold_leadership(self) -> bool:
        return self.leader is None or self.leader.hold()

    def _still_leading(self) -> bool:
        return self.leader is None or self.leader.still_valid()

    def run(self, stop: threading.Event) -> None:
        identity = self.leader.identity if self.leader else "-"
        log.info("scheduler started identity=%s", identity)
        failures = 0
        standby_poll = min(1.0, self.settings.leader_ttl_seconds / 3)
        while not stop.is_set():
            try:
                if not self._hold_leadership():
                    if self.leading:
                        log.warning("lost leadership; standing by identity=%s", identity)
                        self.leading = False
                    stop.wait(standby_poll)
                    continue
                if not self.leading:
                    log.info("became leader identity=%s", identity)
                    self.store.counters.add("leader_changes")
                    self.leading = True
                self._serve(stop)
                failures = 0
            except (redis.RedisError, OperationalError, DispatchFailed) as exc:
                failures += 1
                wait = min(0.5 * 2**failures, 30.0)
                log.error("scheduler lost its connection; retrying in %.1fs: %s", wait, exc)
                stop.wait(wait)
        if self.leader is not None and self.leading:
            # Hand over at once rather than after the lease runs out.
            with contextlib.suppress(redis.RedisError):
                self.leader.release()
        self.leading = False
        log.info("scheduler stopped")

    def _serve(self, stop: threading.Event) -> None:
        """Act while leadership lasts; return when it is lost or on stop."""
        renew_every = self.settings.leader_ttl_seconds / 3
        next_renewal = time.monotonic() + renew_every
        self.streams.ensure_scheduler_group()
        self._learn_clock()
        # A new leader starts a pass adding the whole partition index to the due index.
        self._sweeps = 0
        self._resync_cursor = None
        # First what an earlier leader read but did not finish: all read as one consumer.
        if not self.recover_pending(stop):
            return
        next_sweep = 0.0
        while not stop.is_set():
            if time.monotonic() >= next_renewal:
                if not self._hold_leadership():
                    return
                next_renewal = time.monotonic() + renew_every
            if not self._still_leading():
                return
            if time.monotonic() >= next_sweep:
                # A paused leader that woke up may have read a batch and died before applying
                # it: left pending, it would wait for the next change of leader.
                if not self.recover_pending(stop):
                    return
                self.sweep()
                # More due than one sweep looks at: go on right after the next read.
                wait = 0.0 if self.more_due else self.settings.sweep_interval_seconds
                next_sweep = time.monotonic() + wait
            batch = self.streams.read_notifications(pending=False, count=BATCH, block_ms=BLOCK_MS)
            self.handle(batch)

    def recover_pending(self, stop: threading.Event) -> bool:
        """Apply notifications read (by any scheduler: all read as one consumer) and never
        finished. Between batches this scheduler holds none itself. False when it should
        stop serving."""
        while batch := self.streams.read_notifications(pending=True, count=BATCH, block_ms=None):
            if stop.is_set() or not self._still_leading():
                return False
            self.handle(batch)
        return True

    def handle(self, messages: list[tuple[str, RawFields]]) -> None:
        """Apply a batch of notifications, then delete them. Notifications for the same
        partition are folded into one first: only the newest watermarks matter."""
        folded: dict[tuple[str, int], Folded] = {}
        for _message_id, fields in messages:
            try:
                n = parse_notification(fields, self.known_storages)
            except InvalidNotification as exc:
                readable = readable_fields(fields)
                log.error("rejected notification: %s fields=%r", exc, _shown(readable))
                self.streams.reject_notification(readable, str(exc))
                metrics.NOTIFICATIONS.labels(result="rejected").inc()
                continue
            key = (n.storage, n.partition)
            if (earlier := folded.get(key)) is None:
                folded[key] = Folded(n, first_low=n.low)
                continue
            # The producer's watermarks only grow; applying both in turn ends the same.
            latest = earlier.notification
            earlier.notification = replace(
                n, low=max(latest.low, n.low), high=max(latest.high, n.high)
            )
            earlier.count += 1
        self.apply(list(folded.values()))
        self.streams.done_with_notifications([message_id for message_id, _ in messages])

    def apply(self, batch: list[Folded]) -> None:
        """Apply notifications (one per partition) in one round trip, re-acknowledge what is
        already archived, and send the tasks of the entries claimed."""
        results = self.store.transitions.apply_notifications(
            [(f.notification.storage, f.notification.partition, f.notification.low,
              f.notification.high) for f in batch],
            self.settings.dispatch_timeout_seconds,
            first_lows=[f.first_low for f in batch],
        )  # fmt: skip
        reacknowledge = []
        claims = []
        working = []
        for f, result in zip(batch, results, strict=True):
            n = f.notification
            if result.gap is not None:
                log.error(
                    "gap in log sequence: entries %d..%d were deleted before they were archived",
                    result.gap.expected,
                    result.gap.actual - 1,
                    extra=entry_fields(n.storage, n.partition, result.gap.expected),
                )
            metrics.NOTIFICATIONS.labels(result=result.outcome.value).inc(f.count)
            if result.outcome is NotificationOutcome.STALE and result.reacknowledge is not None:
                # Everything announced is archived, but the producer may not know: tell it again.
                reacknowledge.append((n.storage, n.partition, result.reacknowledge))
            if result.claim is not None:
                claims.append((n.storage, n.partition, result.claim))
            elif result.outcome is not NotificationOutcome.STALE:
                working.append(PartitionId(n.storage, n.partition))
        # Before sending anything: a claim whose task is never sent is looked at again soon.
        self.store.due.mark_after_apply(
            claimed=[PartitionId(s, p) for s, p, _ in claims],
            working=working,
            at_ms=self._server_now_ms() + _ms(self.settings.orphan_grace_seconds),
        )
        if reacknowledge and self.replicas.enabled:
            reacknowledge = self._replicated(reacknowledge)
        if reacknowledge and self.settings.ack_policy == "all":
            reacknowledge = self._mirrored(reacknowledge)
        if reacknowledge:
            self.streams.publish_acks(reacknowledge)
            metrics.ACKNOWLEDGEMENTS.inc(len(reacknowledge))
        if dispatch_claims(self.store, self.dispatch, claims) < len(claims):
            # Leave the notifications pending: they are applied again once sending works.
            raise DispatchFailed(f"could not dispatch {len(claims)} claimed entries")

    def _mirrored(self, acks: list[tuple[str, int, int]]) -> list[tuple[str, int, int]]:
        """With ARCHIVER_ACK_POLICY=all, no LSN above what every mirror holds (after a
        reconcile, the partition's state may be ahead of a mirror)."""
        held = self.store.mirrors.held_through(
            list(self.settings.mirror_urls), [PartitionId(s, p) for s, p, _ in acks]
        )
        return [
            (s, p, min(lsn, h)) for (s, p, lsn), h in zip(acks, held, strict=True) if h is not None
        ]

    def _replicated(self, acks: list[tuple[str, int, int]]) -> list[tuple[str, int, int]]:
        """What of ``acks`` the replicas hold: none if they could not confirm in time, and no
        LSN above what the server holds now (it may be a new one since they were read)."""
        held = self.replicas.acknowledged_on_replicas([PartitionId(s, p) for s, p, _ in acks])
        if held is None:
            log.warning(
                "acknowledgements held back: the state is on fewer than %d replicas",
                self.replicas.min_replicas,
            )
            return []
        return [(s, p, min(lsn, h)) for (s, p, lsn), h in zip(acks, held, strict=True) if h > 0]

    def sweep(self) -> int:
        """Look at the partitions due (see ``archiver.store.due_index``): claim and send those
        with work and no live grant (lost task messages, dead workers' expired grants, claims
        whose sender died), note when to look again at the others. Returns how many tasks
        were sent; ``more_due`` tells whether more were due than one sweep looks at."""
        now = self._learn_clock()
        if self._sweeps % RESYNC_EVERY_SWEEPS == 0 and self._resync_cursor is None:
            self._resync_cursor = 0
        self._sweeps += 1
        if self._resync_cursor is not None:
            self._resync_step(now)
        orphan_ms = _ms(self.settings.orphan_grace_seconds)
        dispatched = 0
        self.more_due = False
        for _ in range(SWEEP_BATCHES):
            due = self.store.due.due(now, BATCH)
            checks = self.store.transitions.check_partitions(
                due, self.settings.dispatch_timeout_seconds, self.settings.orphan_grace_seconds
            )
            later: dict[PartitionId, int] = {}
            done: list[PartitionId] = []
            claims = []
            for check in checks:
                if check.claim is not None:
                    claims.append((check.pid.storage, check.pid.partition, check.claim))
                    later[check.pid] = now + orphan_ms
                elif check.again_ms is not None:
                    later[check.pid] = max(check.again_ms, now + 1)
                else:
                    done.append(check.pid)
            self.store.due.reschedule(later, done)
            for storage, partition, claim in claims:
                log.info(
                    "re-dispatching partition with no live grant",
                    extra=entry_fields(storage, partition, claim.lsn),
                )
            if claims:
                self.store.counters.add("redispatched", len(claims))
                dispatched += dispatch_claims(self.store, self.dispatch, claims)
            if len(due) < BATCH:
                return dispatched
        self.more_due = True
        return dispatched

    def _resync_step(self, now_ms: int) -> None:
        """Add the partitions the due index lacks, to be looked at now: it repairs additions
        that were lost, and fills the index after an upgrade. A bounded part per sweep, so a
        new leader with a million partitions does not stop reading notifications meanwhile."""
        for _ in range(SWEEP_BATCHES):
            cursor, members = self.store.records.scan_partition_ids(self._resync_cursor or 0, BATCH)
            self.store.due.mark(members, now_ms, only_new=True)
            if cursor == 0:
                self._resync_cursor = None
                return
            self._resync_cursor = cursor

    def _learn_clock(self) -> int:
        now = self.store.server_time_ms()
        self._clock_offset_ms = now - round(time.time() * 1000)
        return now

    def _server_now_ms(self) -> int:
        return round(time.time() * 1000) + self._clock_offset_ms


def _ms(seconds: float) -> int:
    return round(seconds * 1000)


def _shown(fields: dict[str, str]) -> dict[str, str]:
    """Fields as they may be logged: bounded, and with control characters escaped."""
    return {
        k[:64].encode("unicode_escape").decode(): v[:128].encode("unicode_escape").decode()
        for k, v in list(fields.items())[:16]
    }
