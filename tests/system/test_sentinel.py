"""Redis Sentinel: the state store and Celery's broker on a master that Sentinel fails over.

Three Sentinels watch a primary with one replica, on loopback. Under a steady producer the
primary is killed (-9): the Sentinels promote the replica, and every process (the workers'
state store and broker connections, the schedulers, the test's own client) finds the new
master through them, with no one repointing anything.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import kombu
import pytest
import redis
from kombu.transport.redis import SentinelTransport as StockSentinelTransport

from archiver.dev.local_redis import LocalRedis, free_port, redis_server_binary
from archiver.runtime import redis_broker
from archiver.store.urls import parse_sentinel_url
from tests.broker_channels import close_after_the_connection_went, waiting_message
from tests.support import SteadyLoad, System, wait_for

MASTER = "archive"
PARTITIONS = 4


@dataclass
class SentinelFleet:
    """A primary, a replica, three Sentinels."""

    directory: Path
    primary: LocalRedis
    replica: LocalRedis
    sentinels: list[subprocess.Popen[bytes]] = field(default_factory=list)
    ports: list[int] = field(default_factory=list)

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{port}" for port in self.ports)
        return f"sentinel://{hosts}/0?master={MASTER}"

    def master_port(self) -> int:
        client = redis.Redis(port=self.ports[0], socket_timeout=2, decode_responses=True)
        address = cast(tuple[str, int], client.sentinel_get_master_addr_by_name(MASTER))
        return int(address[1])

    def start_sentinels(self) -> None:
        for n in range(3):
            port = free_port()
            conf = self.directory / f"sentinel-{n}.conf"
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {self.directory}\n"
                f"sentinel monitor {MASTER} 127.0.0.1 {self.primary.port} 2\n"
                f"sentinel down-after-milliseconds {MASTER} 1000\n"
                f"sentinel failover-timeout {MASTER} 10000\n"
            )
            log = open(self.directory / f"sentinel-{n}.log", "wb")  # noqa: SIM115 - the child's
            self.sentinels.append(
                subprocess.Popen(
                    [redis_server_binary(), str(conf), "--sentinel"], stdout=log, stderr=log
                )
            )
            log.close()
            self.ports.append(port)

        def all_watch() -> bool:
            try:
                clients = [redis.Redis(port=port, socket_timeout=1) for port in self.ports]
                masters = [cast(dict[str, Any], c.sentinel_master(MASTER)) for c in clients]
            except redis.RedisError:
                return False
            return all(int(m["num-other-sentinels"]) == 2 for m in masters)

        wait_for(all_watch, timeout=30, what="three Sentinels watching the primary")

    def stop(self) -> None:
        for sentinel in self.sentinels:
            sentinel.kill()
            sentinel.wait()
        self.replica.stop()
        self.primary.stop()


@pytest.fixture
def sentinel_fleet(tmp_path: Path) -> Iterator[SentinelFleet]:
    # A replica's first sync starts at once, not after the usual wait for more replicas.
    quick_sync = ["--repl-diskless-sync-delay", "0"]
    primary = LocalRedis(tmp_path / "primary", appendonly=True, extra_args=quick_sync).start()
    replica = LocalRedis(
        tmp_path / "replica",
        appendonly=True,
        extra_args=[*quick_sync, "--replicaof", "127.0.0.1", str(primary.port)],
    ).start()
    fleet = SentinelFleet(tmp_path, primary, replica)

    def linked() -> bool:
        info = redis.Redis(port=replica.port, socket_timeout=1).info("replication")
        return info.get("master_link_status") == "up"

    try:
        wait_for(linked, timeout=30, what="the replica to follow the primary")
        fleet.start_sentinels()
        yield fleet
    finally:
        fleet.stop()


def test_a_sentinel_url_names_the_sentinels_and_the_master() -> None:
    address = parse_sentinel_url("sentinel://:pw@a:26379,b:26380/2?master=archive")
    assert address.sentinels == (("a", 26379), ("b", 26380))
    assert address.master == "archive"
    assert address.db == 2
    assert address.password == "pw"
    assert address.as_kombu() == (
        "sentinel://:pw@a:26379/2;sentinel://:pw@b:26380/2",
        {"master_name": "archive"},
    )
    for bad, says in (
        ("sentinel://a:26379/0", "master"),
        ("sentinel://a/0?master=m", "host:port"),
        ("sentinel://a:1,b:x/0?master=m", "host:port"),
        ("sentinel://a:1/zero?master=m", "database"),
    ):
        with pytest.raises(ValueError, match=says):
            parse_sentinel_url(bad)


@pytest.mark.parametrize("transport", ["stock", "ours"])
def test_a_broker_channel_closed_after_its_connection_went_keeps_the_worker_alive(
    sentinel_fleet: SentinelFleet, transport: str
) -> None:
    # What Celery's consumer does once the broker connection is lost with a message
    # unacknowledged: the Sentinel channel has dropped its pools (to find the new master) and
    # the connection's client is gone when the channel, closing, hands the message back.
    # Set up by hand here (the moment is a race in a real failover); the servers are real.
    url, options = parse_sentinel_url(sentinel_fleet.url).as_kombu()
    chosen = StockSentinelTransport if transport == "stock" else redis_broker.SentinelTransport
    if transport == "stock":
        # kombu 5.7: an AttributeError, which Celery's consumer takes for unrecoverable.
        with pytest.raises(AttributeError):
            close_after_the_connection_went(url, chosen, options, "probe")
        return
    close_after_the_connection_went(url, chosen, options, "probe")
    assert waiting_message(url, chosen, options, "probe") == {"n": 1}


def test_a_broker_connection_moved_to_the_next_sentinel_keeps_the_repaired_transport() -> None:
    # kombu takes the transport from the next URL's scheme when it moves on to another
    # Sentinel, whatever transport the connection was made with.
    url, options = parse_sentinel_url("sentinel://a:1,b:2/0?master=m").as_kombu()
    connection = kombu.Connection(url, transport=redis_broker.SENTINEL, transport_options=options)
    assert isinstance(connection.transport, redis_broker.SentinelTransport)
    connection.maybe_switch_next()
    assert isinstance(connection.transport, redis_broker.SentinelTransport)


@pytest.mark.timeout(300)
def test_the_fleet_follows_a_sentinel_failover_under_load(
    sentinel_fleet: SentinelFleet, tmp_path: Path
) -> None:
    system = System(
        redis_url=sentinel_fleet.url,
        tmp=tmp_path,
        sink_url=(tmp_path / "bucket").as_uri(),
        # Task messages the new master never received are sent again after the dispatch
        # timeout.
        env_overrides={
            "ARCHIVER_LEASE_SECONDS": "3",
            "ARCHIVER_LEADER_TTL_SECONDS": "3",
            "ARCHIVER_DISPATCH_TIMEOUT_SECONDS": "10",
        },
    )
    load = SteadyLoad(system, PARTITIONS)
    try:
        worker = system.start_worker(concurrency=2)
        system.start_scheduler()
        system.start_scheduler()
        load.start()
        assert sentinel_fleet.master_port() == sentinel_fleet.primary.port
        primary = sentinel_fleet.primary.process
        assert primary is not None
        report = load.fail_over(
            primary.kill,  # kill -9, under load
            lambda: sentinel_fleet.master_port() == sentinel_fleet.replica.port,
        )
        system.assert_invariants()
        # The worker rode it out (an unrecoverable error in its broker connection would
        # have ended it).
        assert worker.popen.poll() is None, worker.output()[-3000:]
        print(f"\nsentinel failover: {report}")
    finally:
        load.stop()
        system.close()
