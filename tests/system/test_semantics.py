"""The archiving semantics, each against a real Redis, a real Celery worker process and a real
scheduler process; the core scenarios once with Redis and once with RabbitMQ as the broker."""

from __future__ import annotations

import itertools
import os
import re
from datetime import datetime, timedelta

import pytest

from archiver.core.lsn import format_lsn
from archiver.core.object_names import PartitionId, archive_key
from archiver.core.tarball import entry_tar_chunks
from tests.faults import FaultProxy
from tests.support import S3Endpoint, System, gap_pairs, log_time, source, wait_for


@pytest.fixture
def system(system_on_each_broker: System) -> System:
    return system_on_each_broker


def test_a_single_entry_is_archived_and_acknowledged(system: System) -> None:
    system.start()
    system.write(1, 1)
    system.notify(1, 1, 1)
    system.wait_acked(1, 1)
    assert system.archived(1) == [1]
    system.assert_archive_matches_source(1, 1)
    state = system.state(1)
    assert state["acknowledged_lsn"] == 1
    assert state["next_lsn"] == 2
    assert state["in_flight_lsn"] is None
    system.assert_invariants()


def test_a_partition_that_starts_at_11_never_tries_1_to_10(system: System) -> None:
    system.start()
    for lsn in range(11, 14):
        system.write(3, lsn)
    system.notify(3, 11, 13)
    system.wait_acked(3, 13)
    assert system.archived(3) == [11, 12, 13]
    assert system.acks(3) == [11, 12, 13]
    assert system.state(3)["gaps"] == []
    assert all(" lsn=1 " not in line for line in system.worker_lines("archiving"))
    system.assert_invariants()


def test_a_range_is_archived_in_order_one_at_a_time(system: System) -> None:
    system.start(concurrency=4)
    for lsn in range(1, 6):
        system.write(1, lsn)
    system.notify(1, 1, 5)
    system.wait_acked(1, 5)
    assert system.archived(1) == [1, 2, 3, 4, 5]
    assert system.acks(1) == [1, 2, 3, 4, 5]
    for lsn in range(1, 6):
        system.assert_archive_matches_source(1, lsn)
    # Strict order: each entry finished before the next one's attempt began.
    lines = system.worker_lines("archived")
    assert [int(re.search(r" lsn=(\d+) ", line)[1]) for line in lines] == [1, 2, 3, 4, 5]  # type: ignore[index]
    system.assert_invariants()


def test_a_high_water_mark_that_rises_while_archiving(system: System) -> None:
    system.start()
    for lsn in range(1, 4):
        system.write(1, lsn)
    system.notify(1, 1, 3)
    for lsn in range(4, 9):
        system.write(1, lsn)
        system.notify(1, 1, lsn)
    system.wait_acked(1, 8)
    assert system.archived(1) == list(range(1, 9))
    assert system.state(1)["high_water_mark"] == 8
    system.assert_invariants()


def test_a_high_water_mark_never_moves_backwards(system: System) -> None:
    system.start()
    for lsn in range(1, 6):
        system.write(1, lsn)
    system.notify(1, 1, 5)
    system.notify(1, 1, 2)
    system.wait_acked(1, 5)
    assert system.state(1)["high_water_mark"] == 5
    system.assert_invariants()


def test_a_rising_low_water_mark_is_not_a_gap(system: System) -> None:
    system.start()
    for lsn in range(1, 4):
        system.write(1, lsn)
    system.notify(1, 1, 3)
    system.wait_acked(1, 3)
    # The producer pruned 1..3 after the acknowledgement and wrote 4..5.
    for lsn in range(4, 6):
        system.write(1, lsn)
    system.notify(1, 4, 5)
    system.wait_acked(1, 5)
    state = system.state(1)
    assert state["gaps"] == []
    assert system.archived(1) == [1, 2, 3, 4, 5]
    assert "gap in log sequence" not in system.logs()
    system.assert_invariants()


def _intervals(system: System) -> list[tuple[int, datetime, datetime]]:
    """(partition, start, end) of every upload, from the worker's log."""
    result = []
    for line in system.worker_lines("archived"):
        match = re.search(r" partition=(\d+) .* seconds=([\d.]+)", line)
        assert match, line
        end = log_time(line)
        result.append((int(match[1]), end - timedelta(seconds=float(match[2])), end))
    return result


@pytest.mark.parametrize(("pool", "concurrency"), [("prefork", 1), ("prefork", 4), ("threads", 4)])
def test_three_partitions_share_the_workers(system: System, pool: str, concurrency: int) -> None:
    worker = system.start_worker(concurrency, pool=pool)
    system.start_scheduler()
    if pool == "threads":
        assert len(worker.tree()) == 1, "a threads pool runs every attempt in one process"
    entries = 12
    for partition in (1, 2, 3):
        for lsn in range(1, entries + 1):
            # Large enough that uploads take measurable time.
            system.write(partition, lsn, {"data": bytes(2 * 1024 * 1024)})
        system.notify(partition, 1, entries)
    for partition in (1, 2, 3):
        system.wait_acked(partition, entries, timeout=90)
        assert system.acks(partition) == list(range(1, entries + 1))
        assert system.archived(partition) == list(range(1, entries + 1))
    intervals = _intervals(system)
    # Log times are cut to the millisecond: an overlap must be longer than that rounding.
    slack = timedelta(milliseconds=3)
    overlapping = {
        (a[0], b[0])
        for a in intervals
        for b in intervals
        if a[0] < b[0] and a[1] + slack < b[2] and b[1] + slack < a[2]
    }
    if concurrency == 1:
        assert not overlapping, "one worker process must archive one entry at a time"
    else:
        assert overlapping, "different partitions must be archived in parallel"
    system.assert_invariants()


def test_a_notification_resent_after_completion_is_reacknowledged_not_rearchived(
    system: System,
) -> None:
    system.start()
    for lsn in range(1, 4):
        system.write(1, lsn)
    system.notify(1, 1, 3)
    system.wait_acked(1, 3)
    system.notify(1, 1, 3)
    wait_for(lambda: system.acks(1) == [1, 2, 3, 3], what="the re-acknowledgement")
    system.notify(1, 2, 3)
    wait_for(lambda: system.acks(1) == [1, 2, 3, 3, 3], what="a second re-acknowledgement")
    assert len(system.worker_lines("archived")) == 3
    assert system.worker_lines("skipped") == []
    system.assert_invariants()


def test_a_gap_is_logged_recorded_and_skipped(system: System) -> None:
    system.start()
    for lsn in range(1, 4):
        system.write(1, lsn)
    system.notify(1, 1, 3)
    system.wait_acked(1, 3)
    for lsn in range(11, 14):
        system.write(1, lsn)
    system.notify(1, 11, 13)
    system.wait_acked(1, 13)
    assert system.archived(1) == [1, 2, 3, 11, 12, 13]
    assert system.acks(1) == [1, 2, 3, 11, 12, 13]
    assert gap_pairs(system.state(1)) == [(4, 11)]
    gap_lines = [line for line in system.logs().splitlines() if "gap in log sequence" in line]
    assert len(gap_lines) == 1
    assert "ERROR" in gap_lines[0]
    assert "entries 4..10 were deleted before they were archived" in gap_lines[0]
    for field in (f"storage={system.storage}", "partition=1", "lsn=4"):
        assert field in gap_lines[0]
    system.assert_invariants()


def test_a_missing_entry_is_retried_until_it_appears_and_never_skipped(system: System) -> None:
    system.start()
    system.write(1, 1)
    system.notify(1, 1, 2)  # entry 2 is announced but not on disk yet
    system.wait_acked(1, 1)
    state = system.wait_attempts(1, 2)
    assert "does not exist" in state["last_error"]
    assert state["in_flight_lsn"] == 2
    assert system.acks(1) == [1]
    assert system.archived(1) == [1]
    system.write(1, 2)
    system.wait_acked(1, 2)
    assert system.archived(1) == [1, 2]
    system.assert_archive_matches_source(1, 2)
    state = system.state(1)
    assert state["last_error"] is None
    assert state["attempts"] == 0
    system.assert_invariants()


def test_a_failed_attempt_waits_its_backoff_before_the_next(system: System) -> None:
    system.env_overrides["ARCHIVER_RETRY_MIN_SECONDS"] = "0.4"
    system.env_overrides["ARCHIVER_RETRY_MAX_SECONDS"] = "1.6"
    system.start()
    system.notify(1, 1, 1)  # announced, not on disk yet: every attempt fails
    system.wait_attempts(1, 5, timeout=60)
    # A failure's line is logged just after it is recorded.
    failures = wait_for(
        lambda: found if len(found := system.failed_attempts()) >= 5 else None,
        what="five failures in the worker's log",
    )
    assert [n for n, _, _ in failures][:5] == [1, 2, 3, 4, 5]
    for (n, delay, at), (_, _, next_at) in itertools.pairwise(failures[:5]):
        # The minimum, doubled per failure, capped; and the next attempt really waited it
        # (log times are cut to the millisecond; the upper bound is loose, for a busy host).
        assert delay == pytest.approx(min(0.4 * 2 ** (n - 1), 1.6))
        waited = (next_at - at).total_seconds()
        assert delay - 0.01 <= waited <= delay + 5, (n, delay, waited)
    system.write(1, 1)
    system.wait_acked(1, 1)
    system.assert_invariants()


def test_an_archive_already_in_the_sink_is_acknowledged_without_upload(system: System) -> None:
    for lsn in range(1, 4):
        system.write(1, lsn)
    # An earlier attempt uploaded entry 2 and died before it could commit.
    earlier = b"".join(entry_tar_chunks(system.root / "1" / "wal" / format_lsn(2), format_lsn(2)))
    system.sink.write(archive_key(system.storage, 1, 2), source(earlier))
    before = os.stat(system.tmp / "bucket" / system.storage / "1" / "0000000000002.tar")
    system.start()
    system.notify(1, 1, 3)
    system.wait_acked(1, 3)
    after = os.stat(system.tmp / "bucket" / system.storage / "1" / "0000000000002.tar")
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    # An entry's line is logged just after its acknowledgement is published.
    wait_for(lambda: len(system.worker_lines("archived")) >= 2, what="the log of LSN 3")
    skipped = system.worker_lines("skipped")
    assert len(skipped) == 1
    assert " lsn=2 " in skipped[0]
    assert len(system.worker_lines("archived")) == 2
    system.assert_invariants()


def test_an_archive_with_other_bytes_is_kept_and_stops_only_its_partition(system: System) -> None:
    planted = b"someone else's bytes"
    system.sink.write(archive_key(system.storage, 1, 2), source(planted))
    system.start()
    for partition in (1, 2):
        for lsn in range(1, 4):
            system.write(partition, lsn)
        system.notify(partition, 1, 3)
    system.wait_acked(2, 3)
    state = wait_for(lambda: (s := system.state(1))["conflicted"] and s, what="partition 1 to stop")
    assert "already exists with other content" in state["last_error"]
    assert state["in_flight_lsn"] is None
    assert state["acknowledged_lsn"] == 1
    assert system.sink.read(archive_key(system.storage, 1, 2)) == planted
    assert system.acks(1) == [1]
    assert any(
        "archive conflict" in line and "ERROR" in line for line in system.logs().splitlines()
    )
    # Further notifications do not restart it.
    system.notify(1, 1, 3)
    system.wait_acked(2, 3)
    wait_for(lambda: system.client.xlen("archiver:notifications") == 0, what="the scheduler")
    assert system.state(1)["in_flight_lsn"] is None
    assert system.store.counters.read()["conflicts"] == 1
    system.assert_invariants()


def test_notifications_published_before_any_scheduler_ran_are_processed(system: System) -> None:
    for lsn in range(1, 4):
        system.write(1, lsn)
    system.notify(1, 1, 3)
    system.write(2, 1)
    system.notify(2, 1, 1)
    assert not system.client.exists(system.keys.partition(PartitionId(system.storage, 1)))
    system.start()
    system.wait_acked(1, 3)
    system.wait_acked(2, 1)
    system.assert_invariants()


def test_sigterm_stops_cleanly_and_a_restart_resumes_without_redoing_work(system: System) -> None:
    worker = system.start_worker()
    scheduler = system.start_scheduler()
    for lsn in range(1, 6):
        system.write(1, lsn)
    system.notify(1, 1, 5)
    system.wait_acked(1, 5)
    assert scheduler.stop() == 0
    assert worker.stop() == 0
    assert "scheduler stopped" in scheduler.output()

    # Written and announced while nothing runs.
    for lsn in range(6, 11):
        system.write(1, lsn)
    system.notify(1, 1, 10)
    second_worker = system.start_worker()
    system.start_scheduler()
    system.wait_acked(1, 10)
    assert system.archived(1) == list(range(1, 11))
    assert system.acks(1) == list(range(1, 11))
    redone = [
        line
        for line in second_worker.output().splitlines()
        if re.search(r"archiver\.worker (archived|skipped) .* lsn=[1-5] ", line)
    ]
    assert redone == []
    system.assert_invariants()


def test_a_sink_error_is_retried_with_backoff_then_archived(
    s3_system: System, s3_endpoint: S3Endpoint, proxy: FaultProxy
) -> None:
    system = s3_system
    system.env_overrides["ARCHIVER_SINK_URL"] = system.sink_url.replace(s3_endpoint.url, proxy.url)
    system.env_overrides["ARCHIVER_RETRY_MIN_SECONDS"] = "0.5"
    system.env_overrides["ARCHIVER_RETRY_MAX_SECONDS"] = "2"
    system.start()
    worker = system.processes[0]
    proxy.mode = "error"  # the store fails for now: every request answered with a 503
    system.write(1, 1)
    system.notify(1, 1, 1)
    state = system.wait_attempts(1, 3)
    assert "503" in state["last_error"], state["last_error"]
    assert system.acks(1) == []
    assert system.client.hget("archiver:fleet", "until_ms") is not None  # the fleet backed off
    # Each retry waited the delay it was given (log times are cut to the millisecond).
    failures = system.failed_attempts()
    for (_, delay, at), (_, _, next_at) in itertools.pairwise(failures[:3]):
        assert delay >= 0.5
        assert (next_at - at).total_seconds() >= delay - 0.002, failures
    proxy.mode = "pass"
    system.wait_acked(1, 1)
    system.assert_archive_matches_source(1, 1)
    # A store failing for a moment is no reason to stop (one gone for good is; see
    # test_operator_paths).
    assert worker.popen.poll() is None
    assert "no longer usable" not in worker.output()
    system.assert_invariants()


def test_entries_of_every_size_reach_s3_byte_identical(s3_system: System) -> None:
    system = s3_system
    system.start(concurrency=2)
    sizes = [0, 1, 511, 512, 5 * 1024 * 1024, 9 * 1024 * 1024 + 123]
    for lsn, size in enumerate(sizes, start=1):
        system.write(
            1,
            lsn,
            {"MANIFEST": b"x", "payload": bytes(range(256)) * (size // 256) + b"z" * (size % 256)},
        )
    system.notify(1, 1, len(sizes))
    system.wait_acked(1, len(sizes), timeout=60)
    for lsn in range(1, len(sizes) + 1):
        system.assert_archive_matches_source(1, lsn)
    system.assert_invariants()
