"""Each recovery path on its own: real processes, real signals, a real flaky network."""

from __future__ import annotations

import json
import re
import signal
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from archiver.cli import main
from archiver.dev.local_redis import LocalRedis
from archiver.store.streams import SCHEDULER_GROUP
from tests.archive_factory import archive_range
from tests.faults import FaultProxy
from tests.support import S3Endpoint, System, gap_pairs, log_time, wait_for

FAST = {
    "ARCHIVER_LEASE_SECONDS": "1",
    "ARCHIVER_SWEEP_INTERVAL_SECONDS": "0.3",
}


def _via(proxy: FaultProxy, system: System, s3: S3Endpoint, **params: str) -> dict[str, str]:
    url = system.sink_url.replace(s3.url, proxy.url)
    for name, value in params.items():
        url += f"&{name}={value}"
    return {"ARCHIVER_SINK_URL": url}


def test_a_worker_paused_past_its_lease_is_fenced_off(
    s3_system: System, s3_endpoint: S3Endpoint, proxy: FaultProxy
) -> None:
    system = s3_system
    system.env_overrides.update(FAST)
    # Held once the host is up: it checks the sink with a write before it consumes anything.
    paused = system.start_worker(env=_via(proxy, system, s3_endpoint))
    proxy.hold_puts()
    system.start_scheduler()
    system.write(1, 1)
    system.notify(1, 1, 1)
    wait_for(lambda: proxy.held_puts >= 1, what="the first worker to be mid-upload")
    paused.signal_tree(signal.SIGSTOP)  # GC pause, SIGSTOP, a slow network: it stops renewing
    try:
        system.start_worker()
        system.wait_acked(1, 1)  # the claim expired and another worker archived the entry
    finally:
        proxy.release_puts()
        paused.signal_tree(signal.SIGCONT)
    wait_for(lambda: "fenced off" in paused.output(), what="the paused worker to be fenced off")
    # Its late upload found the same bytes; it could neither advance nor acknowledge.
    wait_for(lambda: system.store.counters.read().get("fenced", 0) >= 1, what="the fenced count")
    assert system.acks(1) == [1]
    assert system.state(1)["acknowledged_lsn"] == 1
    assert system.store.counters.read()["redispatched"] >= 1
    system.assert_archive_matches_source(1, 1)
    system.assert_invariants()


def test_a_killed_worker_leaves_its_entry_to_another(
    s3_system: System, s3_endpoint: S3Endpoint, proxy: FaultProxy
) -> None:
    system = s3_system
    system.env_overrides.update(FAST)
    doomed = system.start_worker(env=_via(proxy, system, s3_endpoint))
    proxy.hold_puts()
    system.start_scheduler()
    system.write(1, 1)
    system.write(1, 2)
    system.notify(1, 1, 2)
    wait_for(lambda: proxy.held_puts >= 1, what="the first worker to be mid-upload")
    doomed.kill_tree()
    proxy.release_puts()
    system.start_worker()
    system.wait_acked(1, 2)
    assert system.acks(1) == [1, 2]
    for lsn in (1, 2):
        system.assert_archive_matches_source(1, lsn)
    system.assert_invariants()


def test_a_pool_process_killed_mid_upload_has_its_task_redelivered(
    s3_system: System, s3_endpoint: S3Endpoint, proxy: FaultProxy
) -> None:
    system = s3_system
    # Leases far longer than the test: only redelivery can finish the entry in time.
    system.env_overrides.update({"ARCHIVER_LEASE_SECONDS": "300"})
    worker = system.start_worker(concurrency=2, env=_via(proxy, system, s3_endpoint))
    proxy.hold_puts()
    system.start_scheduler()
    system.write(1, 1)
    system.notify(1, 1, 1)
    wait_for(lambda: proxy.held_puts >= 1, what="a pool process to be mid-upload")
    (uploader,) = [
        p
        for p in worker.tree()[1:]
        if any(c.raddr and c.raddr.port == proxy.port for c in p.net_connections(kind="tcp"))
    ]
    uploader.kill()
    proxy.release_puts()
    system.wait_acked(1, 1, timeout=60)
    assert "WorkerLostError" in worker.output() or "SIGKILL" in worker.output()
    assert system.store.counters.read().get("redispatched", 0) == 0
    system.assert_archive_matches_source(1, 1)
    system.assert_invariants()


def test_a_lost_task_message_is_found_by_the_sweep(system: System) -> None:
    system.env_overrides.update({"ARCHIVER_DISPATCH_TIMEOUT_SECONDS": "1", **FAST})
    system.start_scheduler()
    system.write(1, 1)
    system.notify(1, 1, 1)
    wait_for(lambda: system.client.llen("archiver.default") >= 1, what="the task to be queued")
    system.client.delete("archiver.default")  # the broker lost it
    system.start_worker()
    system.wait_acked(1, 1)
    assert system.store.counters.read()["redispatched"] >= 1
    system.assert_invariants()


# How an object store can fail to answer: the fault, its healing, the read timeout, and what
# the failed attempt says.
UNANSWERED = {
    "reads stall": (FaultProxy.stall, FaultProxy.resume, "1", "timeout"),
    "connections are never accepted": (
        FaultProxy.stop_accepting,
        FaultProxy.start_accepting,
        "5",
        "connect timeout",
    ),
}


@pytest.mark.parametrize("fault", sorted(UNANSWERED))
def test_an_object_store_that_does_not_answer_is_a_failed_attempt_not_a_hang(
    s3_system: System, s3_endpoint: S3Endpoint, proxy: FaultProxy, fault: str
) -> None:
    start, heal, read_timeout, error = UNANSWERED[fault]
    system = s3_system
    params = {"connect_timeout": "1", "read_timeout": read_timeout, "max_attempts": "1"}
    system.start_worker(env=_via(proxy, system, s3_endpoint, **params))
    start(proxy)
    system.start_scheduler()
    system.write(1, 1)
    system.notify(1, 1, 1)
    state = system.wait_attempts(1, 2)
    assert error in state["last_error"].lower(), state["last_error"]
    assert system.acks(1) == []
    heal(proxy)
    system.wait_acked(1, 1)
    system.assert_archive_matches_source(1, 1)
    system.assert_invariants()


def test_an_attempt_past_the_task_time_limit_is_ended_and_tried_again(
    s3_system: System, s3_endpoint: S3Endpoint, proxy: FaultProxy
) -> None:
    system = s3_system
    system.env_overrides["ARCHIVER_TASK_TIME_LIMIT_SECONDS"] = "4"
    # Reads wait far longer than the limit: only the limit can end the attempt.
    worker = system.start_worker(env=_via(proxy, system, s3_endpoint, read_timeout="120"))
    system.start_scheduler()
    proxy.hold_puts()  # the upload starts and never gets an answer
    system.write(1, 1)
    system.notify(1, 1, 1)
    # The pool process interrupts the attempt at the limit, which ends as a failure of the
    # entry; the retry is interrupted too, so the worker is not stuck on the first.
    state = system.wait_attempts(1, 2, timeout=60)
    assert "time limit" in state["last_error"], state["last_error"]
    assert worker.output().count("interrupting the attempt") >= 2
    # Interrupted, not killed: the pool process did not need ending.
    assert "ending this pool process" not in worker.output()
    assert system.acks(1) == []
    proxy.release_puts()
    system.wait_acked(1, 1, timeout=60)
    system.assert_archive_matches_source(1, 1)
    assert worker.popen.poll() is None
    system.assert_invariants()


def test_an_attempt_past_the_time_limit_in_a_threads_pool_hands_its_partition_over(
    s3_system: System, s3_endpoint: S3Endpoint, proxy: FaultProxy
) -> None:
    # A threads pool has no hard time limit: the lease keeper stops renewing the attempt's
    # grant, so the partition goes to another attempt while the first one still hangs.
    system = s3_system
    system.env_overrides["ARCHIVER_TASK_TIME_LIMIT_SECONDS"] = "3"
    worker = system.start_worker(
        concurrency=4, pool="threads", env=_via(proxy, system, s3_endpoint, read_timeout="120")
    )
    system.start_scheduler()
    proxy.hold_puts()  # the upload starts and never gets an answer
    system.write(1, 1)
    system.notify(1, 1, 1)
    wait_for(
        lambda: (system.maybe_state(1) or {}).get("fencing_token", 0) >= 2,
        timeout=60,
        what="the partition to be granted again",
    )
    assert "attempt past its time limit" in worker.output()
    assert system.acks(1) == []
    proxy.release_puts()
    system.wait_acked(1, 1, timeout=60)
    system.assert_archive_matches_source(1, 1)
    assert "until_ms" not in system.client.hgetall(system.keys.fleet)  # no one paused for it
    assert worker.popen.poll() is None
    system.assert_invariants()


def test_the_fleet_holds_off_during_a_pause_and_resumes_when_it_ends(system: System) -> None:
    pause = 4.0
    system.env_overrides["ARCHIVER_RETRY_MIN_SECONDS"] = str(pause)
    system.env_overrides["ARCHIVER_RETRY_MAX_SECONDS"] = str(pause)
    system.start()
    # Partition 1's folder in the bucket is a file: its upload fails as the store would.
    blocker = system.tmp / "bucket" / system.storage / "1"
    blocker.parent.mkdir(parents=True)
    blocker.write_bytes(b"")
    system.write(1, 1)
    system.notify(1, 1, 1)
    failed = wait_for(
        lambda: system.worker_lines("archiving failed;"), timeout=30, what="the failed upload"
    )
    assert f"retrying in {pause:.3f}s" in failed[0], failed[0]
    ends = log_time(failed[0]) + timedelta(seconds=pause)
    blocker.unlink()
    for partition in (2, 3):
        for lsn in (1, 2):
            system.write(partition, lsn)
        system.notify(partition, 1, 2)
    # Announced well inside the pause: without it, these would be archived at once.
    assert datetime.now() < ends - timedelta(seconds=2)
    system.wait_acked(1, 1)
    for partition in (2, 3):
        system.wait_acked(partition, 2)
    archived = system.worker_lines("archived")
    assert len(archived) == 5
    # Nobody uploaded during the pause (log times are cut to the millisecond) ...
    assert all(log_time(line) >= ends - timedelta(milliseconds=1) for line in archived), archived
    # ... and the others resumed when it ended: within its jitter (a fifth), plus a busy host.
    others = [log_time(line) for line in archived if " partition=1 " not in line]
    assert min(others) <= ends + timedelta(seconds=pause * 0.2 + 3), (ends, archived)
    system.assert_invariants()


def test_a_standby_scheduler_takes_over_within_the_lease(system: System) -> None:
    ttl = 2.0
    system.env_overrides["ARCHIVER_LEADER_TTL_SECONDS"] = str(ttl)
    system.start_worker()
    first = system.start_scheduler()
    wait_for(lambda: "became leader" in first.output(), what="a leader")
    standby = system.start_scheduler()
    system.write(1, 1)
    system.notify(1, 1, 1)
    system.wait_acked(1, 1)
    assert "became leader" not in standby.output()

    first.kill_tree()
    system.write(1, 2)
    system.notify(1, 1, 2)
    # Within the lease and a few of the standby's tries: generous, for a loaded machine.
    wait_for(lambda: "became leader" in standby.output(), timeout=4 * ttl, what="the takeover")
    system.wait_acked(1, 2)

    # A leader stopped with SIGTERM hands over at once: long before its lease would run out.
    long_lease = {"ARCHIVER_LEADER_TTL_SECONDS": "60"}
    third = system.start_scheduler(env=long_lease)
    standby.kill_tree()
    wait_for(lambda: "became leader" in third.output(), timeout=4 * ttl, what="the takeover")
    fourth = system.start_scheduler(env=long_lease)
    assert third.stop() == 0
    wait_for(lambda: "became leader" in fourth.output(), timeout=10, what="the handover")
    system.write(1, 3)
    system.notify(1, 1, 3)
    system.wait_acked(1, 3)
    assert system.store.counters.read()["leader_changes"] == 4
    system.assert_invariants()


def test_a_scheduler_killed_mid_stream_loses_no_notification(system: System) -> None:
    system.start_worker(concurrency=2)
    scheduler = system.start_scheduler()
    for partition in range(1, 31):
        system.write(partition, 1)
        system.notify(partition, 1, 1)
    wait_for(lambda: len(system.acks(1)) + len(system.acks(2)) >= 1, what="some progress")
    scheduler.kill_tree()
    for partition in range(31, 41):  # published while no scheduler runs
        system.write(partition, 1)
        system.notify(partition, 1, 1)
    system.start_scheduler()
    for partition in range(1, 41):
        system.wait_acked(partition, 1)
    system.assert_invariants()


def test_notifications_a_killed_scheduler_had_read_are_applied_by_the_next(
    system: System,
) -> None:
    system.start_worker()
    scheduler = system.start_scheduler()
    system.write(1, 1)
    system.notify(1, 1, 1)
    system.wait_acked(1, 1)
    key = system.keys.notifications

    def pending() -> int:
        return int(system.client.xpending(key, SCHEDULER_GROUP)["pending"])

    # Stop the scheduler while it waits on the stream: Redis still hands it what is published
    # then, before it answers anyone else, so the notification is pending with a process that
    # will never apply it. If it was between two reads instead, let it go on and try again.
    lsn = 2
    for _ in range(20):
        system.write(1, lsn)
        scheduler.signal_tree(signal.SIGSTOP)
        system.notify(1, 1, lsn)
        if pending() > 0:
            break
        scheduler.signal_tree(signal.SIGCONT)
        system.wait_acked(1, lsn)
        lsn += 1
    else:
        raise AssertionError("never caught the scheduler between reading and applying")
    scheduler.kill_tree()
    assert system.state(1)["high_water_mark"] == lsn - 1  # read, never applied
    system.start_scheduler()
    system.wait_acked(1, lsn)
    assert pending() == 0
    assert system.client.xlen(key) == 0
    system.assert_invariants()


def test_a_leader_paused_past_its_lease_wakes_up_as_a_follower(system: System) -> None:
    ttl = 2.0
    partitions = range(1, 5)
    system.env_overrides["ARCHIVER_LEADER_TTL_SECONDS"] = str(ttl)
    system.start_worker(concurrency=2)
    first = system.start_scheduler()
    wait_for(lambda: "became leader" in first.output(), what="a leader")
    standby = system.start_scheduler()
    key = system.keys.notifications

    def announce(lsn: int) -> None:
        for partition in partitions:
            system.write(partition, lsn)
            system.notify(partition, 1, lsn)

    def acked(lsn: int) -> None:
        for partition in partitions:
            system.wait_acked(partition, lsn)

    announce(1)
    acked(1)
    # Pause the leader with a batch in hand (see the test above), past its lease.
    lsn = 2
    for _ in range(20):
        first.signal_tree(signal.SIGSTOP)
        announce(lsn)
        if system.client.xpending(key, SCHEDULER_GROUP)["pending"] > 0:
            break
        first.signal_tree(signal.SIGCONT)
        acked(lsn)
        lsn += 1
    else:
        raise AssertionError("never caught the leader between reading and applying")
    wait_for(lambda: "became leader" in standby.output(), timeout=4 * ttl, what="the takeover")
    acked(lsn)
    announce(lsn + 1)
    acked(lsn + 1)
    # The old leader wakes up believing it leads, its stale batch in hand, and both act at
    # once until it finds out.
    first.signal_tree(signal.SIGCONT)
    announce(lsn + 2)
    wait_for(lambda: "lost leadership" in first.output(), timeout=4 * ttl, what="it to stand by")
    announce(lsn + 3)
    acked(lsn + 3)
    last = lsn + 3
    for partition in partitions:
        assert system.archived(partition) == list(range(1, last + 1))
        assert sorted(set(system.acks(partition))) == list(range(1, last + 1))
    archived = [
        (m.group(1), m.group(2))
        for line in system.worker_lines("archived")
        if (m := re.search(r" partition=(\d+) lsn=(\d+) ", line))
    ]
    assert len(archived) == len(set(archived)) == len(partitions) * last  # each entry once
    assert system.client.xpending(key, SCHEDULER_GROUP)["pending"] == 0
    system.assert_invariants()


def test_a_state_store_that_stops_answering_hangs_no_one(system: System) -> None:
    # Redis (the state store) keeps its connections open and answers nothing, as behind a
    # dropped link. The broker stays reachable.
    host, port = system.redis_url.removeprefix("redis://").split("/")[0].split(":")
    to_scheduler, to_worker = FaultProxy(host, int(port)), FaultProxy(host, int(port))
    try:
        system.env_overrides["ARCHIVER_BROKER_URL"] = system.redis_url
        worker = system.start_worker(
            env={"ARCHIVER_REDIS_URL": f"redis://127.0.0.1:{to_worker.port}/0"}
        )
        scheduler = system.start_scheduler(
            env={"ARCHIVER_REDIS_URL": f"redis://127.0.0.1:{to_scheduler.port}/0"}
        )
        system.write(1, 1)
        system.notify(1, 1, 1)
        system.wait_acked(1, 1)

        # First for the scheduler: its next call times out and says so, instead of waiting
        # forever. Then for the worker: the task arrives, its first call to the store times
        # out, and it is tried again.
        for lsn, (proxy, process, says) in enumerate(
            [
                (to_scheduler, scheduler, "scheduler lost its connection"),
                (to_worker, worker, "state store unavailable; retrying"),
            ],
            start=2,
        ):
            proxy.stall()
            system.write(1, lsn)
            system.notify(1, 1, lsn)
            wait_for(lambda p=process, w=says: w in p.output(), timeout=60, what=says)  # type: ignore[misc]
            proxy.resume()
            system.wait_acked(1, lsn, timeout=90)
        assert worker.popen.poll() is None
        assert scheduler.popen.poll() is None
        system.assert_invariants()
    finally:
        to_scheduler.close()
        to_worker.close()


def test_redis_restarted_with_aof_resumes_where_it_was(tmp_path: Path) -> None:
    redis = LocalRedis(tmp_path / "redis", appendonly=True).start()
    system = System(redis_url=redis.url, tmp=tmp_path, sink_url=(tmp_path / "bucket").as_uri())
    try:
        system.start()
        for lsn in range(1, 6):
            system.write(1, lsn)
        system.notify(1, 1, 5)
        system.wait_acked(1, 5)
        redis.stop()
        redis = LocalRedis(tmp_path / "redis", port=redis.port, appendonly=True).start()
        assert system.state(1)["acknowledged_lsn"] == 5  # state survived the restart
        for lsn in range(6, 11):
            system.write(1, lsn)
        system.notify(1, 1, 10)
        system.wait_acked(1, 10, timeout=60)
        assert system.archived(1) == list(range(1, 11))
        assert system.acks(1) == list(range(1, 11))
        system.assert_invariants()
    finally:
        system.close()
        redis.stop()


def test_tasks_waiting_in_the_queue_survive_a_redis_restart_with_aof(tmp_path: Path) -> None:
    redis = LocalRedis(tmp_path / "redis", appendonly=True).start()
    system = System(redis_url=redis.url, tmp=tmp_path, sink_url=(tmp_path / "bucket").as_uri())
    # Long enough that the sweep cannot send a lost task again within the test.
    system.env_overrides["ARCHIVER_DISPATCH_TIMEOUT_SECONDS"] = "3600"
    queue = f"archiver.{system.storage}"
    try:
        scheduler = system.start_scheduler()  # no worker yet: the tasks wait in the queue
        for partition in range(1, 6):
            system.write(partition, 1)
            system.notify(partition, 1, 1)
        wait_for(lambda: system.client.llen(queue) == 5, what="five tasks in the queue")
        assert scheduler.stop() == 0
        redis.stop()
        redis = LocalRedis(tmp_path / "redis", port=redis.port, appendonly=True).start()
        assert system.client.llen(queue) == 5
        system.start_worker()  # and no scheduler: only the queued tasks can archive them
        for partition in range(1, 6):
            system.wait_acked(partition, 1)
            system.assert_archive_matches_source(partition, 1)
        system.assert_invariants()
    finally:
        system.close()
        redis.stop()


def test_reconcile_rebuilds_lost_state_from_the_archive(system: System) -> None:
    system.start()
    for lsn in range(1, 6):
        system.write(1, lsn)
    system.notify(1, 1, 5)
    system.wait_acked(1, 5)
    for process in system.processes:
        assert process.stop() == 0
    # A partition whose archive has a hole: 3 is missing.
    archive_range(system.sink, system.tmp / "elsewhere", 2, [1, 2, 4])
    # Its entries were deleted after acknowledgement, but for 5, waiting to be archived.
    system.write(2, 5)
    system.watcher.check()  # every acknowledgement so far was checked; it watches on
    system.client.flushall()  # Redis state is lost
    # Run where the storage is readable: beyond what is known to be acknowledged (nothing,
    # now), objects are compared with the entries still on disk.
    env = system.env()
    result = CliRunner().invoke(main, ["reconcile", "--json"], env=env)
    assert result.exit_code == 0, result.output
    by_partition = {r["partition"]: r for r in json.loads(result.output)}
    assert by_partition[1]["next_lsn"] == 6
    assert by_partition[1]["changed"] is True
    assert by_partition[2]["holes"] == [{"expected": 3, "actual": 4}]
    assert system.state(1)["acknowledged_lsn"] == 5
    assert gap_pairs(system.state(2)) == [(3, 4)]
    assert system.state(2)["next_lsn"] == 5
    again = CliRunner().invoke(main, ["reconcile", "--json"], env=env)
    assert not any(r["changed"] for r in json.loads(again.output))

    # The producer's next notification resumes work without re-uploading.
    for lsn in range(6, 9):
        system.write(1, lsn)
    worker = system.start_worker()
    system.start_scheduler()
    system.notify(1, 1, 8)
    system.wait_acked(1, 8)
    assert system.acks(1) == [6, 7, 8]
    lines = worker.output()
    assert "archiver.worker skipped" not in lines
    assert lines.count("archiver.worker archived") == 3
    system.assert_invariants()
