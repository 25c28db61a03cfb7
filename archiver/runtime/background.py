"""Work the leading scheduler does beside dispatching: catching mirrors up, scrubbing. Each
runs in its own thread, only while its scheduler leads, and never stops the scheduler: a
failure is logged and the duty tried again after a pause."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping

import redis

from archiver.archive.mirroring import MirrorCopier
from archiver.archive.scrub import RateLimit, Scrubber, Stop
from archiver.config import Settings
from archiver.core.object_names import PartitionId
from archiver.errors import ArchiverError
from archiver.observability import metrics
from archiver.sinks import Sink
from archiver.store.replication import ReplicaWait
from archiver.store.state_store import RedisStateStore
from archiver.store.streams import Streams

log = logging.getLogger("archiver.scheduler")


class _WhileLeading:
    """Stops a duty's step when the process stops or its scheduler stops leading."""

    def __init__(self, stop: threading.Event, leading: Callable[[], bool]) -> None:
        self._stop = stop
        self._leading = leading

    def is_set(self) -> bool:
        return self._stop.is_set() or not self._leading()

    def wait(self, timeout: float | None = None) -> bool:
        self._stop.wait(timeout)
        return self.is_set()


class LeaderDuty(threading.Thread):
    def __init__(
        self,
        name: str,
        step: Callable[[Stop], object],
        leading: Callable[[], bool],
        interval: float,
        stop: threading.Event,
    ) -> None:
        super().__init__(name=name, daemon=True)
        self.step = step
        self.leading = leading
        self.interval = interval
        self.stop = stop

    def run(self) -> None:
        while not self.stop.is_set():
            if self.leading():
                try:
                    self.step(_WhileLeading(self.stop, self.leading))
                except (redis.RedisError, ArchiverError, OSError) as exc:
                    log.warning(
                        "%s failed; trying again in %.0fs: %s", self.name, self.interval, exc
                    )
                except Exception:
                    log.exception("%s failed; trying again in %.0fs", self.name, self.interval)
            self.stop.wait(self.interval)


def mirror_copier(
    settings: Settings, store: RedisStateStore, primary: Sink, mirrors: Mapping[str, Sink]
) -> MirrorCopier:
    return MirrorCopier(
        primary,
        mirrors,
        store,
        lease_ms=int(4 * settings.lease_seconds * 1000),
        retry_delay_ms=lambda attempts: int(settings.retry_delay(attempts) * 1000),
        publish_held=held_acknowledgements(settings, store)
        if settings.ack_policy == "all"
        else None,
    )


def held_acknowledgements(
    settings: Settings, store: RedisStateStore
) -> Callable[[PartitionId, int], None]:
    """With ARCHIVER_ACK_POLICY=all, an acknowledgement a worker held back because a mirror
    lacked earlier entries is published once every mirror holds them: the newest LSN both
    acknowledged and on every mirror (and, with ARCHIVER_REDIS_MIN_REPLICAS, on the replicas),
    if it is newer than what was published. Without this an idle partition's would wait for
    the producer to notify again."""
    streams = Streams(store.client, store.keys)
    replicas = ReplicaWait(
        store.client,
        store.keys,
        settings.redis_min_replicas,
        settings.redis_replica_timeout_seconds,
    )
    names = list(settings.mirror_urls)

    def publish(pid: PartitionId, acked: int) -> None:
        (held,) = store.mirrors.held_through(names, [pid])
        if held is None:
            return
        lsn = min(acked, held)
        if replicas.enabled:
            on_replicas = replicas.acknowledged_on_replicas([pid])
            if on_replicas is None:
                return
            lsn = min(lsn, on_replicas[0])
        published = streams.newest_published(pid.storage, pid.partition)
        if lsn > 0 and (published is None or lsn > published):
            log.info(
                "publishing an acknowledgement held back for the mirrors partition=%s lsn=%d",
                pid,
                lsn,
            )
            streams.publish_acks([(pid.storage, pid.partition, lsn)])
            metrics.ACKNOWLEDGEMENTS.inc()

    return publish


def acknowledged_through(store: RedisStateStore) -> Callable[[PartitionId], int | None]:
    return store.records.acknowledged


def mirrored_through(store: RedisStateStore, name: str) -> Callable[[PartitionId], int | None]:
    return lambda pid: store.mirrors.load(name, pid).through


def scrubber(
    settings: Settings,
    store: RedisStateStore,
    sink: Sink,
    name: str,
    bytes_per_second: float | None = None,
    requests_per_second: float | None = None,
) -> Scrubber:
    """The scrubber of the primary (``name`` "primary") or of a mirror."""
    limit = RateLimit(
        settings.scrub_bytes_per_second if bytes_per_second is None else bytes_per_second,
        settings.scrub_requests_per_second if requests_per_second is None else requests_per_second,
    )
    held = acknowledged_through(store) if name == "primary" else mirrored_through(store, name)
    return Scrubber(sink, name, store, held, limit)


def start_leader_duties(
    settings: Settings, store: RedisStateStore, leading: Callable[[], bool], stop: threading.Event
) -> list[LeaderDuty]:
    """The mirror copier (with mirrors configured) and the scrubber of the primary (with
    ARCHIVER_SCRUB_BYTES_PER_SECOND set)."""
    from archiver.sinks import open_mirrors, open_sink

    duties = []
    if settings.sink_url and (settings.mirror_urls or settings.scrub_bytes_per_second):
        primary = open_sink(settings.sink_url, settings.keyring)
        if settings.mirror_urls:
            copier = mirror_copier(
                settings, store, primary, open_mirrors(settings.mirror_urls, settings.keyring)
            )
            duties.append(
                LeaderDuty(
                    "mirror-copier",
                    copier.run_pass,
                    leading,
                    settings.sweep_interval_seconds,
                    stop,
                )
            )
        if settings.scrub_bytes_per_second:
            scrub = scrubber(settings, store, primary, "primary")
            duties.append(
                LeaderDuty(
                    "scrubber",
                    scrub.run_cycle,
                    leading,
                    settings.sweep_interval_seconds,
                    stop,
                )
            )
    for duty in duties:
        duty.start()
    return duties
