"""The scrubber: re-reading the archive at a bounded rate to find damage before a restore does.

It walks every storage, partition and object in name order, a cycle at a time, and checks each
object the way ``verify`` does (its checksum, then decryption and tar structure), and each
partition for holes below the LSN the sink should hold through (the acknowledged LSN on the
primary, the mirror's progress on a mirror) that the partition's state does not account for.
Its place is kept in Redis after every object, so a restart, or a new leading scheduler, goes
on where the last one stopped.

Finding a problem changes nothing in the archive: it is recorded (``archiver inspect scrub``),
logged and counted for the alerts.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from archiver.archive.catalog import Archive, partition_archives
from archiver.archive.checks import check_archive
from archiver.archive.reconcile import holes_in, partitions_in, storages_in
from archiver.archive.verify import PartitionReport
from archiver.core.object_names import PartitionId
from archiver.errors import SinkError
from archiver.observability import metrics
from archiver.sinks import Sink

log = logging.getLogger("archiver.scrub")


class Stop(Protocol):
    """What tells a long pass to stop: a ``threading.Event``, or the like."""

    def is_set(self) -> bool: ...

    def wait(self, timeout: float | None = None) -> bool: ...


FINDING_KINDS = ("corrupt", "missing", "unopened", "unreadable")
# Passes that may stop at one object the store fails to read before it is a finding.
UNREADABLE_AFTER = 3
# Findings kept in Redis at most (the newest replace nothing: beyond this, only counted).
MAX_FINDINGS = 10_000


class RateLimit:
    """Token buckets for bytes and requests a second (0: no limit on that one). A second's
    worth may be spent at once, so one large object is not held back for ever."""

    def __init__(
        self,
        bytes_per_second: float,
        requests_per_second: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rates = (bytes_per_second, requests_per_second)
        self.clock = clock
        self._tokens = [bytes_per_second, requests_per_second]
        self._at = clock()

    def _refill(self) -> None:
        now = self.clock()
        for i, rate in enumerate(self.rates):
            self._tokens[i] = min(rate, self._tokens[i] + (now - self._at) * rate)
        self._at = now

    def wait_for(self, size: int, requests: int, stop: Stop) -> bool:
        """Take ``size`` bytes and ``requests`` requests, waiting until they are there; False
        if ``stop`` was set meanwhile."""
        wanted = (float(size), float(requests))
        while True:
            self._refill()
            waits = [
                0.0 if rate == 0 else max(0.0, (min(want, rate) - tokens) / rate)
                for want, rate, tokens in zip(wanted, self.rates, self._tokens, strict=True)
            ]
            # Within a microsecond: rounding, not a reason to wait.
            if max(waits) <= 1e-6:
                for i, rate in enumerate(self.rates):
                    if rate:
                        self._tokens[i] -= wanted[i]
                return True
            if stop.wait(min(max(waits), 1.0)):
                return False


@dataclass
class ScrubPosition:
    """Where the scrubber is, and how far it got: kept in one Redis hash per sink."""

    storage: str | None = None
    partition: int | None = None
    # The newest LSN of the partition checked in this cycle.
    lsn: int | None = None
    cycle: int = 0
    cycle_started_ms: int | None = None
    # When the cycle before this one started: every object was checked since then.
    previous_cycle_started_ms: int | None = None
    objects: int = 0
    bytes: int = 0
    # The object the store failed to read, and how many passes in a row it stopped at it.
    failing_key: str | None = None
    failures: int = 0

    def to_fields(self) -> dict[str, str]:
        """Every field, an empty string for none: written whole, in one command."""
        return {k: "" if v is None else str(v) for k, v in vars(self).items()}

    @classmethod
    def from_fields(cls, raw: dict[Any, Any]) -> ScrubPosition:
        fields = {_text(k): _text(v) for k, v in raw.items() if _text(v) != ""}
        numbers = ("partition", "lsn", "cycle", "cycle_started_ms", "previous_cycle_started_ms")
        values: dict[str, Any] = {k: int(fields[k]) for k in numbers if k in fields}
        values.update({k: int(fields[k]) for k in ("objects", "bytes", "failures") if k in fields})
        for name in ("storage", "failing_key"):
            if name in fields:
                values[name] = fields[name]
        return cls(**values)

    def oldest_unscrubbed_ms(self) -> int | None:
        """Since when the least recently checked object has gone unchecked."""
        return self.previous_cycle_started_ms or self.cycle_started_ms


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass(frozen=True)
class Finding:
    kind: str  # corrupt, missing, unopened
    subject: str  # the object's key, or "<storage>/<partition> LSN a-b"
    detail: str
    found_ms: int

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "subject": self.subject,
            "detail": self.detail,
            "found_ms": self.found_ms,
        }


@dataclass
class CycleSummary:
    objects: int = 0
    bytes: int = 0
    findings: list[Finding] = field(default_factory=list)
    completed: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "objects": self.objects,
            "bytes": self.bytes,
            "completed": self.completed,
            "findings": [f.to_json() for f in self.findings],
        }


class ScrubState:
    """The scrubber's place and its findings in Redis."""

    def __init__(self, store: Any, sink_name: str) -> None:
        self.store = store
        self.client = store.client
        base = f"{store.keys.prefix}:scrub:{sink_name}"
        self.position_key = base
        self.findings_key = base + ":findings"

    def load(self) -> ScrubPosition:
        return ScrubPosition.from_fields(self.client.hgetall(self.position_key))

    def save(self, position: ScrubPosition) -> None:
        self.client.hset(self.position_key, mapping=position.to_fields())

    def record(self, finding: Finding) -> None:
        if self.client.hlen(self.findings_key) < MAX_FINDINGS or self.client.hexists(
            self.findings_key, finding.subject
        ):
            self.client.hset(self.findings_key, finding.subject, json.dumps(finding.to_json()))

    def findings(self) -> list[Finding]:
        found = []
        for raw in self.client.hvals(self.findings_key):
            data = json.loads(raw)
            found.append(Finding(data["kind"], data["subject"], data["detail"], data["found_ms"]))
        return sorted(found, key=lambda f: f.subject)

    def clear_finding(self, subject: str) -> bool:
        return bool(self.client.hdel(self.findings_key, subject))


# The newest LSN a partition's objects should reach in the sink scrubbed, or None.
HeldThrough = Callable[[PartitionId], int | None]


class Scrubber:
    def __init__(
        self,
        sink: Sink,
        sink_name: str,
        store: Any,
        held_through: HeldThrough,
        limit: RateLimit,
    ) -> None:
        self.sink = sink
        self.sink_name = sink_name
        self.store = store
        self.state = ScrubState(store, sink_name)
        self.held_through = held_through
        self.limit = limit
        for kind in FINDING_KINDS:  # shown at 0 from the start, so the first finding counts
            metrics.SCRUB_FINDINGS.labels(sink_name, kind)

    def _now_ms(self) -> int:
        return int(self.store.server_time_ms())

    def run_cycle(
        self, stop: Stop, on_object: Callable[[Archive], None] = lambda _a: None
    ) -> CycleSummary:
        """Scrub from where the last run stopped to the end of the archive; the cycle ends
        there and the next one starts at the beginning."""
        summary = CycleSummary()
        position = self.state.load()
        now = self._now_ms()
        if position.cycle_started_ms is None:
            position.cycle_started_ms = now
            position.cycle = position.cycle or 1
            self.state.save(position)
        for storage in sorted(storages_in(self.sink)):
            if position.storage is not None and storage < position.storage:
                continue
            for partition in sorted(partitions_in(self.sink, storage)):
                if position.storage == storage and partition < (position.partition or 0):
                    continue  # done earlier in this cycle
                if stop.is_set():
                    return summary
                if not self._partition(storage, partition, position, summary, stop, on_object):
                    return summary
        # The cycle is complete: the next one starts from the beginning.
        position = ScrubPosition(
            cycle=position.cycle + 1,
            cycle_started_ms=self._now_ms(),
            previous_cycle_started_ms=position.cycle_started_ms,
        )
        self.state.save(position)
        metrics.SCRUB_CYCLES.labels(self.sink_name).inc()
        self._export_age(position)
        summary.completed = True
        log.info(
            "scrub cycle complete sink=%s objects=%d bytes=%d findings=%d",
            self.sink_name,
            summary.objects,
            summary.bytes,
            len(summary.findings),
        )
        return summary

    def _partition(
        self,
        storage: str,
        partition: int,
        position: ScrubPosition,
        summary: CycleSummary,
        stop: Stop,
        on_object: Callable[[Archive], None],
    ) -> bool:
        pid = PartitionId(storage, partition)
        if not self.limit.wait_for(0, 1, stop):  # the listing
            return False
        # Read before the listing: what is acknowledged after it is not looked for in it.
        through = self.held_through(pid)
        archives = partition_archives(self.sink, storage, partition)
        resuming = position.storage == storage and position.partition == partition
        if not resuming or position.lsn is None:
            self._look_for_holes(pid, through, archives, summary)
        for archive in archives:
            if resuming and position.lsn is not None and archive.lsn <= position.lsn:
                continue
            if stop.is_set() or not self.limit.wait_for(archive.size, 1, stop):
                return False
            # A store failure says nothing of the object: the pass stops, and goes on from
            # here next time; one that fails there pass after pass is recorded and passed.
            try:
                found = check_archive(self.sink, archive)
            except SinkError as exc:
                if not self._unreadable(position, archive, exc, summary):
                    raise
                found = None
            summary.objects += 1
            summary.bytes += archive.size
            metrics.SCRUBBED_OBJECTS.labels(self.sink_name).inc()
            metrics.SCRUBBED_BYTES.labels(self.sink_name).inc(archive.size)
            if found is not None and found.problem is not None:
                self._found(summary, "corrupt", archive.key, found.problem)
            elif found is not None and found.unopened is not None:
                self._found(summary, "unopened", archive.key, found.unopened)
            position.failing_key, position.failures = None, 0
            position.storage, position.partition, position.lsn = storage, partition, archive.lsn
            position.objects += 1
            position.bytes += archive.size
            self.state.save(position)
            self._export_age(position)
            on_object(archive)
        # On to the next partition: its objects are all to check.
        position.storage, position.partition, position.lsn = storage, partition + 1, None
        self.state.save(position)
        return True

    def _unreadable(
        self, position: ScrubPosition, archive: Archive, exc: SinkError, summary: CycleSummary
    ) -> bool:
        """Count a failed read of ``archive``; True once it is to be recorded and passed."""
        if position.failing_key == archive.key:
            position.failures += 1
        else:
            position.failing_key, position.failures = archive.key, 1
        self.state.save(position)
        if position.failures < UNREADABLE_AFTER:
            return False
        self._found(
            summary,
            "unreadable",
            archive.key,
            f"the store failed {position.failures} times in a row: {exc}",
        )
        return True

    def _look_for_holes(
        self, pid: PartitionId, through: int | None, archives: list[Archive], summary: CycleSummary
    ) -> None:
        if through is None:
            return
        lsns = sorted({a.lsn for a in archives if a.lsn <= through})
        if not lsns and archives and self.sink_name == "primary":
            return  # pruned below objects not acknowledged yet (a mirror is never pruned)
        if not lsns:
            self._found(
                summary,
                "missing",
                f"{pid} LSN 1-{through}",
                f"the sink holds no object of {pid}, which should reach LSN {through}",
            )
            return
        report = PartitionReport(pid.storage, pid.partition)
        # The LSN past ``through`` stands in for the end, so objects lost at the top show too.
        report.gaps = holes_in([*lsns, through + 1])
        report.check_gaps_against(self.store.records.load(pid))
        if not report.state_checked:
            return
        for gap in report.unrecorded:
            self._found(
                summary,
                "missing",
                f"{pid} LSN {gap.expected}-{gap.actual - 1}",
                f"no object, and no gap recorded, below LSN {through}, which the sink should hold",
            )

    def _found(self, summary: CycleSummary, kind: str, subject: str, detail: str) -> None:
        finding = Finding(kind, subject, detail, self._now_ms())
        summary.findings.append(finding)
        self.state.record(finding)
        metrics.SCRUB_FINDINGS.labels(self.sink_name, kind).inc()
        log.error(
            "scrub found a problem sink=%s kind=%s %s: %s", self.sink_name, kind, subject, detail
        )

    def _export_age(self, position: ScrubPosition) -> None:
        since = position.oldest_unscrubbed_ms()
        if since is not None:
            age = max(0.0, (self._now_ms() - since) / 1000)
            metrics.SCRUB_OLDEST_UNSCRUBBED_AGE.labels(self.sink_name).set(age)
