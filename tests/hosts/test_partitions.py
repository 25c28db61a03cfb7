"""Faults between real hosts: each component on a test host of its own, and links that fail.

Topology, one network namespace each: Redis (state store and broker, AOF), the S3 endpoint
(moto, reached through a relay on its host), two schedulers and three worker hosts. The test
itself is the producer and the watcher: it reaches Redis by its Unix socket and moto on this
machine's loopback, so no fault ever cuts it off.

A producer appends entries throughout. Each fault fires once the archive has made progress
since the last one and while work is pending, lasts longer than the lease and than every
socket timeout, and is then healed:
- a worker host cut off from Redis but not from S3 (its uploads go on; their commits must be
  fenced);
- a worker host cut off from S3;
- the leading scheduler cut off from Redis;
- Redis cut off from every host;
- a whole worker host isolated;
- one way: a worker host's packets reach Redis, Redis's replies never come back.
Checked throughout: no acknowledgement ahead of the archive or going backwards. At the end:
every entry archived once and byte-identical, and each fault's partitions fully acknowledged
within RECOVERY_LIMIT of its heal.
"""

from __future__ import annotations

import random
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from celery import Celery

from archiver.core.lsn import format_lsn
from archiver.core.object_names import archive_key, partition_prefix
from archiver.dev.local_redis import LocalRedis
from archiver.dev.producer import ReferenceLogManager, write_entry
from tests.hosts.network import Host, Network
from tests.support import Process, S3Endpoint, System, read_tar, wait_for

PARTITIONS = 6
LEASE = 3.0
# Longer than the lease and than every socket timeout (Redis and the broker: 10 s), so that
# connections time out and are made again, not merely retransmitted.
FAULT_SECONDS = 12.0
# From a heal to every entry announced before it acknowledged.
RECOVERY_LIMIT = 60.0
REDIS_PORT = 6379
S3_PORT = 9000
# Each way, per chunk: S3 far enough away that every upload is in flight for a while.
S3_DELAY = 0.05


def entry_files(partition: int, lsn: int) -> dict[str, bytes]:
    """Deterministic contents, so the archive can be checked after the producer pruned them."""
    rng = random.Random(partition * 7_919 + lsn)
    size = rng.choice([0, 100, 4096, 30_000, 200_000])
    return {"MANIFEST": f"{partition}/{lsn}\n".encode(), "data.bin": rng.randbytes(size)}


class SteadyProducer(threading.Thread):
    """Appends an entry to each partition in turn, announces it, and prunes what was
    acknowledged, until stopped."""

    def __init__(self, system: System, interval: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.producer = ReferenceLogManager(system.storage, system.root, system.streams)
        self.interval = interval
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.failure: BaseException | None = None

    def highs(self) -> dict[int, int]:
        with self.lock:
            return dict(self.producer.high)

    def acknowledged(self) -> dict[int, int]:
        with self.lock:
            return dict(self.producer.acknowledged)

    def run(self) -> None:
        turn = 0
        try:
            while not self.stop.wait(self.interval):
                partition = turn % PARTITIONS + 1
                turn += 1
                with self.lock:
                    lsn = self.producer.high.get(partition, 0) + 1
                    write_entry(self.producer.root, partition, lsn, entry_files(partition, lsn))
                    self.producer.high[partition] = lsn
                    self.producer.notify(partition)
                    self.producer.process_acks()
        except BaseException as exc:  # reported by the test
            self.failure = exc

    def drain(self) -> None:
        """After the producer stopped: prune and announce again, as a producer does."""
        with self.lock:
            self.producer.process_acks()
            for partition in range(1, PARTITIONS + 1):
                if self.producer.acknowledged.get(partition, 0) < self.producer.high[partition]:
                    self.producer.notify(partition)


@dataclass
class Outcome:
    fault: str
    victim: str
    fenced: int
    redispatched: int
    recovery_seconds: float


@dataclass
class Fleet:
    system: System
    network: Network
    redis_host: Host
    s3_host: Host
    schedulers: dict[str, Process]
    workers: dict[str, Process]

    def host_of(self, pid: int, processes: dict[str, Process]) -> str | None:
        for name, process in processes.items():
            if pid in {p.pid for p in process.tree()}:
                return name
        return None

    def busy_worker(self) -> Host:
        """A worker host holding a grant now: its upload is in flight when the fault lands."""

        def holder() -> str | None:
            for partition in range(1, PARTITIONS + 1):
                holder = (self.system.maybe_state(partition) or {}).get("lease_holder") or ""
                pid = holder.rpartition(":")[2]
                if pid.isdigit() and (name := self.host_of(int(pid), self.workers)):
                    return name
            return None

        return self.network.hosts[wait_for(holder, timeout=30, what="a worker holding a grant")]

    def leading_scheduler(self) -> Host:
        def leader() -> str | None:
            identity = str(self.system.client.get(self.system.keys.leader) or "")
            parts = identity.split(":")
            if len(parts) >= 2 and parts[1].isdigit():
                return self.host_of(int(parts[1]), self.schedulers)
            return None

        name = wait_for(leader, timeout=30, what="a leading scheduler")
        return self.network.hosts[name]


@pytest.fixture(params=["prefork", "threads"])
def fleet(
    request: pytest.FixtureRequest,
    network: Network,
    tmp_path: Path,
    s3_endpoint: S3Endpoint,
    s3_bucket: str,
) -> Iterator[Fleet]:
    sockets = Path(tempfile.mkdtemp(prefix="arh-", dir="/tmp"))
    redis_host = network.add("redis")
    s3_host = network.add("s3")
    names = {"scheduler": ["scheduler-1", "scheduler-2"], "worker": ["w1", "w2", "w3"]}
    for name in names["scheduler"] + names["worker"]:
        network.add(name)
    redis_socket = sockets / "redis.sock"
    server = LocalRedis(
        tmp_path / "redis",
        port=REDIS_PORT,
        appendonly=True,
        extra_args=[
            "--bind",
            redis_host.address,
            "--unixsocket",
            str(redis_socket),
            "--unixsocketperm",
            "700",
            # Its clients are on other test hosts, and none of them has a password.
            "--protected-mode",
            "no",
        ],
        url=f"unix://{redis_socket}",
        launcher=redis_host.launcher(),
    ).start()
    s3_socket = sockets / "s3.sock"
    on_hosts = f"redis://{redis_host.address}:{REDIS_PORT}/0"
    s3_url = f"http://{s3_host.address}:{S3_PORT}"
    system = System(
        redis_url=server.url,
        tmp=tmp_path,
        sink_url=s3_endpoint.sink_url(s3_bucket, "hosts"),
        env_overrides={
            "ARCHIVER_REDIS_URL": on_hosts,
            "ARCHIVER_SINK_URL": f"s3://{s3_bucket}/hosts?endpoint_url={s3_url}&region=us-east-1"
            "&connect_timeout=2&read_timeout=4&max_attempts=1",
            "ARCHIVER_LEASE_SECONDS": str(LEASE),
            "ARCHIVER_LEADER_TTL_SECONDS": "3",
            "ARCHIVER_SWEEP_INTERVAL_SECONDS": "0.5",
            "ARCHIVER_DISPATCH_TIMEOUT_SECONDS": "10",
            "ARCHIVER_RETRY_MIN_SECONDS": "0.1",
            "ARCHIVER_RETRY_MAX_SECONDS": "2",
        },
    )
    try:
        moto_port = s3_endpoint.url.rsplit(":", 1)[1]
        relays = [
            system._spawn("relay", _relay(f"unix:{s3_socket}", f"tcp:127.0.0.1:{moto_port}")),
            system._spawn(
                "relay",
                s3_host.launcher()
                + _relay(f"tcp:{s3_host.address}:{S3_PORT}", f"unix:{s3_socket}", S3_DELAY),
            ),
        ]
        for relay in relays:
            wait_for(lambda: "listening" in relay.output(), timeout=30, what="the S3 relay")  # noqa: B023
        workers = {
            name: system.start_worker(
                concurrency=2, pool=request.param, launcher=network.hosts[name].launcher()
            )
            for name in names["worker"]
        }
        schedulers = {
            name: system.start_scheduler(launcher=network.hosts[name].launcher())
            for name in names["scheduler"]
        }
        yield Fleet(system, network, redis_host, s3_host, schedulers, workers)
    finally:
        network.heal_all()
        system.close()
        server.stop()
        shutil.rmtree(sockets, ignore_errors=True)


def _relay(listen: str, to: str, delay: float = 0.0) -> list[str]:
    relay = [sys.executable, "-m", "tests.hosts.relay"]
    return [*relay, "--listen", listen, "--to", to, "--delay", str(delay)]


def _total(acked: dict[int, int]) -> int:
    return sum(acked.values())


def _run_fault(
    fleet: Fleet,
    producer: SteadyProducer,
    name: str,
    inject: Callable[[], Host],
) -> Outcome:
    system = fleet.system
    # On progress, not on the clock: some entries archived since the last fault healed, and
    # work pending now.
    start = _total(producer.acknowledged())
    wait_for(
        lambda: _total(producer.acknowledged()) >= start + 2 * PARTITIONS,
        timeout=RECOVERY_LIMIT,
        what=f"progress before '{name}'",
    )
    wait_for(
        lambda: any(
            producer.highs().get(p, 0) > producer.acknowledged().get(p, 0)
            for p in range(1, PARTITIONS + 1)
        ),
        timeout=30,
        what="pending work",
    )
    before = system.store.counters.read()
    victim = inject()
    time.sleep(FAULT_SECONDS)  # the fault's length
    victim.heal()
    healed = time.monotonic()
    target = producer.highs()
    wait_for(
        lambda: all(producer.acknowledged().get(p, 0) >= high for p, high in target.items()),
        timeout=RECOVERY_LIMIT,
        interval=0.2,
        what=f"everything announced before '{name}' healed to be acknowledged",
    )
    recovery = time.monotonic() - healed
    after = system.store.counters.read()
    return Outcome(
        name,
        victim.name,
        after.get("fenced", 0) - before.get("fenced", 0),
        after.get("redispatched", 0) - before.get("redispatched", 0),
        round(recovery, 1),
    )


@pytest.mark.timeout(900)
def test_the_fleet_survives_partitions_between_hosts_without_losing_an_entry(
    fleet: Fleet,
) -> None:
    system = fleet.system
    redis_host, s3_host = fleet.redis_host, fleet.s3_host

    def cut_worker_from_redis() -> Host:
        victim = fleet.busy_worker()
        victim.drop([redis_host])
        return victim

    def cut_worker_from_s3() -> Host:
        victim = fleet.busy_worker()
        victim.drop([s3_host])
        return victim

    def cut_leader_from_redis() -> Host:
        victim = fleet.leading_scheduler()
        victim.drop([redis_host])
        return victim

    def cut_redis_from_everyone() -> Host:
        redis_host.drop()
        return redis_host

    def isolate_worker() -> Host:
        victim = fleet.busy_worker()
        victim.drop()
        return victim

    def drop_replies_from_redis() -> Host:
        victim = fleet.busy_worker()
        victim.drop([redis_host], inbound=True, outbound=False)
        return victim

    faults: list[tuple[str, Callable[[], Host]]] = [
        ("a worker host cut off from Redis, not from S3", cut_worker_from_redis),
        ("a worker host cut off from S3", cut_worker_from_s3),
        ("the leading scheduler cut off from Redis", cut_leader_from_redis),
        ("Redis cut off from every host", cut_redis_from_everyone),
        ("a whole worker host isolated", isolate_worker),
        ("one way: Redis's replies to a worker host dropped", drop_replies_from_redis),
    ]
    producer = SteadyProducer(system)
    producer.start()
    outcomes: list[Outcome] = []
    try:
        for name, inject in faults:
            outcomes.append(_run_fault(fleet, producer, name, inject))
            assert producer.failure is None, producer.failure
    finally:
        producer.stop.set()
        producer.join(30)
    assert producer.failure is None, producer.failure

    # Everything announced is acknowledged, the producer's disk is pruned.
    highs = producer.highs()

    def all_acknowledged() -> bool:
        producer.drain()
        return producer.acknowledged() == highs

    wait_for(
        all_acknowledged, timeout=RECOVERY_LIMIT, interval=0.5, what="every entry acknowledged"
    )
    system.watcher.check()
    for partition, high in highs.items():
        keys = [o.key for o in system.sink.list(partition_prefix(system.storage, partition))]
        assert keys == [archive_key(system.storage, partition, n) for n in range(1, high + 1)]
        state = system.state(partition)
        assert state["acknowledged_lsn"] == high
        assert not state["conflicted"]
        assert state["gaps"] == []
        for lsn in range(1, high + 1):
            members = read_tar(system.sink.read(archive_key(system.storage, partition, lsn)))
            for path, content in entry_files(partition, lsn).items():
                assert members[f"{format_lsn(lsn)}/{path}"] == content, (partition, lsn, path)
    # Every host still runs, and every worker host consumes again: none was lost to a fault
    # it should have ridden out. A worker answers a ping only from a live broker connection.
    for process in [*fleet.workers.values(), *fleet.schedulers.values()]:
        assert process.popen.poll() is None, process.output()[-3000:]
    control = Celery(broker=f"redis+socket://{system.redis_url.removeprefix('unix://')}")

    def every_worker_answers() -> bool:
        return len(control.control.ping(timeout=2.0) or []) == len(fleet.workers)

    wait_for(every_worker_answers, timeout=60, interval=1.0, what="every worker host to answer")

    counters = system.store.counters.read()
    print("\nfaults between hosts:")
    print("| fault | host | fenced attempts | re-dispatches | heal → acknowledged (s) |")
    print("|---|---|---|---|---|")
    for o in outcomes:
        print(f"| {o.fault} | {o.victim} | {o.fenced} | {o.redispatched} | {o.recovery_seconds} |")
    print(f"entries: {sum(highs.values())}; counters: {counters}")
    assert all(o.recovery_seconds <= RECOVERY_LIMIT for o in outcomes)
    # A worker host cut off from Redis mid-upload loses its partition to another host (by
    # the sweep, or by the next notification once its grant lapsed), and its own late
    # attempt is fenced.
    cut_off = outcomes[0]
    assert cut_off.fenced >= 1, cut_off
