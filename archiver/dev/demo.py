"""``archiver demo``: the whole system on one machine, with embedded defaults.

A reference producer writes entries for several partitions, a real scheduler process and a real
Celery worker archive them into a filesystem bucket, and acknowledged entries are pruned.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from archiver.archive.catalog import partition_archives
from archiver.config import Settings, redact_url
from archiver.core.wal_layout import entries_on_disk
from archiver.dev.local_redis import LocalRedis, answers
from archiver.dev.producer import ReferenceLogManager
from archiver.runtime.taskqueue import queue_name, worker_command
from archiver.sinks import FilesystemSink
from archiver.store.client import connect
from archiver.store.keys import RedisKeys
from archiver.store.streams import Streams

STORAGE = "demo"
PREFIX = "archiver-demo"


@dataclass(frozen=True)
class DemoOptions:
    partitions: int
    entries: int
    entry_size: int
    workers: int
    workdir: str
    timeout: float


def entry_files(partition: int, lsn: int, size: int) -> dict[str, bytes]:
    # Log-like content: repetitive enough to be realistic, different in every entry.
    line = f"partition={partition} lsn={lsn} op=update ref=refs/heads/main\n".encode()
    data = (line * (size // len(line) + 1))[:size]
    return {
        "MANIFEST": f"lsn {lsn}\n".encode(),
        "objects/pack.data": data,
    }


def _clear_namespace(url: str, prefix: str) -> None:
    client = connect(url)
    batch = [key for key in client.scan_iter(match=f"{prefix}:*", count=1000)]
    for i in range(0, len(batch), 500):
        client.delete(*batch[i : i + 500])
    client.delete(queue_name(STORAGE))


def _spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT)


def _stop(process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def run_demo(options: DemoOptions, console: Console) -> bool:
    started = time.monotonic()
    workdir = Path(options.workdir).resolve()
    storage_root = workdir / "storage"
    bucket = workdir / "bucket"
    logs = workdir / "logs"
    for path in (storage_root, bucket, logs):
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)

    redis_url = Settings.from_env().redis_url
    private: LocalRedis | None = None
    if not answers(redis_url):
        console.print(f"No Redis answers at {redact_url(redis_url)}; starting a private one.")
        private = LocalRedis(workdir / "redis").start()
        redis_url = private.url
    console.print(f"Redis: {redact_url(redis_url)} (prefix {PREFIX})")
    _clear_namespace(redis_url, PREFIX)

    env = {
        **os.environ,
        "ARCHIVER_REDIS_URL": redis_url,
        "ARCHIVER_BROKER_URL": redis_url,
        "ARCHIVER_REDIS_PREFIX": PREFIX,
        "ARCHIVER_SINK_URL": bucket.as_uri(),
        "ARCHIVER_STORAGES": f"{STORAGE}={storage_root}",
        "ARCHIVER_RETRY_MIN_SECONDS": "0.2",
        "ARCHIVER_RETRY_MAX_SECONDS": "5",
        "ARCHIVER_SWEEP_INTERVAL_SECONDS": "2",
        # Off unless asked for: a demo should not take ports a real deployment may use.
        "ARCHIVER_METRICS_PORT": os.environ.get("ARCHIVER_METRICS_PORT", "0"),
        "ARCHIVER_WORKER_METRICS_PORT": os.environ.get("ARCHIVER_WORKER_METRICS_PORT", "0"),
        "ARCHIVER_METRICS_DIR": str(workdir / "metrics"),
    }
    worker = _spawn(
        worker_command([queue_name(STORAGE)], options.workers, f"demo-{os.getpid()}@%h"),
        env,
        logs / "worker.log",
    )
    scheduler = _spawn([sys.executable, "-m", "archiver", "scheduler"], env, logs / "scheduler.log")
    client = connect(redis_url)
    producer = ReferenceLogManager(STORAGE, storage_root, Streams(client, RedisKeys(PREFIX)))
    total = options.partitions * options.entries
    ok = False
    try:
        with Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
        ) as progress:
            written = progress.add_task("written", total=total)
            acked = progress.add_task("archived and acknowledged", total=total)
            deadline = time.monotonic() + options.timeout
            for _round in range(options.entries):
                for partition in range(1, options.partitions + 1):
                    lsn = producer.high.get(partition, 0) + 1
                    producer.append(partition, entry_files(partition, lsn, options.entry_size))
                    progress.advance(written)
                producer.process_acks()
                progress.update(acked, completed=sum(producer.acknowledged.values()))
            while sum(producer.acknowledged.values()) < total:
                if time.monotonic() > deadline:
                    break
                for process, name in ((worker, "worker"), (scheduler, "scheduler")):
                    if process.poll() is not None:
                        console.print(f"[red]The {name} exited; see {logs / (name + '.log')}")
                        return False
                producer.process_acks(block_ms=200)
                progress.update(acked, completed=sum(producer.acknowledged.values()))
        ok = sum(producer.acknowledged.values()) == total
    finally:
        _stop(scheduler)
        _stop(worker)
        if private:
            private.stop()

    sink = FilesystemSink(bucket)
    archived = archived_bytes = 0
    for partition in range(1, options.partitions + 1):
        for archive in partition_archives(sink, STORAGE, partition):
            archived += 1
            archived_bytes += archive.size
    left = sum(len(entries_on_disk(storage_root, p)) for p in range(1, options.partitions + 1))
    seconds = time.monotonic() - started
    colour = "green" if ok else "red"
    lines = [
        f"\n[bold {colour}]{'Done' if ok else 'Incomplete'}.[/] {archived} of {total} entries "
        f"archived, {archived_bytes:,} bytes in {seconds:.1f} s; {left} WAL entries left on disk "
        "(acknowledged ones are pruned).",
        f"Archive: {bucket}",
        f"Logs:    {logs}",
        "\nList a partition's archives:",
        f"  ARCHIVER_SINK_URL={bucket.as_uri()} archiver ls {STORAGE} 1",
    ]
    if private is None:
        lines += [
            "Inspect the partition state:",
            f"  ARCHIVER_REDIS_PREFIX={PREFIX} archiver inspect partitions",
        ]
    if not ok:
        lines.append(
            f"[red]Not every entry was acknowledged in {options.timeout:.0f} s; see {logs}."
        )
    for line in lines:
        # Commands stay on one line, so they can be copied.
        console.print(line, soft_wrap=True)
    return ok
