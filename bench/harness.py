"""A real archiver on this machine for benchmarks: its own redis-server (state and broker), a
scheduler and a worker host started as processes, exactly as in production, and a producer
writing entries beforehand.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import psutil

from archiver.core.notification import Notification
from archiver.dev.local_redis import LocalRedis, free_port
from archiver.dev.producer import write_entry
from archiver.store.client import connect
from archiver.store.keys import RedisKeys
from archiver.store.streams import Streams

STORAGE = "bench"


def entry_files(partition: int, lsn: int, size: int) -> dict[str, bytes]:
    """An entry of ``size`` bytes that compresses like real data does not: random bytes."""
    return {"MANIFEST": b"partition %d lsn %d\n" % (partition, lsn), "data": os.urandom(size)}


class Fleet:
    def __init__(
        self,
        work: Path,
        sink_url: str,
        concurrency: int,
        env: Mapping[str, str] | None = None,
        pool: str = "prefork",
        events: bool = False,
    ) -> None:
        self.work = work
        self.pool = pool
        self.events = events
        self.root = work / "wal"
        self.root.mkdir(parents=True, exist_ok=True)
        self.redis = LocalRedis(work / "redis").start()
        self.client = connect(self.redis.url)
        self.keys = RedisKeys("archiver")
        self.streams = Streams(self.client, self.keys)
        self.concurrency = concurrency
        self.worker_metrics_port = free_port()
        self.env = {
            **os.environ,
            "ARCHIVER_REDIS_URL": self.redis.url,
            "ARCHIVER_SINK_URL": sink_url,
            "ARCHIVER_STORAGES": f"{STORAGE}={self.root}",
            "ARCHIVER_METRICS_PORT": "0",
            "ARCHIVER_WORKER_METRICS_PORT": str(self.worker_metrics_port),
            "ARCHIVER_METRICS_DIR": str(work / "metrics"),
            "ARCHIVER_LOG_LEVEL": "WARNING",
            **(env or {}),
        }
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def spawn(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        with open(self.work / f"{name}.log", "wb") as log:
            process = subprocess.Popen(args, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        self.processes[name] = process
        return process

    def start_scheduler(self) -> psutil.Process:
        process = self.spawn("scheduler", [sys.executable, "-m", "archiver", "scheduler"])
        self.wait(lambda: self.client.get(self.keys.leader) is not None, "a scheduler leader")
        return psutil.Process(process.pid)

    def start_worker(self) -> psutil.Process:
        process = self.spawn(
            "worker",
            [
                sys.executable, "-m", "archiver", "worker",
                "--concurrency", str(self.concurrency),
                "--pool", self.pool,
                "--node-name", f"bench-{os.getpid()}@host",
                *(["--events"] if self.events else []),
            ],
        )  # fmt: skip
        host = psutil.Process(process.pid)
        if self.pool == "prefork":
            self.wait(lambda: len(host.children()) >= self.concurrency, "the worker processes")
        self.wait(lambda: "ready." in self.log("worker"), "the worker to be ready")
        return host

    def log(self, name: str) -> str:
        return (self.work / f"{name}.log").read_text(errors="replace")

    def wait(self, condition: Any, what: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            for name, process in self.processes.items():
                if process.poll() is not None:
                    raise RuntimeError(f"{name} exited:\n{self.log(name)[-3000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out waiting for {what}")
            time.sleep(0.01)

    def write(self, partitions: int, entries: int, size: int, first_lsn: int = 1) -> None:
        for partition in range(1, partitions + 1):
            for lsn in range(first_lsn, first_lsn + entries):
                write_entry(self.root, partition, lsn, entry_files(partition, lsn, size))

    def notify(self, notifications: list[Notification]) -> None:
        pipe = self.client.pipeline(transaction=False)
        for n in notifications:
            pipe.xadd(self.keys.notifications, n.fields())  # type: ignore[arg-type]
        pipe.execute()

    def wait_acked(self, highs: Mapping[int, int], timeout: float = 600.0) -> float:
        """Block until every partition's acknowledgements reach its high LSN; returns when
        (``time.monotonic()``) the last one arrived."""
        acked: dict[int, int] = {}
        after = "0"
        deadline = time.monotonic() + timeout
        last = time.monotonic()
        while any(acked.get(p, 0) < high for p, high in highs.items()):
            after, acks = self.streams.read_acks(after, count=10_000, block_ms=1000)
            if acks:
                last = time.monotonic()
            for ack in acks:
                acked[ack.partition] = max(acked.get(ack.partition, 0), ack.lsn)
            if time.monotonic() > deadline:
                missing = {p: (acked.get(p, 0), h) for p, h in highs.items() if acked.get(p, 0) < h}
                raise RuntimeError(f"not acknowledged in time: {list(missing.items())[:5]}")
            for name, process in self.processes.items():
                if process.poll() is not None:
                    raise RuntimeError(f"{name} exited:\n{self.log(name)[-3000:]}")
        return last

    def worker_metric(self, name: str) -> float:
        """A sample summed over the worker host's endpoint (all its processes)."""
        import urllib.request

        from prometheus_client.parser import text_string_to_metric_families

        url = f"http://127.0.0.1:{self.worker_metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
        return sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == name
        )

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()
        for process in self.processes.values():
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
        self.redis.stop()
