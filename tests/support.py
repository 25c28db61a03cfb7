"""Helpers for tests that run the real system: processes, waiting, reading the archive back."""

from __future__ import annotations

import contextlib
import io
import os
import re
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import boto3
import psutil
import pytest
import redis

from archiver.archive.entry_match import existing_archive
from archiver.config import Settings
from archiver.core.encryption import Keyring
from archiver.core.lsn import format_lsn
from archiver.core.notification import Notification
from archiver.core.object_names import (
    ArchiveForm,
    PartitionId,
    archive_lsn,
    partition_prefix,
)
from archiver.core.object_stream import opened_tar
from archiver.dev.local_redis import free_port
from archiver.dev.producer import write_entry
from archiver.errors import SinkError
from archiver.runtime.dispatch import ArchiveTask, Dispatch
from archiver.runtime.taskqueue import worker_command
from archiver.sinks import Sink, Source, open_sink
from archiver.sinks.s3 import CLIENT_CONFIG
from archiver.store.client import connect
from archiver.store.keys import RedisKeys
from archiver.store.state_store import RedisStateStore
from archiver.store.streams import Acknowledgement, Streams

T = TypeVar("T")
REPO = Path(__file__).resolve().parent.parent


def wait_for(
    condition: Callable[[], T | None],
    timeout: float = 30.0,
    what: str = "condition",
    interval: float = 0.02,
) -> T:
    """Poll ``condition`` until it returns something truthy, or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


@dataclass
class S3Endpoint:
    """moto's S3 server in its own process: a real HTTP endpoint on loopback."""

    process: subprocess.Popen[bytes]
    url: str

    @classmethod
    def start(cls, log: Path) -> S3Endpoint:
        port = free_port()
        with open(log, "wb") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        endpoint = cls(process, f"http://127.0.0.1:{port}")

        def answers() -> bool:
            assert process.poll() is None, log.read_text()
            try:
                endpoint.client().list_buckets()
            except Exception:
                return False
            return True

        wait_for(answers, timeout=30, what="moto's S3 server")
        return endpoint

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)

    def client(self) -> Any:
        return boto3.client(
            "s3", endpoint_url=self.url, region_name="us-east-1", config=CLIENT_CONFIG
        )

    def sink_url(self, bucket: str, prefix: str = "") -> str:
        path = f"/{prefix}" if prefix else ""
        return f"s3://{bucket}{path}?endpoint_url={self.url}&region=us-east-1"


@dataclass
class Process:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def tree(self) -> list[psutil.Process]:
        """This process and its children (a Celery worker's pool processes)."""
        try:
            parent = psutil.Process(self.popen.pid)
            return [parent, *parent.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def signal_tree(self, sig: int) -> None:
        for proc in self.tree():
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.send_signal(sig)

    def kill_tree(self) -> None:
        """kill -9 of the process and every child, as a crashed host would."""
        self.signal_tree(signal.SIGKILL)
        self.popen.wait()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
                raise AssertionError(f"{self.name} did not stop within {timeout}s") from None
        return self.popen.returncode


def recording_dispatch(sent: list[ArchiveTask]) -> Dispatch:
    """A dispatcher that sends nothing: it records each task in ``sent``."""

    def dispatch(tasks: Sequence[ArchiveTask]) -> list[Exception | None]:
        sent.extend(tasks)
        return [None] * len(tasks)

    return dispatch


def source(*chunks: bytes) -> Source:
    """A sink source that yields ``chunks`` every time it is called."""
    return lambda: iter(chunks)


def stream_entries(client: Any, key: str) -> list[tuple[str, dict[str, str]]]:
    """Every entry of a stream, oldest first."""
    return [(str(i), dict(fields)) for i, fields in client.xrange(key)]


def gap_pairs(state: dict[str, Any]) -> list[tuple[int, int]]:
    """The gaps of ``archiver inspect partition --json`` as (expected, actual) pairs."""
    return [(g["expected"], g["actual"]) for g in state["gaps"]]


def read_tar(data: bytes) -> dict[str, bytes | None]:
    """Members of a tar by name; directories map to None."""
    members: dict[str, bytes | None] = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        for member in tar.getmembers():
            f = tar.extractfile(member) if member.isfile() else None
            members[member.name] = f.read() if f else None
    return members


def missing_server(what: str) -> NoReturn:
    """A server or tool a test needs is not here: the test fails in CI (which sets ``CI``), where
    everything must run, and is skipped on a developer's machine, saying what to install."""
    if os.environ.get("CI"):
        pytest.fail(f"{what} (CI installs everything the tests need)")
    pytest.skip(what)


def log_time(line: str) -> datetime:
    """When a process logged ``line`` (text format, local time, to the millisecond)."""
    return datetime.strptime(" ".join(line.split(" ", 2)[:2]), "%Y-%m-%d %H:%M:%S,%f")


def _stream_id(value: str) -> tuple[int, int]:
    ms, _, seq = value.partition("-")
    return int(ms), int(seq or 0)


class AckWatcher:
    """Reads every acknowledgement as it is published and checks, at that moment, that it is
    not ahead of the archive and not behind an earlier acknowledgement. A watcher that died, or
    did not read the stream to its end, fails the test (see ``check``): a silent one would let
    every violation through."""

    def __init__(self, system: System) -> None:
        self.system = system
        self.violations: list[str] = []
        self.seen: dict[int, list[int]] = {}
        self.reads = 0  # completed reads of the stream, acknowledgements checked
        self.last_id = "0"
        self.failure: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._watch()
        except BaseException:  # reported by check(), with its traceback
            self.failure = traceback.format_exc()

    def _watch(self) -> None:
        streams = Streams(connect(self.system.redis_url), self.system.keys)
        while not self._stop.is_set():
            try:
                after, acks = streams.read_acks(self.last_id, block_ms=100)
            except redis.RedisError:  # a Redis restart under test
                time.sleep(0.1)
                continue
            for ack in acks:
                self._check(ack)
            self.last_id = after
            self.reads += 1

    def _check(self, ack: Acknowledgement) -> None:
        history = self.seen.setdefault(ack.partition, [])
        if history and ack.lsn < history[-1]:
            self.violations.append(f"partition {ack.partition}: ack {ack.lsn} after {history[-1]}")
        history.append(ack.lsn)
        deadline = time.monotonic() + 30
        while True:
            try:
                stored = existing_archive(
                    self.system.sink, self.system.storage, ack.partition, ack.lsn, ArchiveForm()
                )
                break
            except SinkError:  # the store under test failing for a moment: look again
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        if stored is None:
            self.violations.append(
                f"partition {ack.partition}: ack {ack.lsn} came before its archive"
            )

    def caught_up(self) -> bool:
        """Read (and checked) everything on the stream now, in a read that began after this."""
        try:
            info: Any = self.system.client.xinfo_stream(self.system.keys.acks)
        except redis.ResponseError:  # no stream: nothing was ever acknowledged
            newest = "0-0"
        else:
            newest = str(info["last-generated-id"])
        reads = self.reads
        wait_for(
            lambda: self.failure is not None or self.reads > reads,
            timeout=30,
            what="the ack watcher to read the stream",
        )
        return _stream_id(self.last_id) >= _stream_id(newest)

    def check(self) -> None:
        """The watcher is alive, read the stream to its last entry, and saw no violation."""
        if self.failure is None:
            wait_for(
                lambda: self.failure is not None or self.caught_up(),
                timeout=60,
                what="the ack watcher to catch up with the stream",
            )
        assert self.failure is None, f"the ack watcher died:\n{self.failure}"
        assert self.reads > 0, "the ack watcher never read the stream"
        assert not self.violations, self.violations

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


@dataclass
class System:
    redis_url: str
    tmp: Path
    sink_url: str
    storage: str = "default"
    prefix: str = "archiver"
    env_overrides: dict[str, str] = field(default_factory=dict)
    processes: list[Process] = field(default_factory=list)
    written: dict[tuple[int, int], dict[str, bytes]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.root = self.tmp / "storages" / self.storage
        self.root.mkdir(parents=True, exist_ok=True)
        self.keys = RedisKeys(self.prefix)
        self.client = connect(self.redis_url)
        mirrors = self.env_overrides.get("ARCHIVER_MIRROR_URLS")
        targets = (
            Settings.from_env({"ARCHIVER_MIRROR_URLS": mirrors}).mirror_targets if mirrors else None
        )
        # Where the processes keep each mirror's progress (under its name and location).
        self.store = RedisStateStore(self.client, self.keys, mirror_targets=targets)
        self.streams = Streams(self.client, self.keys)
        keys = self.env_overrides.get("ARCHIVER_ENCRYPTION_KEYS")
        keyring = (
            Keyring.parse(keys, self.env_overrides.get("ARCHIVER_ENCRYPTION_KEY_ID"))
            if keys
            else None
        )
        self.sink: Sink = open_sink(self.sink_url, keyring)
        if self.sink_url.startswith("file:"):
            Path(self.sink.describe()).mkdir(parents=True, exist_ok=True)
        self.watcher = AckWatcher(self)

    # processes ---------------------------------------------------------------------------

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "ARCHIVER_REDIS_URL": self.redis_url,
            "ARCHIVER_REDIS_PREFIX": self.prefix,
            "ARCHIVER_SINK_URL": self.sink_url,
            "ARCHIVER_STORAGES": f"{self.storage}={self.root}",
            "ARCHIVER_RETRY_MIN_SECONDS": "0.05",
            "ARCHIVER_RETRY_MAX_SECONDS": "0.5",
            "ARCHIVER_SWEEP_INTERVAL_SECONDS": "1",
            "ARCHIVER_LEASE_SECONDS": "5",
            "ARCHIVER_DISPATCH_TIMEOUT_SECONDS": "60",
            "PYTHONUNBUFFERED": "1",
            "ARCHIVER_METRICS_PORT": "0",
            "ARCHIVER_WORKER_METRICS_PORT": "0",
            **self.env_overrides,
        }

    def _spawn(self, name: str, args: list[str], env: Mapping[str, str] | None = None) -> Process:
        log = self.tmp / f"{name}-{len(self.processes)}.log"
        while log.exists():  # another System's, in the same directory
            log = log.with_name(f"{log.stem}+.log")
        with open(log, "wb") as out:
            popen = subprocess.Popen(
                args,
                env={**self.env(), **(env or {})},
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=REPO,
            )
        process = Process(name, popen, log)
        self.processes.append(process)
        return process

    def start_worker(
        self,
        concurrency: int = 1,
        wait: bool = True,
        env: Mapping[str, str] | None = None,
        node_name: str | None = None,
        pool: str = "prefork",
        events: bool = False,
        launcher: Sequence[str] = (),
    ) -> Process:
        """A worker host; ``launcher`` runs it elsewhere (``ip netns exec NS``)."""
        process = self._spawn(
            "worker",
            [
                *launcher,
                *worker_command(
                    [f"archiver.{self.storage}"],
                    concurrency,
                    node_name or f"test-{uuid.uuid4().hex[:8]}@%h",
                    pool,
                    events,
                ),
            ],
            env,
        )
        if wait:
            wait_for(
                lambda: "ready." in process.output() or process.popen.poll() is not None,
                timeout=60,
                what="the worker to start",
            )
            assert process.popen.poll() is None, process.output()
        return process

    def start_scheduler(
        self, env: Mapping[str, str] | None = None, launcher: Sequence[str] = ()
    ) -> Process:
        process = self._spawn(
            "scheduler", [*launcher, sys.executable, "-m", "archiver", "scheduler"], env
        )
        wait_for(
            lambda: "scheduler started" in process.output() or process.popen.poll() is not None,
            timeout=30,
            what="the scheduler to start",
        )
        assert process.popen.poll() is None, process.output()
        return process

    def start(self, concurrency: int = 1) -> System:
        self.start_worker(concurrency)
        self.start_scheduler()
        return self

    def logs(self) -> str:
        return "\n".join(f"===== {p.name} ({p.log.name})\n{p.output()}" for p in self.processes)

    def close(self) -> None:
        self.watcher.stop()
        for process in self.processes:
            if process.popen.poll() is None:
                process.popen.kill()
                process.popen.wait()
        # Shown by pytest only when the test failed.
        print(self.logs())
        # Even in a test that never asked: a watcher that died checked nothing.
        assert self.watcher.failure is None, f"the ack watcher died:\n{self.watcher.failure}"

    # producer side -------------------------------------------------------------------------

    def write(self, partition: int, lsn: int, files: Mapping[str, bytes] | None = None) -> None:
        files = (
            dict(files)
            if files is not None
            else {
                "MANIFEST": f"lsn {lsn}\n".encode(),
                "data/log.bin": os.urandom(1024 + lsn),
            }
        )
        write_entry(self.root, partition, lsn, files)
        self.written[(partition, lsn)] = files

    def notify(self, partition: int, low: int, high: int) -> None:
        self.streams.publish_notification(Notification(self.storage, partition, low, high))

    # what happened -------------------------------------------------------------------------

    def maybe_state(self, partition: int) -> dict[str, Any] | None:
        record = self.store.records.load(PartitionId(self.storage, partition))
        return None if record is None else record.to_json()

    def state(self, partition: int) -> dict[str, Any]:
        state = self.maybe_state(partition)
        assert state is not None, f"no state for partition {partition}"
        return state

    def wait_attempts(self, partition: int, attempts: int, timeout: float = 30.0) -> dict[str, Any]:
        """Wait until ``attempts`` attempts at the partition's next entry have failed."""

        def failed_enough() -> dict[str, Any] | None:
            state = self.maybe_state(partition)
            return state if state is not None and state["attempts"] >= attempts else None

        return wait_for(
            failed_enough, timeout, f"{attempts} failed attempts on partition {partition}"
        )

    def wait_state(self, partition: int, state: str, timeout: float = 60.0) -> dict[str, Any]:
        """Wait until the partition is in ``state`` (as ``archiver inspect`` names it)."""

        def there() -> dict[str, Any] | None:
            found = self.maybe_state(partition)
            return found if found is not None and found["state"] == state else None

        return wait_for(there, timeout, f"partition {partition} to be {state}")

    def acks(self, partition: int) -> list[int]:
        _, acks = self.streams.read_acks("0", count=1_000_000)
        return [a.lsn for a in acks if a.storage == self.storage and a.partition == partition]

    def archived(self, partition: int) -> list[int]:
        lsns = (
            archive_lsn(o.key) for o in self.sink.list(partition_prefix(self.storage, partition))
        )
        return sorted(lsn for lsn in lsns if lsn is not None)

    def wait_acked(self, partition: int, lsn: int, timeout: float = 30.0) -> None:
        wait_for(
            lambda: lsn in self.acks(partition),
            timeout,
            f"partition {partition} to acknowledge {lsn} (acks so far {self.acks(partition)})",
        )

    def entry_tar(self, partition: int, lsn: int) -> bytes:
        """The tar archived for an entry, under whichever name, opened with the system's keys."""
        found = existing_archive(self.sink, self.storage, partition, lsn, ArchiveForm())
        assert found is not None, f"LSN {lsn} of partition {partition} is not archived"
        key, form = found
        with tempfile.TemporaryFile() as spool:
            download = self.sink.download(key, spool)
            spool.seek(0)
            return opened_tar(spool, key, form, download.metadata, self.sink.keyring).read()

    def assert_archive_matches_source(self, partition: int, lsn: int) -> None:
        members = read_tar(self.entry_tar(partition, lsn))
        name = format_lsn(lsn)
        expected: dict[str, bytes | None] = {f"{name}/": None}
        for path, content in self.written[(partition, lsn)].items():
            parts = path.split("/")
            for i in range(1, len(parts)):
                expected[f"{name}/{'/'.join(parts[:i])}"] = None
            expected[f"{name}/{path}"] = content
        assert {k.rstrip("/"): v for k, v in members.items()} == {
            k.rstrip("/"): v for k, v in expected.items()
        }

    def assert_invariants(self) -> None:
        """Checked at the end of every system test."""
        self.watcher.check()

    def failed_attempts(self) -> list[tuple[int, float, datetime]]:
        """(attempt, the retry delay it logged, when) of each failed attempt, in log order."""
        failures = []
        for line in self.worker_lines("archiving failed;"):
            match = re.search(r"retrying in ([\d.]+)s \(attempt (\d+)\)", line)
            assert match, line
            failures.append((int(match[2]), float(match[1]), log_time(line)))
        return failures

    def worker_lines(self, word: str) -> list[str]:
        return [
            line
            for p in self.processes
            if p.name == "worker"
            for line in p.output().splitlines()
            if f"archiver.worker {word} " in line
        ]


class SteadyLoad(threading.Thread):
    """A producer that writes and announces an entry of each partition in turn, the next one
    once the last is acknowledged, and rides out Redis errors (a failover under test) as any
    client does, until ``finish``."""

    def __init__(self, system: System, partitions: int) -> None:
        super().__init__(daemon=True)
        self.system = system
        self.written = dict.fromkeys(range(1, partitions + 1), 0)
        self.errors: list[str] = []
        self._stopping = threading.Event()

    def run(self) -> None:
        turn = 0
        while not self._stopping.wait(0.05):
            partition = turn % len(self.written) + 1
            high = self.written[partition]
            try:
                if high == 0 or self.system.acks(partition)[-1:] == [high]:
                    self.system.write(partition, high + 1)
                    self.written[partition] = high + 1
                self.system.notify(partition, 1, self.written[partition])
                turn += 1
            except redis.RedisError as exc:
                self.errors.append(repr(exc))
                time.sleep(0.2)

    def wait_progress(self, entries: int, timeout: float = 60.0) -> None:
        """Until every partition has ``entries`` more entries written than now."""
        start = dict(self.written)
        wait_for(
            lambda: all(self.written[p] >= start[p] + entries for p in start),
            timeout=timeout,
            what=f"{entries} more entries on every partition",
        )

    def stop(self) -> None:
        self._stopping.set()
        self.join(10)

    def fail_over(self, kill: Callable[[], None], promoted: Callable[[], bool]) -> str:
        """Under load: ``kill`` Redis's master, wait until ``promoted`` (a replica took over),
        go on until every partition made progress, and finish. Says how long each took."""
        self.wait_progress(3)
        kill()
        killed = time.monotonic()
        wait_for(promoted, timeout=60, what="a replica to be promoted")
        promotion = time.monotonic() - killed
        self.wait_progress(3, timeout=120)
        self.finish()
        return (
            f"promoted {promotion:.1f}s after the kill; every partition acknowledged "
            f"{time.monotonic() - killed:.1f}s after it; {sum(self.written.values())} entries; "
            f"producer errors ridden out: {len(self.errors)}"
        )

    def finish(self, timeout: float = 60.0) -> None:
        """Stop writing; wait for everything written to be acknowledged and archived."""
        self.stop()
        for partition, high in self.written.items():
            self.system.notify(partition, 1, high)
            self.system.wait_acked(partition, high, timeout=timeout)
        for partition, high in self.written.items():
            for lsn in range(1, high + 1):
                self.system.assert_archive_matches_source(partition, lsn)
