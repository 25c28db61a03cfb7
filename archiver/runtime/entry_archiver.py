"""One archiving attempt, from grant to acknowledgement, independent of Celery.

The order of steps is what keeps acknowledgements behind the archive: the object is durably
written first, then the partition advances (only if our fencing token is still current), and
only then is the acknowledgement published.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import os
import random
import signal
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from types import FrameType
from typing import Any

import redis

from archiver.archive.catalog import Archive
from archiver.archive.mirroring import mirror_object
from archiver.config import Settings
from archiver.core.object_names import PartitionId, parse_archive_name
from archiver.core.partition import Claim
from archiver.errors import (
    ArchiveConflict,
    AttemptOverran,
    EntryError,
    KeyUnavailable,
    LeaseLost,
    MirrorBehind,
    MirrorConflict,
    NotYet,
    StorageUnavailable,
)
from archiver.observability import metrics
from archiver.observability.logs import entry_fields
from archiver.runtime.archiving import copy_entry
from archiver.runtime.dispatch import Dispatch, dispatch_claim
from archiver.runtime.host_check import SinkWatch
from archiver.sinks import Sink
from archiver.store.replication import ReplicaWait
from archiver.store.state_store import RedisStateStore
from archiver.store.streams import Streams
from archiver.store.transitions import AttemptStart

log = logging.getLogger("archiver.worker")

# Tries at publishing an acknowledgement after its commit, over about ten seconds.
ACK_ATTEMPTS = 6

LogFields = dict[str, Any]


def _holder() -> str:
    """Who runs an attempt, as ``archiver inspect partition`` shows the lease holder."""
    return f"{socket.gethostname()}:{os.getpid()}"


class AttemptOutcome(enum.StrEnum):
    ARCHIVED = "archived"
    # The object was already in the sink; nothing was uploaded.
    SKIPPED = "skipped"
    # Our grant is gone (expired and re-granted, or the partition moved on): we did nothing.
    FENCED = "fenced"
    # Try again after ``delay`` seconds.
    RETRY = "retry"
    # The archive holds other bytes: the partition is stopped for an operator.
    CONFLICT = "conflict"
    # The entry failed too often on its own account: the partition is stopped for an operator.
    STOPPED = "stopped"


@dataclass(frozen=True)
class Attempt:
    outcome: AttemptOutcome
    delay: float = 0.0
    error: str | None = None
    size: int | None = None
    next_claim: Claim | None = None
    # The grant this attempt ran under: a retry must present it again.
    claim: Claim | None = None
    # Entries archived by the task, chained ones included.
    entries: int = 0
    # The grant check for next_claim, already made (see EntryArchiver.run).
    next_started: AttemptStart | None = None
    # Why the sink is unusable for good, when a failed attempt found it so: the worker stops.
    sink_lost: str | None = None


class HeldGrant:
    """The grant of the attempt running now; ``lost`` is set once a renewal is refused."""

    def __init__(
        self, storage: str, partition: int, claim: Claim, renew_at: float, give_up_at: float
    ) -> None:
        self.storage = storage
        self.partition = partition
        self.claim = claim
        self.renew_at = renew_at
        # Past this the grant is no longer renewed: the attempt has overrun its time limit.
        self.give_up_at = give_up_at
        # The thread running the attempt, which an interruption is raised in: only the main
        # thread runs Python's signal handlers.
        self.thread_id = threading.get_ident()
        self.in_main_thread = self.thread_id == threading.main_thread().ident
        self.lost = threading.Event()
        # Set when ``lost`` is because of the time limit, not a refused renewal.
        self.overran = False
        # Held by a renewal or an interruption in flight; once ``retired`` (the attempt is
        # over), neither is sent.
        self.renewing = threading.Lock()
        self.retired = False

    def guard(self, chunks: Iterator[bytes]) -> Iterator[bytes]:
        """Stop streaming as soon as the grant is lost: the write is then aborted."""
        for chunk in chunks:
            if self.lost.is_set():
                if self.overran:
                    raise AttemptOverran("the attempt ran past its time limit while uploading")
                raise LeaseLost("grant lost while uploading")
            yield chunk


class LeaseKeeper:
    """Renews the grants of the attempts running in this process every third of the lease, so
    that a slow upload keeps its own. One thread per process serves every attempt (starting a
    thread per entry would cost more than a small entry's upload), however many run at once:
    one in each process of a prefork pool, several in a threads pool.

    It also bounds each attempt, in place of Celery's time limits: those leave a timer entry
    per task in the worker's main process until the limit would have fired, even after the
    task ended (about 500 bytes a task for half an hour: gigabytes at a busy host's rate).
    An attempt past ``attempt_limit`` stops being renewed, so that its partition goes to
    another worker: it may finish, but its commit is fenced. Where the process runs one
    attempt at a time in its main thread (``ends_overruns``: a prefork pool process), the
    attempt is also interrupted (a signal raises ``AttemptInterrupted`` in it), and
    if it still runs ``grace`` seconds later the process exits: the pool starts another and
    the broker delivers the task again."""

    def __init__(
        self,
        store: RedisStateStore,
        lease: float,
        attempt_limit: float,
        grace: float | None = None,
    ) -> None:
        self._store = store
        self._lease = lease
        self._attempt_limit = attempt_limit
        self._grace = overrun_grace(attempt_limit) if grace is None else grace
        self._interval = lease / 3
        self._lock = threading.Lock()
        self._held: set[HeldGrant] = set()
        self._thread: threading.Thread | None = None
        self.ends_overruns = False
        # How the process ends; replaced in tests that must outlive it.
        self.exit_process = _exit_process

    @contextlib.contextmanager
    def keep(self, storage: str, partition: int, claim: Claim) -> Iterator[HeldGrant]:
        now = time.monotonic()
        held = HeldGrant(storage, partition, claim, now + self._interval, now + self._attempt_limit)
        with self._lock:
            self._held.add(held)
            if self._thread is None or not self._thread.is_alive():  # none yet, or forked
                self._thread = threading.Thread(target=self._run, name="lease-keeper", daemon=True)
                self._thread.start()
        try:
            yield held
        finally:
            with self._lock:
                self._held.discard(held)
            # A renewal or an interruption begun before the attempt ended must not land
            # after what follows it (a failure's hold, a commit): wait for it, and let none
            # begin.
            with held.renewing:
                held.retired = True
                if held.in_main_thread:
                    _INTERRUPTION.wanted = False

    def _run(self) -> None:
        while True:
            # Often while an interruption waits for the attempt to leave code it must not
            # land in (see _raise_interrupted).
            time.sleep(0.05 if _INTERRUPTION.wanted else min(self._interval / 4, 1.0))
            try:
                self._tick()
            except Exception:  # never the end of the keeper: it serves every attempt
                log.exception("lease keeper failed; going on")

    def _tick(self) -> None:
        now = time.monotonic()
        with self._lock:
            running = list(self._held)
        for held in running:
            if held.overran:
                if not self._may_end(held):
                    continue
                if now >= held.give_up_at + self._grace:
                    self._end_process(held)
                elif _INTERRUPTION.wanted:  # not taken yet: the attempt was somewhere unsafe
                    self._interrupt(held)
            elif now >= held.give_up_at:
                self._give_up(held)
            elif now >= held.renew_at:
                self._renew(held)

    def _give_up(self, held: HeldGrant) -> None:
        log.error(
            "attempt past its time limit; its grant is no longer renewed",
            extra=entry_fields(held.storage, held.partition, held.claim.lsn),
        )
        held.overran = True
        held.lost.set()
        held.renew_at = float("inf")
        if self._may_end(held):
            log.error(
                "interrupting the attempt; the process ends if it still runs in %.0fs",
                self._grace,
                extra=entry_fields(held.storage, held.partition, held.claim.lsn),
            )
            self._interrupt(held)

    def _may_end(self, held: HeldGrant) -> bool:
        """An attempt of a threads pool shares its process with others: it is only fenced."""
        return self.ends_overruns and held.in_main_thread

    def end_overruns(self) -> None:
        """From here on, interrupt this process's overrun attempts and end the process if
        they go on. Called in the main thread of a process that runs one attempt at a time
        there (a prefork pool process), after the pool set up its signals."""
        signal.signal(INTERRUPT_SIGNAL, _raise_interrupted)
        self.ends_overruns = True

    def _interrupt(self, held: HeldGrant) -> None:
        # The handler raises in the main thread, and a blocking call it waits in returns to
        # take it. Without the handler the signal would kill the process. Nothing is logged
        # from here on: an interruption may leave a lock of logging's held (see
        # _raise_interrupted), and the keeper must not wait on it.
        if signal.getsignal(INTERRUPT_SIGNAL) is not _raise_interrupted:
            return
        with held.renewing:
            if not held.retired:
                _INTERRUPTION.wanted = True
                signal.pthread_kill(held.thread_id, INTERRUPT_SIGNAL)

    def _end_process(self, held: HeldGrant) -> None:
        with held.renewing:
            if held.retired:
                return
            message = (
                f"attempt still running {self._grace:.0f}s past its time limit; ending this "
                f"pool process (storage={held.storage} partition={held.partition} "
                f"lsn={held.claim.lsn})\n"
            )
            with contextlib.suppress(OSError):
                os.write(2, message.encode())
            self.exit_process()

    def _renew(self, held: HeldGrant) -> None:
        with held.renewing:
            if held.retired:
                return
            try:
                renewed = self._store.transitions.renew_lease(
                    PartitionId(held.storage, held.partition),
                    held.claim.lsn,
                    held.claim.token,
                    self._lease,
                )
                failure = None
            except Exception as exc:  # a Redis blip: try again at the next tick
                failure = exc
        if failure is not None:
            log.warning("lease renewal failed; retrying: %s", failure)
            return
        if not renewed:
            held.lost.set()
        held.renew_at = time.monotonic() + self._interval


class AttemptInterrupted(BaseException):
    """Raised in an attempt past its time limit. Not an ``Exception``, so that no library's
    catch-all (botocore retries whatever a request raises) takes it for a failed request."""


# Celery's prefork pool sends it for a soft time limit. The archiver sets none, and one that
# arrives anyway (a task message's own time limit) is ignored by the handler below.
INTERRUPT_SIGNAL = signal.SIGUSR1


class _Interruption:
    """Whether the keeper wants the attempt interrupted and it has not been yet."""

    wanted = False


_INTERRUPTION = _Interruption()

# Code an exception must not be raised in: it takes a lock and enters its ``try`` in two
# steps (logging's handlers), or it sends a request and reads its reply in two (redis-py: a
# connection back in the pool with a reply unread would hand it to the next command).
_UNSAFE_MODULES = ("logging", "redis", "threading", "kombu", "celery", "billiard")


def _raise_interrupted(_signum: int, frame: FrameType | None) -> None:
    if not _INTERRUPTION.wanted:
        return
    # From where the signal landed up to the attempt (what called the attempt does not
    # matter: the exception is caught there).
    while frame is not None and frame.f_code is not _ATTEMPT_CODE:
        module = str(frame.f_globals.get("__name__", ""))
        if module.split(".", 1)[0] in _UNSAFE_MODULES:
            return  # the keeper sends it again at its next tick
        frame = frame.f_back
    _INTERRUPTION.wanted = False
    raise AttemptInterrupted


def overrun_grace(attempt_limit: float) -> float:
    """How long an interrupted attempt has to end before its process does: a tenth of the
    limit, from 2 to 30 seconds."""
    return min(30.0, max(2.0, attempt_limit / 10))


def _exit_process() -> None:
    # No flushing of logging's handlers: each takes a lock an interruption may have left held.
    os._exit(EXIT_OVERRUN)


# The exit status of a pool process ended by an overrun attempt (EX_SOFTWARE).
EXIT_OVERRUN = 70


class EntryArchiver:
    def __init__(
        self,
        settings: Settings,
        store: RedisStateStore,
        streams: Streams,
        sink: Sink,
        dispatch: Dispatch,
        mirrors: Mapping[str, Sink] | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.streams = streams
        self.sink = sink
        # Copied to before each acknowledgement only with ARCHIVER_ACK_POLICY=all.
        self.mirrors = dict(mirrors or {}) if settings.ack_policy == "all" else {}
        self._probed_mirrors: set[str] = set()
        self.dispatch = dispatch
        self.keeper = LeaseKeeper(store, settings.lease_seconds, settings.task_time_limit_seconds)
        self.replicas = ReplicaWait(
            store.client,
            store.keys,
            settings.redis_min_replicas,
            settings.redis_replica_timeout_seconds,
        )
        self.sink_watch = SinkWatch(sink)

    def run_chain(self, storage: str, partition: int, lsn: int, token: int) -> Attempt:
        """Archive ``lsn``, then go on with the partition's next entries while each commit
        grants the next one: still one entry in flight, but no trip through the broker per
        entry. Bounded by ARCHIVER_CHAIN_ENTRIES and ARCHIVER_CHAIN_SECONDS, so that other
        partitions waiting in the queue get their turn; the rest goes back to the queue."""
        deadline = time.monotonic() + self.settings.chain_seconds
        claim = Claim(lsn, token)
        started: AttemptStart | None = None
        done = 0
        while True:
            go_on = done + 1 < self.settings.chain_entries and time.monotonic() < deadline
            attempt = self.run(storage, partition, claim.lsn, claim.token, started, go_on)
            if attempt.outcome in (AttemptOutcome.ARCHIVED, AttemptOutcome.SKIPPED):
                done += 1
            attempt = replace(attempt, entries=done)
            if attempt.next_claim is None:
                return attempt
            if not go_on:
                self._send(storage, partition, attempt.next_claim)
                return attempt
            claim, started = attempt.next_claim, attempt.next_started

    def run(
        self,
        storage: str,
        partition: int,
        lsn: int,
        token: int,
        started: AttemptStart | None = None,
        go_on: bool = False,
    ) -> Attempt:
        """One attempt at ``lsn``. ``started`` is the grant check already made for it (in the
        previous entry's last round trip); with ``go_on``, this attempt makes that check for
        the next entry, which the caller then runs instead of sending it to the queue."""
        fields = entry_fields(storage, partition, lsn, token=token)
        lease = self.settings.lease_seconds
        claim = Claim(lsn, token)
        if started is None:
            started = self.store.transitions.start_attempt(
                PartitionId(storage, partition), lsn, token, lease, _holder()
            )
        if not started.held:
            return self._fenced("before archiving", fields)
        if (pause := started.pause) > 0:
            # The fleet is backing off after a failure elsewhere: wait our turn, keeping the
            # grant. A little jitter keeps the waiting tasks from all returning at once.
            delay = pause * random.uniform(1.0, 1.2)  # noqa: S311 - not for security
            self.store.transitions.renew_lease(
                PartitionId(storage, partition), lsn, token, delay + lease
            )
            return Attempt(AttemptOutcome.RETRY, delay=delay, claim=claim)

        begun = time.monotonic()
        try:
            with self.keeper.keep(storage, partition, claim) as held:
                # Inside the time limit too: a storage on a hung mount can block here.
                root = self.settings.storage_root(storage)
                if not root.is_dir():
                    raise StorageUnavailable(f"storage root {root} is not a directory on this host")
                archived = copy_entry(
                    self.sink,
                    storage,
                    root,
                    partition,
                    lsn,
                    self.settings.compression,
                    guard=held.guard,
                    fresh=started.fresh,
                    acknowledged_through=lambda: self.streams.newest_published(storage, partition),
                    encrypt=self.settings.keyring.encrypting,
                )
                previous = self._copy_to_mirrors(storage, partition, lsn, archived.key)
        except ArchiveConflict as exc:
            return self._conflict(storage, partition, claim, exc, fields)
        except AttemptInterrupted:  # by the lease keeper, at the time limit
            overran = AttemptOverran("the attempt ran past its time limit")
            return self._failed(storage, partition, claim, overran, fields)
        except Exception as exc:
            return self._failed(storage, partition, claim, exc, fields)

        commit = self.store.transitions.commit_success(
            PartitionId(storage, partition),
            lsn,
            token,
            self.settings.dispatch_timeout_seconds,
            replicas=self.replicas,
        )
        if not commit.committed:
            return self._fenced("after archiving; not acknowledging", fields)
        mirrored = self._mirrors_hold(storage, partition, lsn, previous, fields)
        if not commit.replicated:
            log.warning(
                "acknowledgement held back: the commit is on fewer than %d replicas; the "
                "partition's next acknowledgement covers it",
                self.replicas.min_replicas,
                extra=fields,
            )
        next_started = self._after_commit(
            storage,
            partition,
            lsn,
            fields,
            commit.next_claim if go_on else None,
            acknowledge=commit.replicated and mirrored,
        )
        seconds = time.monotonic() - begun
        outcome = AttemptOutcome.ARCHIVED if archived.uploaded else AttemptOutcome.SKIPPED
        metrics.ENTRIES_ARCHIVED.labels(
            storage, "success" if archived.uploaded else "skipped"
        ).inc()
        metrics.ARCHIVE_DURATION.labels(storage).observe(seconds)
        if archived.uploaded and archived.size is not None:
            metrics.ARCHIVED_BYTES.labels(storage).inc(archived.size)
        log.info(
            outcome.value,
            extra={
                **fields,
                "key": archived.key,
                "bytes": archived.size,
                "seconds": f"{seconds:.3f}",
            },
        )
        return Attempt(
            outcome,
            size=archived.size,
            next_claim=commit.next_claim,
            next_started=next_started,
            claim=claim,
        )

    def _copy_to_mirrors(self, storage: str, partition: int, lsn: int, key: str) -> int | None:
        """With ARCHIVER_ACK_POLICY=all, the archive goes to every mirror before it is
        acknowledged; returns the partition's acknowledged LSN before this commit."""
        if not self.mirrors:
            return None
        pid = PartitionId(storage, partition)
        previous = self.store.records.acknowledged(pid)
        name_parts = parse_archive_name(key)
        assert name_parts is not None, key
        archive = Archive(lsn, key, 0, name_parts.compression, name_parts.encrypted)
        for name, mirror in self.mirrors.items():
            stopped = self.store.mirrors.load(name, pid).conflict
            if stopped is not None:
                raise MirrorBehind(f"mirror {name!r} is stopped on this partition: {stopped}")
            self._probe_mirror(name, mirror)
            try:
                if mirror_object(self.sink, mirror, archive):
                    metrics.MIRROR_COPIED.labels(name).inc()
            except MirrorConflict as exc:
                self.store.mirrors.stop(name, pid, str(exc))
                raise MirrorBehind(f"mirror {name!r}: {exc}") from exc
        return previous

    def _probe_mirror(self, name: str, mirror: Sink) -> None:
        """Once per process: a mirror must refuse a second create of a name, as the primary
        must, or a late copy could replace an archive there."""
        if name not in self._probed_mirrors:
            mirror.probe()
            self._probed_mirrors.add(name)

    def _mirrors_hold(
        self, storage: str, partition: int, lsn: int, previous: int | None, fields: LogFields
    ) -> bool:
        """After the commit, with ARCHIVER_ACK_POLICY=all: move each mirror's progress over the
        entry where it held everything before it, and tell whether every mirror now holds
        everything through ``lsn``. If not (it missed earlier entries: state rebuilt by
        reconcile, a mirror added late, the partition's first entries), the acknowledgement is
        held back: the mirror copier publishes it once it caught the mirror up."""
        if not self.mirrors:
            return True
        pid = PartitionId(storage, partition)
        try:
            for name in self.mirrors:
                self.store.mirrors.extend(name, pid, lsn, previous)
            (held,) = self.store.mirrors.held_through(list(self.mirrors), [pid])
        except redis.RedisError as exc:
            log.warning(
                "acknowledgement held back: mirror progress unreadable: %s", exc, extra=fields
            )
            return False
        if held is None or held < lsn:
            log.warning(
                "acknowledgement held back: a mirror holds this partition only through %s; "
                "it is acknowledged once the mirror catches up",
                held,
                extra=fields,
            )
            return False
        return True

    def _send(self, storage: str, partition: int, claim: Claim) -> None:
        try:
            dispatch_claim(self.store, self.dispatch, storage, partition, claim)
        except Exception:
            # The claim is left for the sweep, which takes unsent claims over.
            log.exception(
                "could not send the next task", extra=entry_fields(storage, partition, claim.lsn)
            )

    def _failed(
        self, storage: str, partition: int, claim: Claim, exc: Exception, fields: LogFields
    ) -> Attempt:
        """A failed attempt: retried after the partition's backoff. A failure of the object
        store also pauses the fleet, since it usually fails everyone; a failure of the entry
        (``EntryError``) or of this host's disk does not, and enough failures of the entry
        itself (not one that mends itself, ``NotYet``: a missing entry may yet appear) stop
        the partition."""
        error = f"{type(exc).__name__}: {exc}"
        lease = self.settings.lease_seconds
        hold = self.settings.retry_max_seconds + lease
        of_entry = isinstance(exc, EntryError) and not isinstance(exc, NotYet)
        failure = self.store.transitions.record_failure(
            PartitionId(storage, partition),
            claim.lsn,
            claim.token,
            error,
            hold,
            stop_after=self.settings.entry_failures_before_stop if of_entry else None,
        )
        if failure is None:
            return self._fenced(f"after a failed attempt ({error})", fields)
        metrics.ENTRIES_ARCHIVED.labels(storage, "fail").inc()
        if failure.stopped:
            self.store.counters.add("stopped")
            log.error(
                "entry failed %d times; partition stopped for an operator",
                failure.attempts,
                extra={**fields, "error": error},
            )
            return Attempt(AttemptOutcome.STOPPED, error=error)
        self.store.counters.add("retries")
        metrics.RETRIES.labels(storage).inc()
        pause = 0.0
        sink_lost = None
        if not isinstance(exc, (EntryError, StorageUnavailable, KeyUnavailable)):
            pause = self.store.fleet.failure(
                self.settings.retry_min_seconds, self.settings.retry_max_seconds
            )
            sink_lost = self.sink_watch.lost()
        attempts = failure.attempts
        delay = max(self.settings.retry_delay(attempts), pause)
        self.store.transitions.renew_lease(
            PartitionId(storage, partition), claim.lsn, claim.token, delay + lease
        )
        log.error(
            "archiving failed; retrying in %.3fs (attempt %d)",
            delay,
            attempts,
            extra={**fields, "error": error},
        )
        if sink_lost is not None:
            log.error(
                "the sink %s is no longer usable: %s; this worker stops",
                self.sink.describe(),
                sink_lost,
                extra=fields,
            )
        return Attempt(
            AttemptOutcome.RETRY, delay=delay, error=error, claim=claim, sink_lost=sink_lost
        )

    def _fenced(self, when: str, fields: LogFields) -> Attempt:
        """Our grant was taken over (it expired) or the partition moved on: do nothing more."""
        log.warning("fenced off %s: grant is no longer current", when, extra=fields)
        self.store.counters.add("fenced")
        metrics.FENCED.labels(fields["storage"]).inc()
        return Attempt(AttemptOutcome.FENCED)

    def _conflict(
        self,
        storage: str,
        partition: int,
        claim: Claim,
        exc: ArchiveConflict,
        fields: LogFields,
    ) -> Attempt:
        error = f"ArchiveConflict: {exc}"
        if not self.store.transitions.mark_conflict(
            PartitionId(storage, partition), claim.lsn, claim.token, error
        ):
            return self._fenced("after finding a conflicting archive", fields)
        self.store.counters.add("conflicts")
        metrics.ENTRIES_ARCHIVED.labels(storage, "fail").inc()
        log.error("archive conflict; partition stopped", extra={**fields, "error": str(exc)})
        return Attempt(AttemptOutcome.CONFLICT, error=error)

    def _queue_after_commit(
        self,
        pipe: redis.client.Pipeline,
        storage: str,
        partition: int,
        lsn: int,
        next_claim: Claim | None,
        acknowledge: bool,
    ) -> None:
        if acknowledge:
            self.streams.publish_ack(storage, partition, lsn, pipe)
        self.store.fleet.success(self.settings.retry_min_seconds, pipe)
        if next_claim is not None:
            self.store.transitions.queue_start_attempt(
                pipe,
                PartitionId(storage, partition),
                next_claim.lsn,
                next_claim.token,
                self.settings.lease_seconds,
                _holder(),
            )

    def _after_commit(
        self,
        storage: str,
        partition: int,
        lsn: int,
        fields: LogFields,
        next_claim: Claim | None,
        acknowledge: bool = True,
    ) -> AttemptStart | None:
        """Publish the acknowledgement of a committed LSN, and relieve the fleet's backoff; with
        ``next_claim``, also start the attempt at it: one round trip for all of it.

        The commit cannot be undone and a retry of this task would be fenced off, so Redis
        trouble is ridden out here."""
        for attempt in range(1, ACK_ATTEMPTS + 1):
            try:
                replies = self.store.scripts.pipelined(
                    lambda pipe: self._queue_after_commit(
                        pipe, storage, partition, lsn, next_claim, acknowledge
                    )
                )
                if acknowledge:
                    metrics.ACKNOWLEDGEMENTS.inc()
                return None if next_claim is None else self.store.transitions.started(replies[-2:])
            except redis.RedisError:
                if attempt == ACK_ATTEMPTS:
                    # The next notification for this partition acknowledges it again.
                    log.exception("could not publish acknowledgement", extra=fields)
                    return None
                time.sleep(min(0.1 * 2**attempt, 5.0))
        return None


# Where an interruption is caught (see _raise_interrupted).
_ATTEMPT_CODE = EntryArchiver.run.__code__
