"""What a worker host checks before it consumes anything: that it can do the work it would
take. A host that cannot read a storage's entries, or write to the sink, would otherwise fail
every task it took, and each of its partitions would wait out a timeout before another host
tried."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from archiver.config import Settings
from archiver.errors import HostUnusable, SinkError, SinkUnusable, WriteOnceUnsupported
from archiver.sinks import Sink, open_sink


@dataclass(frozen=True)
class StorageCheck:
    # Storages whose root is a directory here.
    usable: list[str] = field(default_factory=list)
    # (storage, why not) for the others.
    refused: list[tuple[str, str]] = field(default_factory=list)


def check_storage_roots(settings: Settings, storages: list[str]) -> StorageCheck:
    check = StorageCheck()
    for storage in storages:
        root = settings.storage_root(storage)
        if root.is_dir():
            check.usable.append(storage)
        elif root.exists():
            check.refused.append((storage, f"storage root {root} is not a directory"))
        else:
            check.refused.append((storage, f"storage root {root} does not exist on this host"))
    return check


def check_sink(settings: Settings, tries: int = 3, wait: float = 1.0) -> None:
    """The sink URL parses, and the bucket takes a create-once write (see ``Sink.probe``).
    A store that fails is tried again a few times, since a blip at start is no reason to
    exit; one that ignores create-once writes is refused at once."""
    url = settings.require_sink_url()
    sink = open_sink(url, settings.keyring)  # checked with the settings already
    for attempt in range(1, tries + 1):
        try:
            sink.probe()
            return
        except WriteOnceUnsupported as exc:
            raise HostUnusable(str(exc)) from exc
        except SinkError as exc:
            if attempt == tries:
                raise HostUnusable(f"the sink {sink.describe()} is not usable: {exc}") from exc
            time.sleep(wait * 2 ** (attempt - 1))


class SinkWatch:
    """Whether the sink, after a write failed, is still usable at all. A store gone for good
    (its bucket deleted, this host's access revoked, its volume unmounted) should stop the
    worker with the reason, as it would have refused to start, rather than let it fail task
    after task. A store that fails for a moment does not: its tasks are retried. Probes at
    most once every ``every`` seconds, so an outage does not double the requests."""

    def __init__(
        self, sink: Sink, every: float = 30.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.sink = sink
        self.every = every
        self.clock = clock
        self._probed_at: float | None = None

    def lost(self) -> str | None:
        """Why the sink is unusable for good, or None if it is not (or was probed lately)."""
        now = self.clock()
        if self._probed_at is not None and now - self._probed_at < self.every:
            return None
        self._probed_at = now
        try:
            self.sink.probe()
        except SinkUnusable as exc:
            return str(exc)
        except SinkError:
            return None
        return None
