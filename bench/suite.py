"""The benchmark suite: its scenarios each against a baseline measured in the same run on the
same servers, with real processes (redis-server, ``archiver scheduler``, ``archiver worker``,
moto's S3 server on loopback, behind a delay proxy for scenario 7).

    .venv/bin/python -m bench.suite                 # all of them: 1, 1d/1e, 2-7
    .venv/bin/python -m bench.suite --only 1d --only 7
    .venv/bin/python -m bench.suite --quick         # smaller sizes, for a smoke run

Prints a table (markdown when stdout is not a terminal) and writes ``bench/results/suite.json``
(``suite-1d-7.json`` for ``--only 1d --only 7``): the machine, the exact command and every
figure.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import multiprocessing
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import boto3
import psutil
from botocore.config import Config

from archiver.config import Settings
from archiver.core.lsn import format_lsn
from archiver.core.notification import Notification
from archiver.core.object_names import PartitionId, archive_key
from archiver.core.tarball import entry_tar_chunks
from archiver.core.wal_layout import entry_path
from archiver.dev.local_redis import LocalRedis
from archiver.dev.producer import write_entry
from archiver.runtime.taskqueue import make_celery
from archiver.sinks.s3 import CLIENT_CONFIG, _send_body_at_once
from bench import noop_app
from bench.common import delay_proxy, s3_server, save, show_table
from bench.harness import STORAGE, Fleet, entry_files

TMPFS = Path("/dev/shm")  # noqa: S108 - a private directory is made inside it


@dataclass
class Result:
    scenario: str
    name: str
    measured: str
    archiver: float
    baseline: float | None
    unit: str
    target: str
    met: bool
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        return None if not self.baseline else self.archiver / self.baseline


def _bucket(work: Path) -> Path:
    """A filesystem bucket's root: it must be there before a worker host starts."""
    (work / "bucket").mkdir()
    return work / "bucket"


def _work_dir() -> tempfile.TemporaryDirectory[str]:
    return tempfile.TemporaryDirectory(dir=TMPFS if TMPFS.is_dir() else None)


def _rate_of_fleet(
    fleet: Fleet, partitions: int, entries: int, scheduler: bool = True, worker: bool = True
) -> tuple[float, dict[str, Any]]:
    """Announce every partition's entries at once; entries/s until the last acknowledgement."""
    if worker:
        fleet.start_worker()
    if scheduler:
        fleet.start_scheduler()
    trips_before = fleet.worker_metric("archiver_redis_round_trips_total")
    started = time.monotonic()
    fleet.notify([Notification(STORAGE, p, 1, entries) for p in range(1, partitions + 1)])
    last = fleet.wait_acked(dict.fromkeys(range(1, partitions + 1), entries))
    seconds = last - started
    total = partitions * entries
    deadline = time.monotonic() + 30
    while fleet.worker_metric("archiver_entries_archived_total") < total:
        if time.monotonic() > deadline:
            raise RuntimeError("the worker host's metrics never counted every entry")
        time.sleep(0.05)
    trips = fleet.worker_metric("archiver_redis_round_trips_total") - trips_before
    return total / seconds, {
        "entries": total,
        "seconds": round(seconds, 3),
        "redis_round_trips_per_entry": round(trips / total, 2),
    }


def scenario_1(quick: bool, concurrency: int) -> Result:
    """200 partitions of 4 KiB entries into a filesystem bucket, against bare Celery no-op
    tasks through the same broker at the same worker concurrency."""
    partitions, entries = (50, 20) if quick else (200, 50)
    total = partitions * entries
    with _work_dir() as tmp:
        work = Path(tmp)
        fleet = Fleet(work, _bucket(work).as_uri(), concurrency)
        try:
            fleet.write(partitions, entries, 4096)
            archiver_rate, details = _rate_of_fleet(fleet, partitions, entries)
            fleet.stop()
            # Same redis-server (a fresh one: the archiver's run is over), same concurrency.
            fleet = Fleet(work / "noop", "file:///unused", concurrency)
            baseline_rate = _noop_rate(fleet, total)
        finally:
            fleet.stop()
    ratio = archiver_rate / baseline_rate
    return Result(
        "1",
        f"{partitions} partitions × {entries} × 4 KiB, filesystem sink",
        "entries/s vs Celery no-op tasks/s",
        archiver_rate,
        baseline_rate,
        "/s",
        "≥ 1.0×",
        ratio >= 1.0,
        {**details, "concurrency": concurrency, "bucket": "tmpfs"},
    )


def scenario_9(quick: bool, concurrency: int) -> Result:
    """Celery task events on (``archiver worker --events``, what Flower needs), against the
    same work without them, in the same run. One entry per partition, so that every entry
    is a task of its own (a task chains a partition's entries): the most events per entry.
    A receiver on the event exchange drains them, as Flower would."""
    partitions, entries = (200, 1) if quick else (3000, 1)
    rates: dict[bool, float] = {}
    cpu: dict[bool, float] = {}
    for events in (False, True):
        with _work_dir() as tmp:
            work = Path(tmp)
            fleet = Fleet(work, _bucket(work).as_uri(), concurrency, events=events)
            stop = threading.Event()
            drained = threading.Thread(target=_drain_events, args=(fleet.redis.url, stop))
            drained.start()
            try:
                fleet.write(partitions, entries, 4096)
                rates[events], _ = _rate_of_fleet(fleet, partitions, entries)
                host = psutil.Process(fleet.processes["worker"].pid)
                cpu[events] = sum(_cpu(p) for p in [host, *host.children()])
            finally:
                stop.set()
                drained.join(10)
                fleet.stop()
    total = partitions * entries
    ratio = rates[True] / rates[False]
    return Result(
        "9",
        f"task events on: {partitions} partitions × {entries} × 4 KiB, tmpfs",
        "entries/s with events vs without",
        rates[True],
        rates[False],
        "/s",
        "≥ 0.9×",
        ratio >= 0.9,
        {
            "worker_host_cpu_ms_per_entry": {
                "without_events": round(cpu[False] / total * 1000, 2),
                "with_events": round(cpu[True] / total * 1000, 2),
            },
            "concurrency": concurrency,
        },
    )


def scenario_10(quick: bool, concurrency: int) -> Result:
    """Scenario 1's work on a Redis with a replica, acknowledging only what the replica holds
    (``ARCHIVER_REDIS_MIN_REPLICAS=1``), against the same without waiting, in the same run."""
    partitions, entries = (50, 20) if quick else (200, 50)
    rates: dict[int, float] = {}
    trips: dict[int, float] = {}
    for replicas in (0, 1):
        with _work_dir() as tmp:
            work = Path(tmp)
            env = {"ARCHIVER_REDIS_MIN_REPLICAS": str(replicas)}
            fleet = Fleet(work, _bucket(work).as_uri(), concurrency, env=env)
            replica = LocalRedis(
                work / "replica", extra_args=["--replicaof", "127.0.0.1", str(fleet.redis.port)]
            ).start()
            try:
                fleet.write(partitions, entries, 4096)
                rates[replicas], details = _rate_of_fleet(fleet, partitions, entries)
                trips[replicas] = details["redis_round_trips_per_entry"]
            finally:
                fleet.stop()
                replica.stop()
    total = partitions * entries
    ratio = rates[1] / rates[0]
    return Result(
        "10",
        f"{partitions} partitions × {entries} × 4 KiB, tmpfs, Redis with a replica",
        "entries/s with MIN_REPLICAS=1 vs 0",
        rates[1],
        rates[0],
        "/s",
        "≥ 0.8×",
        ratio >= 0.8,
        {
            "entries": total,
            "ms_per_entry_added": round((1 / rates[1] - 1 / rates[0]) * 1000 * concurrency, 3),
            "redis_round_trips_per_entry": trips,
            "concurrency": concurrency,
        },
    )


def _drain_events(broker: str, stop: threading.Event) -> None:
    """Receive every Celery event until ``stop``, as a monitor does."""
    from celery import Celery

    app = Celery(broker=broker)
    while not stop.is_set():
        with contextlib.suppress(Exception), app.connection() as connection:
            receiver = app.events.Receiver(connection, handlers={"*": lambda _event: None})
            for _ in receiver.itercapture(limit=None, timeout=1.0, wakeup=False):
                if stop.is_set():
                    return


def _noop_rate(fleet: Fleet, total: int) -> float:
    fleet.env["ARCHIVER_BROKER_URL"] = fleet.redis.url
    fleet.spawn(
        "noop-worker",
        [
            sys.executable, "-m", "celery", "-A", "bench.noop_app", "worker",
            "-Q", noop_app.QUEUE, "-c", str(fleet.concurrency), "-P", "prefork",
            "--without-gossip", "--without-mingle", "--without-heartbeat",
            "--loglevel", "INFO", "-n", f"noop-{time.time_ns()}@host",
        ],
    )  # fmt: skip
    fleet.wait(lambda: "ready." in fleet.log("noop-worker"), "the no-op worker", timeout=60)
    app = make_celery(Settings(redis_url=fleet.redis.url, broker_url=fleet.redis.url))
    started = time.monotonic()
    with app.producer_or_acquire() as producer:
        for _ in range(total):
            app.send_task("bench.noop", queue=noop_app.QUEUE, producer=producer)
    fleet.wait(
        lambda: int(fleet.client.get(noop_app.DONE_KEY) or 0) >= total,
        "the no-op tasks",
        timeout=600,
    )
    return total / (time.monotonic() - started)


def _tar_bytes(root: Path, partition: int, lsn: int) -> bytes:
    buffer = io.BytesIO()
    for chunk in entry_tar_chunks(entry_path(root, partition, lsn), format_lsn(lsn)):
        buffer.write(chunk)
    return buffer.getvalue()


def _all_tars(fleet: Fleet, partitions: int, entries: int) -> list[tuple[str, bytes]]:
    """(key, tar) of every entry written: the very bytes the archiver will store."""
    return [
        (archive_key(STORAGE, p, lsn), _tar_bytes(fleet.root, p, lsn))
        for p in range(1, partitions + 1)
        for lsn in range(1, entries + 1)
    ]


def _put_all(args: tuple[str, str, list[tuple[str, bytes]]]) -> int:
    url, bucket, objects = args
    client = boto3.client("s3", endpoint_url=url, region_name="us-east-1", config=CLIENT_CONFIG)
    for key, body in objects:
        client.put_object(Bucket=bucket, Key=key, Body=body, IfNoneMatch="*")
    return len(objects)


def _raw_put_rate(
    url: str, bucket: str, objects: list[tuple[str, bytes]], workers: int
) -> tuple[float, float]:
    """put_object of the same bytes from ``workers`` processes, like a prefork worker host.
    Returns puts/s and the CPU seconds the processes used."""
    shares = [(url, bucket, objects[i::workers]) for i in range(workers)]
    cpu_before = _children_cpu()
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        started = time.monotonic()
        done = sum(pool.map(_put_all, shares))
        seconds = time.monotonic() - started
    assert done == len(objects)
    return done / seconds, _children_cpu() - cpu_before


def _children_cpu() -> float:
    """CPU seconds of this process's children that have ended (the pool's, once it closed)."""
    times = os.times()
    return times.children_user + times.children_system


def _cpu(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def _server_process(url: str) -> psutil.Process:
    """The S3 server started by ``s3_server``: the child listening on the URL's port."""
    port = url.rsplit(":", 1)[1]
    for child in psutil.Process().children():
        if port in child.cmdline():
            return child
    raise RuntimeError(f"no child process serves {url}")


def _s3_scenario(
    number: str, partitions: int, entries: int, size: int, concurrency: int, target: float
) -> Result:
    with s3_server() as url, _work_dir() as tmp:
        work = Path(tmp)
        client = boto3.client("s3", endpoint_url=url, region_name="us-east-1", config=CLIENT_CONFIG)
        client.create_bucket(Bucket="archive")
        client.create_bucket(Bucket="raw")
        fleet = Fleet(work, f"s3://archive/wal?endpoint_url={url}&region=us-east-1", concurrency)
        try:
            fleet.write(partitions, entries, size)
            # The baseline uploads the very bytes the archiver will upload: the same tars.
            objects = _all_tars(fleet, partitions, entries)
            # Where the CPU goes on each side, per entry: the server's share is what the
            # two sides compete for on a small machine.
            server = _server_process(url)
            server_cpu = _cpu(server)
            baseline_rate, baseline_client_cpu = _raw_put_rate(url, "raw", objects, concurrency)
            baseline_server_cpu = _cpu(server) - server_cpu
            server_cpu = _cpu(server)
            archiver_rate, details = _rate_of_fleet(fleet, partitions, entries)
            archiver_server_cpu = _cpu(server) - server_cpu
            pool = psutil.Process(fleet.processes["worker"].pid).children()
            worker_cpu = sum(_cpu(process) for process in pool)
        finally:
            fleet.stop()
    total = len(objects)
    details["cpu_ms_per_entry"] = {
        "baseline_clients": round(baseline_client_cpu / total * 1000, 2),
        "baseline_server": round(baseline_server_cpu / total * 1000, 2),
        "archiver_worker_processes": round(worker_cpu / total * 1000, 2),
        "archiver_server": round(archiver_server_cpu / total * 1000, 2),
    }
    ratio = archiver_rate / baseline_rate
    plural = "s" if partitions > 1 else ""
    what = f"{partitions} partition{plural} × {entries} × {size // 1024} KiB, S3"
    return Result(
        number,
        what,
        "entries/s vs raw put_object/s, same bytes and concurrency",
        archiver_rate,
        baseline_rate,
        "/s",
        f"≥ {target}×",
        ratio >= target,
        {**details, "concurrency": concurrency},
    )


def scenario_2(quick: bool, concurrency: int) -> Result:
    partitions, entries = (16, 10) if quick else (64, 20)
    return _s3_scenario("2", partitions, entries, 64 * 1024, concurrency, 0.95)


def scenario_3(quick: bool, concurrency: int) -> Result:
    return _s3_scenario("3", 1, 50 if quick else 300, 16 * 1024, 1, 0.8)


def scenario_4(quick: bool, concurrency: int) -> Result:
    """One big entry: throughput against a raw multipart upload of an equal prebuilt file, and
    the worker process's peak RSS growth while it archives."""
    size = (256 if quick else 1024) * 1024 * 1024
    part = 8 * 1024 * 1024
    with s3_server() as url, tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        client = boto3.client("s3", endpoint_url=url, region_name="us-east-1", config=CLIENT_CONFIG)
        client.create_bucket(Bucket="archive")
        client.create_bucket(Bucket="raw")
        fleet = Fleet(work, f"s3://archive/wal?endpoint_url={url}&region=us-east-1", 1)
        try:
            data = work / "big.bin"
            with open(data, "wb") as out:
                for _ in range(size // part):
                    out.write(os.urandom(part))
            write_entry(fleet.root, 1, 1, {})
            data.rename(entry_path(fleet.root, 1, 1) / "data")
            prebuilt = work / "prebuilt.tar"
            with open(prebuilt, "wb") as out:
                for chunk in entry_tar_chunks(entry_path(fleet.root, 1, 1), format_lsn(1)):
                    out.write(chunk)
            started = time.monotonic()
            upload = client.create_multipart_upload(Bucket="raw", Key="big.tar")
            parts: list[Any] = []
            with open(prebuilt, "rb") as source:
                number = 1
                while chunk := source.read(part):
                    response = client.upload_part(
                        Bucket="raw",
                        Key="big.tar",
                        UploadId=upload["UploadId"],
                        PartNumber=number,
                        Body=chunk,
                    )
                    parts.append({"PartNumber": number, "ETag": response["ETag"]})
                    number += 1
            client.complete_multipart_upload(
                Bucket="raw",
                Key="big.tar",
                UploadId=upload["UploadId"],
                MultipartUpload={"Parts": parts},
            )
            baseline = prebuilt.stat().st_size / (time.monotonic() - started)
            prebuilt.unlink()

            host = fleet.start_worker()
            fleet.start_scheduler()
            # A small entry first: the growth measured is the big entry's, not the first
            # task's imports and S3 client.
            write_entry(fleet.root, 2, 1, entry_files(2, 1, 4096))
            fleet.notify([Notification(STORAGE, 2, 1, 1)])
            fleet.wait_acked({2: 1})
            child = host.children()[0]
            rss_before = child.memory_info().rss
            peak = [rss_before]
            done = threading.Event()

            def sample() -> None:
                while not done.wait(0.02):
                    try:
                        peak.append(max(p.memory_info().rss for p in host.children()))
                    except psutil.Error:
                        continue

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            started = time.monotonic()
            fleet.notify([Notification(STORAGE, 1, 1, 1)])
            last = fleet.wait_acked({1: 1}, timeout=1800)
            done.set()
            sampler.join()
            archived = (size + 1024) / (last - started)
        finally:
            fleet.stop()
    growth = (max(peak) - rss_before) / 2**20
    ratio = archived / baseline
    return Result(
        "4",
        f"one {size // 2**20} MiB entry, S3",
        "bytes/s vs raw multipart upload; worker RSS growth",
        archived / 2**20,
        baseline / 2**20,
        "MiB/s",
        "≥ 0.8×; RSS growth ≤ 64 MiB",
        ratio >= 0.8 and growth <= 64,
        {"rss_growth_mib": round(growth, 1), "part_size_mib": part // 2**20},
    )


def scenario_5(quick: bool, concurrency: int) -> Result:
    """Scheduler ingest: notifications per second through a real scheduler process, and its
    memory with many partitions tracked; then the same at a million tracked partitions."""
    notifications, partitions = (20_000, 2_000) if quick else (100_000, 10_000)
    tracked = 100_000 if quick else 1_000_000
    with _work_dir() as tmp:
        work = Path(tmp)
        fleet = Fleet(work, _bucket(work).as_uri(), concurrency)
        try:
            # The scenario as stated: every partition is new, so each one's first
            # notification claims an entry and sends its task through the broker.
            rate = _ingest(fleet, notifications, partitions, first_partition=1)
            rss = psutil.Process(fleet.processes["scheduler"].pid).memory_info().rss / 2**20
            # A million partitions tracked, all busy (in flight, tasks queued): new
            # watermarks for random ones, the steady state of a large fleet.
            _track(fleet, tracked, first_partition=partitions + 1)
            rate_tracked = _ingest(
                fleet, 2 * notifications, tracked, first_partition=partitions + 1, spread=True
            )
            rss_tracked = psutil.Process(fleet.processes["scheduler"].pid).memory_info().rss
            known = fleet.client.scard(fleet.keys.partitions_index)
            redis_mib = fleet.client.info("memory")["used_memory"] / 2**20
        finally:
            fleet.stop()
    return Result(
        "5",
        f"{notifications:,} notifications over {partitions:,} new partitions",
        "notifications/s ingested; scheduler RSS",
        rate,
        None,
        "/s",
        "≥ 20,000/s; RSS ≤ 150 MiB",
        rate >= 20_000 and rss <= 150,
        {
            "scheduler_rss_mib": round(rss, 1),
            "tracked_partitions": known,
            "tracked_rate": round(rate_tracked),
            "tracked_scheduler_rss_mib": round(rss_tracked / 2**20, 1),
            "redis_used_memory_mib": round(redis_mib),
            "redis_bytes_per_partition": round(redis_mib * 2**20 / known),
        },
    )


def _track(fleet: Fleet, count: int, first_partition: int) -> None:
    """``count`` partitions as a busy fleet leaves them: an entry in flight under a live grant
    whose task was sent, more announced, and a look due when the grant ends. Written straight
    into Redis (in the scripts' format): a million notifications and tasks would take long."""
    now = fleet.client.time()
    now_ms = int(now[0]) * 1000 + int(now[1]) // 1000
    lease_until = now_ms + 3_600_000
    for start in range(first_partition, first_partition + count, 10_000):
        pipe = fleet.client.pipeline(transaction=False)
        members = []
        for partition in range(start, min(start + 10_000, first_partition + count)):
            member = fleet.keys.partition_id(PartitionId(STORAGE, partition))
            members.append(member)
            pipe.hset(
                fleet.keys.partition(PartitionId(STORAGE, partition)),
                mapping={
                    "next": 1, "high": 1, "inflight": 1, "token": 1, "dispatched": 1,
                    "grant_lsn": 1, "grants": 1, "attempts": 0, "lease_until": lease_until,
                    "claimed_ms": now_ms, "created_ms": now_ms, "progress_ms": now_ms,
                    "oldest_ms": now_ms,
                },
            )  # fmt: skip
        pipe.sadd(fleet.keys.partitions_index, *members)
        pipe.zadd(fleet.keys.due, dict.fromkeys(members, lease_until))
        pipe.execute()


def _ingest(
    fleet: Fleet, notifications: int, partitions: int, first_partition: int, spread: bool = False
) -> float:
    """Publish first, then let a freshly started scheduler drain the stream: its own rate,
    not the publisher's, timed from when it took the lead. With ``spread``, each notification
    goes to a random partition."""
    scheduler = fleet.processes.get("scheduler")
    if scheduler is not None:
        scheduler.terminate()
        scheduler.wait(30)
        fleet.client.delete(fleet.keys.leader)
    batch = []
    rng = random.Random(5)
    for i in range(notifications):
        offset = rng.randrange(partitions) if spread else i % partitions
        batch.append(Notification(STORAGE, first_partition + offset, 1, 2 + i // partitions))
        if len(batch) == 10_000:
            fleet.notify(batch)
            batch = []
    fleet.notify(batch)
    # From when the scheduler leads (checked every 10 ms): its start-up is not ingest.
    fleet.start_scheduler()
    started = time.monotonic()
    fleet.wait(lambda: fleet.client.xlen(fleet.keys.notifications) == 0, "the stream drained", 900)
    return notifications / (time.monotonic() - started)


def scenario_6(quick: bool, concurrency: int, rate: float) -> Result:
    """Notification to acknowledgement latency with the producer announcing each entry as it
    is written, at ``rate`` entries/s over 200 partitions."""
    partitions = 200
    total = 500 if quick else 3000
    with _work_dir() as tmp:
        work = Path(tmp)
        fleet = Fleet(work, _bucket(work).as_uri(), concurrency)
        try:
            fleet.write(partitions, total // partitions + 1, 4096)
            fleet.start_worker()
            fleet.start_scheduler()
            sent: dict[tuple[int, int], float] = {}
            latencies: list[float] = []
            finished = threading.Event()

            def read_acks() -> None:
                after = "$"
                while not finished.is_set():
                    after, acks = fleet.streams.read_acks(after, count=1000, block_ms=200)
                    now = time.monotonic()
                    for ack in acks:
                        at = sent.pop((ack.partition, ack.lsn), None)
                        if at is not None:
                            latencies.append(now - at)

            reader = threading.Thread(target=read_acks, daemon=True)
            reader.start()
            time.sleep(0.5)  # the reader is blocked on the stream's end
            interval = 1 / rate
            started = time.monotonic()
            for i in range(total):
                partition, lsn = 1 + i % partitions, 1 + i // partitions
                due = started + i * interval
                if (wait := due - time.monotonic()) > 0:
                    time.sleep(wait)
                sent[(partition, lsn)] = time.monotonic()
                fleet.streams.publish_notification(Notification(STORAGE, partition, 1, lsn))
            fleet.wait(lambda: len(latencies) >= total, "every acknowledgement", timeout=120)
            finished.set()
        finally:
            fleet.stop()
    latencies.sort()
    p99 = latencies[int(len(latencies) * 0.99) - 1] * 1000
    return Result(
        "6",
        f"latency at {rate:,.0f} entries/s (20% of scenario 1)",
        "notification → acknowledgement, p99",
        p99,
        None,
        "ms",
        "p99 ≤ 50 ms",
        p99 <= 50,
        {
            "p50_ms": round(statistics.median(latencies) * 1000, 1),
            "max_ms": round(latencies[-1] * 1000, 1),
            "entries": total,
        },
    )


DISK = Path("/var/tmp")  # noqa: S108 - on the VM's disk; a private directory is made inside


def _fsync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _durable_writes(args: tuple[Path, list[tuple[str, bytes]]]) -> int:
    """Crash-safe create-once writes, nothing else: write a temporary file, fsync it, link it
    into place, fsync the directory (a new directory made durable in its parent once)."""
    root, objects = args
    made: set[Path] = set()
    for key, body in objects:
        final = root / key
        if final.parent not in made:
            final.parent.mkdir(parents=True, exist_ok=True)
            _fsync_directory(final.parent.parent)
            made.add(final.parent)
        temp = final.with_name(f".tmp-{final.name}.{os.getpid()}")
        with open(temp, "xb") as f:
            f.write(body)
            f.flush()
            os.fsync(f.fileno())
        os.link(temp, final)
        os.unlink(temp)
        _fsync_directory(final.parent)
    return len(objects)


def _durable_write_rate(root: Path, objects: list[tuple[str, bytes]], workers: int) -> float:
    """Writes/s from ``workers`` processes, each with its own share of the partitions, as the
    archiver's worker processes have."""
    partitions = sorted({key.split("/")[1] for key, _ in objects})
    shares = [set(partitions[i::workers]) for i in range(workers)]
    work = [(root, [o for o in objects if o[0].split("/")[1] in share]) for share in shares]
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        started = time.monotonic()
        done = sum(pool.map(_durable_writes, work))
        seconds = time.monotonic() - started
    assert done == len(objects)
    return done / seconds


def scenario_1d_1e(quick: bool, concurrency: int) -> list[Result]:
    """Scenario 1 with the bucket on the VM's disk, against Celery no-op tasks (1d) and
    against a bare durable-write loop of the same tars, layout and concurrency (1e)."""
    partitions, entries = (50, 20) if quick else (200, 50)
    total = partitions * entries
    with _work_dir() as tmp, tempfile.TemporaryDirectory(dir=DISK) as disk:
        work = Path(tmp)
        bucket = Path(disk) / "bucket"
        bucket.mkdir()
        fleet = Fleet(work, bucket.as_uri(), concurrency)
        try:
            fleet.write(partitions, entries, 4096)
            objects = _all_tars(fleet, partitions, entries)
            archiver_rate, details = _rate_of_fleet(fleet, partitions, entries)
            fleet.stop()
            loop_rate = _durable_write_rate(Path(disk) / "loop", objects, concurrency)
            fleet = Fleet(work / "noop", "file:///unused", concurrency)
            noop_rate = _noop_rate(fleet, total)
        finally:
            fleet.stop()
    what = f"{partitions} partitions × {entries} × 4 KiB, filesystem sink on the VM's disk"
    details = {**details, "concurrency": concurrency, "bucket": str(DISK)}
    return [
        Result(
            "1d",
            what,
            "entries/s vs Celery no-op tasks/s",
            archiver_rate,
            noop_rate,
            "/s",
            "≥ 1.0×",
            archiver_rate >= noop_rate,
            details,
        ),
        Result(
            "1e",
            what,
            "entries/s vs durable-write loop/s (write, fsync, link, fsync dir)",
            archiver_rate,
            loop_rate,
            "/s",
            "≥ 0.5×",
            archiver_rate >= 0.5 * loop_rate,
            details,
        ),
    ]


def _raw_put_threads(
    url: str, bucket: str, objects: list[tuple[str, bytes]], threads: int, wait: bool = True
) -> float:
    """put_object/s from ``threads`` threads; with ``wait=False``, without botocore's wait
    for ``100 Continue`` before each body, as the archiver's single-part uploads do."""
    config = CLIENT_CONFIG.merge(Config(max_pool_connections=threads))
    client = boto3.client("s3", endpoint_url=url, region_name="us-east-1", config=config)
    if not wait:
        client.meta.events.register_first("before-sign.s3.PutObject", _send_body_at_once)

    def put(item: tuple[str, bytes]) -> None:
        client.put_object(Bucket=bucket, Key=item[0], Body=item[1], IfNoneMatch="*")

    with ThreadPoolExecutor(threads) as pool:
        started = time.monotonic()
        list(pool.map(put, objects))
        return len(objects) / (time.monotonic() - started)


def _tree_rss(process: psutil.Process) -> int:
    total = 0
    for p in [process, *process.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            total += p.memory_info().rss
    return total


def scenario_7(quick: bool, concurrency: int) -> Result:
    """S3 behind a delay proxy (20 ms each way, 40 ms round trips), 16 uploads in flight: a
    threads-pool worker host against raw put_object from 16 threads through the same proxy;
    and the worker host's RSS per upload in flight."""
    in_flight = 16
    partitions, entries = (32, 4) if quick else (64, 20)
    size = 64 * 1024
    with s3_server() as url, delay_proxy(url, 0.020) as far, _work_dir() as tmp:
        work = Path(tmp)
        client = boto3.client("s3", endpoint_url=url, region_name="us-east-1", config=CLIENT_CONFIG)
        client.create_bucket(Bucket="archive")
        client.create_bucket(Bucket="raw")
        fleet = Fleet(
            work,
            f"s3://archive/wal?endpoint_url={far}&region=us-east-1",
            in_flight,
            pool="threads",
        )
        try:
            fleet.write(partitions, entries, size)
            objects = _all_tars(fleet, partitions, entries)
            baseline_rate = _raw_put_threads(far, "raw", objects, in_flight)
            client.create_bucket(Bucket="raw-no-wait")
            no_wait_rate = _raw_put_threads(far, "raw-no-wait", objects, in_flight, wait=False)
            host = fleet.start_worker()
            idle_rss = _tree_rss(host)
            peak = [idle_rss]
            done = threading.Event()

            def sample() -> None:
                while not done.wait(0.05):
                    peak.append(_tree_rss(host))

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            archiver_rate, details = _rate_of_fleet(fleet, partitions, entries, worker=False)
            done.set()
            sampler.join()
        finally:
            fleet.stop()
    per_upload = max(peak) / in_flight / 2**20
    ratio = archiver_rate / baseline_rate
    return Result(
        "7",
        f"{partitions} partitions × {entries} × 64 KiB, S3 40 ms away, {in_flight} in flight",
        "entries/s vs raw put_object/s from 16 threads; worker-host RSS per upload",
        archiver_rate,
        baseline_rate,
        "/s",
        "≥ 0.95×; ≤ 12 MiB RSS per upload in flight",
        ratio >= 0.95 and per_upload <= 12,
        {
            **details,
            "pool": "threads",
            "in_flight": in_flight,
            "rss_per_upload_mib": round(per_upload, 1),
            "worker_host_peak_rss_mib": round(max(peak) / 2**20, 1),
            "worker_host_idle_rss_mib": round(idle_rss / 2**20, 1),
            "delay_each_way_ms": 20,
            "raw_put_without_100_continue_per_s": round(no_wait_rate, 1),
            "ratio_to_raw_put_without_100_continue": round(archiver_rate / no_wait_rate, 3),
        },
    )


SCENARIOS = ("1", "1d", "2", "3", "4", "5", "6", "7", "9", "10")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--only", action="append", choices=SCENARIOS, help="1d also gives 1e (one run)"
    )
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    parser.add_argument(
        "--concurrency", type=int, default=psutil.cpu_count() or 2, help="worker processes"
    )
    parser.add_argument(
        "--latency-rate",
        type=float,
        help="entries/s for scenario 6 (default: 20%% of scenario 1's rate, or 200/s)",
    )
    args = parser.parse_args()
    chosen = args.only or list(SCENARIOS)
    results: list[Result] = []
    runners: dict[str, Callable[[], list[Result]]] = {
        "1": lambda: [scenario_1(args.quick, args.concurrency)],
        "1d": lambda: scenario_1d_1e(args.quick, args.concurrency),
        "2": lambda: [scenario_2(args.quick, args.concurrency)],
        "3": lambda: [scenario_3(args.quick, args.concurrency)],
        "4": lambda: [scenario_4(args.quick, args.concurrency)],
        "5": lambda: [scenario_5(args.quick, args.concurrency)],
        "7": lambda: [scenario_7(args.quick, args.concurrency)],
        "9": lambda: [scenario_9(args.quick, args.concurrency)],
        "10": lambda: [scenario_10(args.quick, args.concurrency)],
    }
    for number in chosen:
        print(f"scenario {number} ...", flush=True)
        if number == "6":
            first = next((r for r in results if r.scenario == "1"), None)
            rate = args.latency_rate or (0.2 * first.archiver if first else 200.0)
            done = [scenario_6(args.quick, args.concurrency, rate)]
        else:
            done = runners[number]()
        results.extend(done)
        _show(done)
    print()
    _show(results)
    name = "suite" + ("-quick" if args.quick else "")
    if args.only:
        name += "-" + "-".join(sorted(set(args.only)))
    path = save(
        name,
        {"results": [{**asdict(r), "ratio": r.ratio} for r in results]},
    )
    print(f"written to {path}")


def _rows(results: list[Result]) -> list[list[str]]:
    return [
        [
            r.scenario,
            r.name,
            r.measured,
            f"{r.archiver:,.1f} {r.unit}",
            "-" if r.baseline is None else f"{r.baseline:,.1f} {r.unit}",
            "-" if r.ratio is None else f"{r.ratio:.2f}×",
            r.target,
            "yes" if r.met else "NO",
        ]
        for r in results
    ]


HEADER = ["#", "scenario", "measured", "archiver", "baseline", "ratio", "target", "met"]


def _show(results: list[Result]) -> None:
    show_table(HEADER, _rows(results))


if __name__ == "__main__":
    main()
