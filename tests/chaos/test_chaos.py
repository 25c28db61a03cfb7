"""The chaos suite: archive a busy, varied workload while everything that can fail, fails.

Faults, injected repeatedly at random points: kill -9 of worker pool processes and of whole
worker hosts, SIGSTOP of a host for longer than its lease, scheduler restarts and failovers,
S3 faults through a proxy (resets, 503s, stalls) and one Redis restart with AOF. A watcher
checks throughout that no acknowledgement runs ahead of the archive or goes backwards; at the
end every entry must be archived exactly once, byte-identical, and no partition stuck.

The CI run is sized to a couple of minutes. A heavier run, by hand:
    ARCHIVER_CHAOS_PARTITIONS=50 ARCHIVER_CHAOS_ENTRIES=400 ARCHIVER_CHAOS_FAULT_SECONDS=300 \
        .venv/bin/pytest tests/chaos -s
"""

from __future__ import annotations

import contextlib
import functools
import os
import random
import signal
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from archiver.core.encryption import new_key_text
from archiver.core.lsn import format_lsn
from archiver.core.object_names import PartitionId, archive_key, partition_prefix
from archiver.dev.local_redis import LocalRedis
from archiver.dev.producer import ReferenceLogManager, write_entry
from archiver.errors import SinkError
from archiver.sinks import open_sink
from archiver.sinks.urls import MIN_PART_SIZE
from archiver.store.client import connect
from archiver.store.streams import Streams
from tests.faults import FaultProxy
from tests.support import Process, S3Endpoint, System, read_tar, wait_for

PARTITIONS = int(os.environ.get("ARCHIVER_CHAOS_PARTITIONS", "20"))
ENTRIES = int(os.environ.get("ARCHIVER_CHAOS_ENTRIES", "100"))
FAULT_SECONDS = float(os.environ.get("ARCHIVER_CHAOS_FAULT_SECONDS", "45"))
WORKER_HOSTS = 3
# Uploads in flight per worker host, by pool.
CONCURRENCY = {"prefork": 2, "threads": 4}
LEASE = 2.0
LEADER_TTL = 2.0
POOL_KILL = "kill -9 pool process"
HOST_KILL = "kill -9 worker host"
HOST_PAUSE = "SIGSTOP worker host past its lease"
FAILOVER = "kill -9 leading scheduler (failover)"
HANDOVER = "SIGTERM leading scheduler (handover)"
SCHEDULER_PAUSE = "SIGSTOP leading scheduler past its lease"
REDIS_RESTART = "Redis restart (AOF)"


def _assert_mirror_caught_up(system: System, mirror_url: str) -> None:
    """Once the faults stop, the mirror catches up: every entry there, the primary's bytes and
    metadata exactly (so the same data key), its progress at the last LSN."""
    mirror = open_sink(mirror_url, system.sink.keyring)

    def caught_up() -> bool:
        return all(
            system.store.mirrors.load("far", PartitionId(system.storage, p)).through == ENTRIES
            for p in range(1, PARTITIONS + 1)
        )

    wait_for(caught_up, timeout=180, interval=0.5, what="the mirror to catch up")
    for partition in range(1, PARTITIONS + 1):
        prefix = partition_prefix(system.storage, partition)
        assert [o.key for o in mirror.list(prefix)] == [o.key for o in system.sink.list(prefix)]
        for obj in mirror.list(prefix):
            assert mirror.read(obj.key) == system.sink.read(obj.key), obj.key
            assert mirror.metadata(obj.key) == system.sink.metadata(obj.key), obj.key


def entry_files(partition: int, lsn: int) -> dict[str, bytes]:
    """Deterministic contents, so the archive can be checked after the producer pruned them."""
    rng = random.Random(partition * 1_000_003 + lsn)
    if lsn % 50 == 25 and partition % 4 == 0:
        size = MIN_PART_SIZE + rng.randrange(1, 1024 * 1024)  # multipart-sized
    else:
        size = rng.choice([0, 100, 4096, 20_000, 150_000])
    return {
        "MANIFEST": f"{partition}/{lsn}\n".encode(),
        "objects/data.bin": rng.randbytes(size),
        **({"refs/extra": rng.randbytes(rng.randrange(1, 3000))} if lsn % 3 == 0 else {}),
    }


class Watcher(threading.Thread):
    """Samples every partition's acknowledged LSN and checks it against the archive."""

    def __init__(self, system: System, encrypted: bool = False) -> None:
        super().__init__(daemon=True)
        self.system = system
        self.encrypted = encrypted
        self.violations: list[str] = []
        self.samples = 0
        # Looks that were not counted, and why: Redis being restarted, the bucket not answering.
        self.skipped: Counter[str] = Counter()
        self.last_ack: dict[int, int] = {}
        self.failure: str | None = None
        self.prefix: dict[int, int] = dict.fromkeys(range(1, PARTITIONS + 1), 0)
        self.stop = threading.Event()

    def archived_through(self, partition: int, ack: int) -> int:
        """Extend the known contiguous archived prefix of ``partition`` towards ``ack``."""
        n = self.prefix[partition]
        while n < ack and self.system.sink.exists(
            archive_key(self.system.storage, partition, n + 1, encrypted=self.encrypted)
        ):
            n += 1
        self.prefix[partition] = n
        return n

    def run(self) -> None:
        try:
            self._watch()
        except BaseException:  # reported by the test, with its traceback
            self.failure = traceback.format_exc()

    def _watch(self) -> None:
        client = connect(self.system.redis_url)
        while not self.stop.wait(0.05):
            try:
                pipe = client.pipeline(transaction=False)
                for p in range(1, PARTITIONS + 1):
                    pipe.hget(
                        self.system.keys.partition(PartitionId(self.system.storage, p)), "acked"
                    )
                acked = pipe.execute()
            except redis.RedisError:
                self.skipped["redis"] += 1
                continue  # Redis is being restarted
            try:
                self._check(acked)
            except SinkError as exc:
                self.skipped[f"sink: {exc}"[:120]] += 1
                continue  # the bucket answers through no fault; looked at again next time
            self.samples += 1

    def _check(self, acked: list[bytes | None]) -> None:
        for p, raw in enumerate(acked, start=1):
            if raw is None:
                continue
            ack = int(raw)
            if ack < self.last_ack.get(p, 0):
                self.violations.append(
                    f"partition {p}: acknowledged {ack} after {self.last_ack[p]}"
                )
            self.last_ack[p] = max(ack, self.last_ack.get(p, 0))
            if ack > self.prefix[p] and ack > self.archived_through(p, ack):
                self.violations.append(
                    f"partition {p}: acknowledged {ack}, archived 1..{self.prefix[p]}"
                )


class Chaos:
    """Injects faults at random moments until told to stop, and counts them."""

    def __init__(
        self, system: System, proxy: FaultProxy, redis_server: list[LocalRedis], pool: str
    ) -> None:
        self.system = system
        self.proxy = proxy
        self.pool = pool
        self.redis_server = redis_server
        self.rng = random.Random(7)
        self.injected: Counter[str] = Counter()
        self.last_fault = time.monotonic()
        self.redis_restarted = False
        self.errors: list[str] = []

    def workers(self) -> list[Process]:
        return [p for p in self.system.processes if p.name == "worker" and p.popen.poll() is None]

    def schedulers(self) -> list[Process]:
        return [
            p for p in self.system.processes if p.name == "scheduler" and p.popen.poll() is None
        ]

    def kill_pool_process(self) -> None:
        tree = self.rng.choice(self.workers()).tree()
        if len(tree) > 1:
            with contextlib.suppress(Exception):
                self.rng.choice(tree[1:]).kill()
                self.injected[POOL_KILL] += 1

    def kill_worker_host(self) -> None:
        self.rng.choice(self.workers()).kill_tree()
        self.injected[HOST_KILL] += 1
        self.start_worker(wait=False)

    def start_worker(self, wait: bool = True) -> None:
        self.system.start_worker(concurrency=CONCURRENCY[self.pool], wait=wait, pool=self.pool)

    def pause_worker_host(self) -> None:
        victim = self.rng.choice(self.workers())
        victim.signal_tree(signal.SIGSTOP)
        self.injected[HOST_PAUSE] += 1
        time.sleep(LEASE + 1.5)
        victim.signal_tree(signal.SIGCONT)

    def fail_over_scheduler(self) -> None:
        self._replace_leader(Process.kill_tree, FAILOVER)

    def hand_over_scheduler(self) -> None:
        self._replace_leader(Process.stop, HANDOVER)

    def _replace_leader(self, end: Callable[[Process], object], kind: str) -> None:
        leader = self.wait_leader()
        if leader is None:
            return
        end(leader)
        self.injected[kind] += 1
        self.system.start_scheduler()

    def pause_scheduler(self) -> None:
        """The leader stops past its lease, and wakes up while another leads."""
        leader = self.wait_leader()
        if leader is None:
            return
        leader.signal_tree(signal.SIGSTOP)
        self.injected[SCHEDULER_PAUSE] += 1
        time.sleep(LEADER_TTL + 1.5)
        leader.signal_tree(signal.SIGCONT)

    def wait_leader(self) -> Process | None:
        """The leading scheduler, given a moment to appear after the last fault."""
        deadline = time.monotonic() + 10
        while (leader := self.leader()) is None and time.monotonic() < deadline:
            time.sleep(0.1)
        return leader

    def leader(self) -> Process | None:
        identity = self.system.client.get(self.system.keys.leader)
        for process in self.schedulers():
            if identity and f":{process.popen.pid}:" in str(identity):
                return process
        return None

    def restart_redis(self) -> None:
        server = self.redis_server[0]
        server.stop()
        self.redis_server[0] = LocalRedis(
            server.directory, port=server.port, appendonly=True
        ).start()
        self.injected[REDIS_RESTART] += 1
        self.redis_restarted = True

    def run(self, stop: threading.Event) -> None:
        self.proxy.random.reset = 0.03
        self.proxy.random.error = 0.05
        self.proxy.random.stall = 0.02
        # A threads pool has no pool processes to kill: its host is one process.
        pool_kills = [self.kill_pool_process] * 2 if self.pool == "prefork" else []
        actions: list[Callable[[], None]] = [
            *pool_kills,
            self.kill_worker_host,
            self.pause_worker_host,
            self.fail_over_scheduler,
            self.hand_over_scheduler,
            self.pause_scheduler,
        ]
        # Rounds of every action once, in a random order: each kind is sure to fire.
        round_: list[Callable[[], None]] = []
        deadline = time.monotonic() + FAULT_SECONDS
        redis_at = time.monotonic() + FAULT_SECONDS * self.rng.uniform(0.3, 0.6)
        try:
            while not stop.is_set() and time.monotonic() < deadline:
                if stop.wait(self.rng.uniform(0.5, 2.5)):
                    break
                if not self.redis_restarted and time.monotonic() >= redis_at:
                    self.restart_redis()
                else:
                    if not round_:
                        round_ = self.rng.sample(actions, len(actions))
                    round_.pop()()
                self.last_fault = time.monotonic()
        except Exception as exc:  # reported by the test, never lost in a thread
            self.errors.append(repr(exc))
        finally:
            self.proxy.random.reset = self.proxy.random.error = self.proxy.random.stall = 0.0
            self.last_fault = time.monotonic()


@pytest.mark.timeout(900)
@pytest.mark.parametrize(
    ("pool", "sealed_and_mirrored"),
    [("prefork", False), ("threads", True)],
    ids=["prefork", "threads-encrypted-mirrored"],
)
def test_no_entry_is_lost_duplicated_or_acknowledged_early_under_chaos(
    tmp_path: Path,
    s3_endpoint: S3Endpoint,
    s3_bucket: str,
    proxy: FaultProxy,
    pool: str,
    sealed_and_mirrored: bool,
) -> None:
    """The threads run also seals every entry (ARCHIVER_ENCRYPTION_KEYS) and copies it to a
    mirror in a second bucket, which must end up holding every entry, byte for byte."""
    redis_server = [LocalRedis(tmp_path / "redis", appendonly=True).start()]
    extra: dict[str, str] = {}
    mirror_bucket = s3_bucket + "-mirror"
    if sealed_and_mirrored:
        s3_endpoint.client().create_bucket(Bucket=mirror_bucket)
        extra = {
            "ARCHIVER_ENCRYPTION_KEYS": f"chaos:{new_key_text()}",
            "ARCHIVER_MIRROR_URLS": f"far={s3_endpoint.sink_url(mirror_bucket, 'chaos')}",
        }
    system = System(
        redis_url=redis_server[0].url,
        tmp=tmp_path,
        sink_url=s3_endpoint.sink_url(s3_bucket, "chaos"),
        env_overrides={
            "ARCHIVER_LEASE_SECONDS": str(LEASE),
            "ARCHIVER_SWEEP_INTERVAL_SECONDS": "0.5",
            "ARCHIVER_DISPATCH_TIMEOUT_SECONDS": "5",
            "ARCHIVER_RETRY_MIN_SECONDS": "0.05",
            "ARCHIVER_RETRY_MAX_SECONDS": "1",
            "ARCHIVER_LEADER_TTL_SECONDS": str(LEADER_TTL),
            "ARCHIVER_TASK_TIME_LIMIT_SECONDS": "60",
            "ARCHIVER_SINK_URL": s3_endpoint.sink_url(s3_bucket, "chaos").replace(
                s3_endpoint.url, proxy.url
            )
            + f"&part_size={MIN_PART_SIZE}&connect_timeout=1&read_timeout=2&max_attempts=1",
            **extra,
        },
    )
    watcher = Watcher(system, encrypted=sealed_and_mirrored)
    chaos = Chaos(system, proxy, redis_server, pool)
    stop_chaos = threading.Event()
    started = time.monotonic()
    try:
        for _ in range(WORKER_HOSTS):
            chaos.start_worker()
        system.start_scheduler()
        system.start_scheduler()
        watcher.start()
        chaos_thread = threading.Thread(target=chaos.run, args=(stop_chaos,), daemon=True)
        chaos_thread.start()

        producer = ReferenceLogManager(
            system.storage, system.root, Streams(connect(redis_server[0].url), system.keys)
        )
        for lsn in range(1, ENTRIES + 1):
            for partition in range(1, PARTITIONS + 1):
                _retrying(functools.partial(_append, producer, partition, lsn))
            _retrying(producer.process_acks)

        def all_acknowledged() -> bool:
            _retrying(producer.process_acks)
            # Notifications are repeated, as a real producer does, until acknowledged.
            for partition in range(1, PARTITIONS + 1):
                if producer.acknowledged.get(partition, 0) < ENTRIES:
                    _retrying(functools.partial(producer.notify, partition))
            return all(producer.acknowledged.get(p, 0) == ENTRIES for p in range(1, PARTITIONS + 1))

        chaos_thread.join()
        wait_for(all_acknowledged, timeout=300, interval=1.0, what="every entry acknowledged")
        recovered = time.monotonic() - chaos.last_fault
        stop_chaos.set()
        watcher.stop.set()
        watcher.join()

        assert not chaos.errors, chaos.errors
        assert watcher.failure is None, f"the state watcher died:\n{watcher.failure}"
        # A sample every 50 ms through the fault window: a watcher that fell silent early,
        # or never got a good look at Redis and the bucket, would leave far fewer.
        assert watcher.samples >= FAULT_SECONDS * 4, (watcher.samples, watcher.skipped)
        assert not watcher.violations, watcher.violations[:20]
        system.watcher.check()
        for partition in range(1, PARTITIONS + 1):
            keys = [o.key for o in system.sink.list(partition_prefix(system.storage, partition))]
            assert keys == [
                archive_key(system.storage, partition, n, encrypted=sealed_and_mirrored)
                for n in range(1, ENTRIES + 1)
            ]
            state = system.state(partition)
            assert state["acknowledged_lsn"] == ENTRIES
            assert state["in_flight_lsn"] is None
            assert not state["conflicted"]
            assert state["gaps"] == []
        for partition in range(1, PARTITIONS + 1):
            for lsn in range(1, ENTRIES + 1):
                members = read_tar(system.entry_tar(partition, lsn))
                name = format_lsn(lsn)
                for path, content in entry_files(partition, lsn).items():
                    assert members[f"{name}/{path}"] == content, (partition, lsn, path)

        if sealed_and_mirrored:
            _assert_mirror_caught_up(system, s3_endpoint.sink_url(mirror_bucket, "chaos"))

        counters = system.store.counters.read()
        uploads = system.sink.client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", [])  # type: ignore[attr-defined]
        report = {
            "pool": pool,
            "encrypted and mirrored": sealed_and_mirrored,
            "entries": PARTITIONS * ENTRIES,
            "seconds": round(time.monotonic() - started, 1),
            "faults injected": dict(chaos.injected)
            | {f"S3 {k}": v for k, v in proxy.injected.items()},
            "retries": counters.get("retries", 0),
            "fenced commits": counters.get("fenced", 0),
            "lease expiries re-dispatched": counters.get("redispatched", 0),
            "scheduler leader changes": counters.get("leader_changes", 0),
            "seconds from the last fault to the last acknowledgement": round(recovered, 1),
            "watcher samples": watcher.samples,
            "incomplete multipart uploads left by killed workers": len(uploads),
        }
        print("\nchaos report:")
        for name, value in report.items():
            print(f"  {name}: {value}")
        # The faults really exercised the recovery paths.
        assert chaos.redis_restarted
        kinds = [HOST_KILL, HOST_PAUSE, FAILOVER, HANDOVER, SCHEDULER_PAUSE]
        if pool == "prefork":
            kinds.append(POOL_KILL)
        assert all(chaos.injected[kind] >= 1 for kind in [*kinds, REDIS_RESTART]), chaos.injected
        assert all(proxy.injected[kind] >= 1 for kind in ("reset", "error", "stall")), dict(
            proxy.injected
        )
        # Multipart-sized entries went up in parts (a multipart ETag ends in -<parts>).
        big = [
            (p, n)
            for p in range(1, PARTITIONS + 1)
            for n in range(1, ENTRIES + 1)
            if len(entry_files(p, n)["objects/data.bin"]) >= MIN_PART_SIZE
        ]
        assert big
        for partition, lsn in big:
            key = archive_key(system.storage, partition, lsn, encrypted=sealed_and_mirrored)
            head = system.sink.client.head_object(  # type: ignore[attr-defined]
                Bucket=s3_bucket, Key=f"chaos/{key}"
            )
            assert "-" in head["ETag"], (partition, lsn, head["ETag"])
        # What the faults cost, bounded: a killed pool process leaves at most its own upload
        # behind (a host, one per upload in flight); a fenced commit needs a grant lost to a
        # pause, a kill or a stall longer than the lease.
        kills = chaos.injected[POOL_KILL] + CONCURRENCY[pool] * chaos.injected[HOST_KILL]
        assert len(uploads) <= kills, (len(uploads), kills)
        fault_count = sum(chaos.injected.values()) + proxy.injected["stall"]
        assert counters.get("fenced", 0) <= 2 * WORKER_HOSTS * fault_count, counters
        assert counters.get("leader_changes", 0) >= 2
        assert counters.get("retries", 0) >= 1
        assert counters.get("redispatched", 0) >= 1
    finally:
        stop_chaos.set()
        watcher.stop.set()
        system.close()
        redis_server[0].stop()


def _append(producer: ReferenceLogManager, partition: int, lsn: int) -> None:
    if producer.high.get(partition, 0) < lsn:
        producer.start_at(partition, lsn)
        write_entry(producer.root, partition, lsn, entry_files(partition, lsn))
        producer.high[partition] = lsn
    producer.notify(partition)


def _retrying(action: Callable[[], object], attempts: int = 100) -> None:
    """The producer, like any client, rides out the Redis restart."""
    for _ in range(attempts):
        try:
            action()
            return
        except redis.RedisError:
            time.sleep(0.1)
    action()
