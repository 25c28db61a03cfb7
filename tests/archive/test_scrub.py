"""The scrubber on real filesystem buckets and a real Redis: what it finds, that it changes
nothing, where it resumes, and how fast it may go."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from archiver.archive.catalog import Archive, partition_archives
from archiver.archive.scrub import UNREADABLE_AFTER, RateLimit, Scrubber, ScrubState
from archiver.core.encryption import Keyring, new_key_text
from archiver.core.object_names import PartitionId
from archiver.dev.producer import write_entry
from archiver.errors import SinkError
from archiver.runtime.archiving import copy_entry
from archiver.runtime.background import acknowledged_through
from archiver.sinks import FilesystemSink
from archiver.store.state_store import RedisStateStore
from tests.archive_factory import new_bucket
from tests.store_calls import archive_and_acknowledge


def scrubber(store: RedisStateStore, sink: FilesystemSink) -> Scrubber:
    return Scrubber(sink, "primary", store, acknowledged_through(store), RateLimit(0, 0))


def snapshot(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_it_finds_a_corrupted_object_and_a_deleted_one_and_changes_nothing(
    store: RedisStateStore, tmp_path: Path
) -> None:
    sink = new_bucket(tmp_path / "bucket")
    archive_and_acknowledge(store, sink, tmp_path / "wal", "s", 1, range(1, 8))
    archives = partition_archives(sink, "s", 1)
    corrupt = sink.root / archives[2].key
    data = bytearray(corrupt.read_bytes())
    data[700] ^= 0xFF
    corrupt.write_bytes(bytes(data))
    (sink.root / archives[4].key).unlink()  # lost: below the acknowledged LSN, no gap recorded
    (sink.root / (archives[4].key + ".attrs")).unlink()
    (sink.root / archives[6].key).unlink()  # the newest, lost too
    (sink.root / (archives[6].key + ".attrs")).unlink()
    before = snapshot(sink.root)

    summary = scrubber(store, sink).run_cycle(threading.Event())
    assert summary.completed
    assert summary.objects == 5
    found = {(f.kind, f.subject) for f in summary.findings}
    assert found == {
        ("corrupt", archives[2].key),
        ("missing", "s/1 LSN 5-5"),
        ("missing", "s/1 LSN 7-7"),
    }
    assert snapshot(sink.root) == before
    recorded = ScrubState(store, "primary").findings()
    assert {(f.kind, f.subject) for f in recorded} == found
    assert "does not match recorded" in next(f.detail for f in recorded if f.kind == "corrupt")


def test_an_object_sealed_with_a_key_not_given_is_unopened_not_corrupt(
    store: RedisStateStore, tmp_path: Path
) -> None:
    sealed = FilesystemSink(
        new_bucket(tmp_path / "bucket").root, Keyring.parse(f"old:{new_key_text()}")
    )
    archive_and_acknowledge(store, sealed, tmp_path / "wal", "s", 1, range(1, 3))
    other_keys = FilesystemSink(sealed.root, Keyring.parse(f"new:{new_key_text()}"))
    summary = scrubber(store, other_keys).run_cycle(threading.Event())
    assert {f.kind for f in summary.findings} == {"unopened"}
    assert all("'old'" in f.detail for f in summary.findings)


def test_it_resumes_where_it_stopped_and_then_starts_a_new_cycle(
    store: RedisStateStore, tmp_path: Path
) -> None:
    sink = new_bucket(tmp_path / "bucket")
    for partition in (1, 2, 3):
        archive_and_acknowledge(store, sink, tmp_path / "wal", "s", partition, range(1, 5))
    seen: list[str] = []
    stop = threading.Event()

    def stop_after_five(archive: Archive) -> None:
        seen.append(archive.key)
        if len(seen) == 5:
            stop.set()

    first = scrubber(store, sink).run_cycle(stop, stop_after_five)
    assert (first.completed, first.objects) == (False, 5)
    # A restart (or another scheduler taking the lead) goes on from the sixth object.
    second = scrubber(store, sink).run_cycle(threading.Event(), lambda a: seen.append(a.key))
    assert second.completed
    everything = [a.key for p in (1, 2, 3) for a in partition_archives(sink, "s", p)]
    assert seen == everything
    position = ScrubState(store, "primary").load()
    assert (position.cycle, position.storage, position.previous_cycle_started_ms is not None) == (
        2,
        None,
        True,
    )
    third = scrubber(store, sink).run_cycle(threading.Event())
    assert third.objects == 12


class FakeTime:
    """A clock that only moves when the rate limit waits (no real sleeping)."""

    def __init__(self) -> None:
        self.now = 100.0
        self.waited = 0.0

    def clock(self) -> float:
        return self.now

    def is_set(self) -> bool:
        return False

    def wait(self, timeout: float | None = None) -> bool:
        self.now += timeout or 0
        self.waited += timeout or 0
        return False


def test_the_rate_limit_bounds_bytes_and_requests_a_second() -> None:
    time = FakeTime()
    limit = RateLimit(1000, 10, clock=time.clock)
    for _ in range(20):
        assert limit.wait_for(500, 1, time)
    # 10,000 bytes at 1,000 bytes/s, less the second's worth it starts with.
    assert 8.9 <= time.waited <= 9.1
    time = FakeTime()
    limit = RateLimit(0, 10, clock=time.clock)
    for _ in range(50):
        assert limit.wait_for(10**9, 1, time)
    assert 3.9 <= time.waited <= 4.1  # 50 requests at 10 a second, 10 at once
    unlimited = RateLimit(0, 0, clock=time.clock)
    time.waited = 0
    assert unlimited.wait_for(10**12, 1000, time)
    assert time.waited == 0


def test_holes_recorded_as_gaps_are_not_findings(store: RedisStateStore, tmp_path: Path) -> None:
    sink = new_bucket(tmp_path / "bucket")
    archive_and_acknowledge(store, sink, tmp_path / "wal", "s", 1, range(1, 3))
    store.admin.skip_to(PartitionId("s", 1), 6, "ops", "entries lost on the producer")
    archive_and_acknowledge(store, sink, tmp_path / "wal", "s", 1, range(6, 8))
    summary = scrubber(store, sink).run_cycle(threading.Event())
    assert summary.findings == []


class Unreachable(FilesystemSink):
    """A real bucket whose reads fail, as a store that does not answer."""

    def download(self, key: str, out: Any) -> Any:
        raise SinkError(f"reading {key}: timed out")


def test_a_store_that_fails_is_not_a_finding_and_the_walk_goes_on_later(
    store: RedisStateStore, tmp_path: Path
) -> None:
    sink = new_bucket(tmp_path / "bucket")
    archive_and_acknowledge(store, sink, tmp_path / "wal", "s", 1, range(1, 4))
    with pytest.raises(SinkError):
        scrubber(store, Unreachable(sink.root)).run_cycle(threading.Event())
    assert ScrubState(store, "primary").findings() == []
    summary = scrubber(store, sink).run_cycle(threading.Event())
    assert (summary.completed, summary.objects, summary.findings) == (True, 3, [])


def test_a_partition_pruned_to_objects_not_yet_acknowledged_is_not_missing(
    store: RedisStateStore, tmp_path: Path
) -> None:
    sink = new_bucket(tmp_path / "bucket")
    archive_and_acknowledge(store, sink, tmp_path / "wal", "s", 1, range(1, 4))
    write_entry(tmp_path / "wal", 1, 4, {"f": b"not acknowledged yet"})
    copy_entry(sink, "s", tmp_path / "wal", 1, 4)
    sink.delete([a.key for a in partition_archives(sink, "s", 1)[:3]])  # a prune
    assert scrubber(store, sink).run_cycle(threading.Event()).findings == []


class OneBadSector(FilesystemSink):
    """A real bucket where one object cannot be read at all (an I/O error on its sector)."""

    bad: str = ""

    def download(self, key: str, out: Any) -> Any:
        if key == self.bad:
            raise SinkError(f"reading {key}: [Errno 5] Input/output error")
        return super().download(key, out)


def test_an_object_the_store_never_reads_is_recorded_after_a_few_passes(
    store: RedisStateStore, tmp_path: Path
) -> None:
    sink = new_bucket(tmp_path / "bucket")
    archive_and_acknowledge(store, sink, tmp_path / "wal", "s", 1, range(1, 4))
    failing = OneBadSector(sink.root)
    failing.bad = partition_archives(sink, "s", 1)[1].key
    for _ in range(UNREADABLE_AFTER - 1):
        with pytest.raises(SinkError):
            scrubber(store, failing).run_cycle(threading.Event())
    summary = scrubber(store, failing).run_cycle(threading.Event())
    assert summary.completed
    assert [(f.kind, f.subject) for f in summary.findings] == [("unreadable", failing.bad)]
