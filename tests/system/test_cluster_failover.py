"""The state store on a Redis Cluster with a replica per master, and a master killed (-9)
under load: the cluster promotes its replica, and the fleet carries on without an operator.

Celery's broker cannot be a cluster; it is a Redis server of its own here, as in production.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from archiver.core.object_names import PartitionId
from archiver.dev.local_redis import LocalRedis
from archiver.store.keys import RedisKeys
from tests.redis_cluster import ClusterNodes, start_cluster
from tests.support import SteadyLoad, System

PARTITIONS = 6


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[ClusterNodes]:
    # A master is taken for failed after a second without an answer.
    made = start_cluster(tmp_path / "cluster", masters=3, replicas=1, node_timeout_ms=1000)
    yield made
    made.stop()


@pytest.mark.timeout(300)
def test_the_fleet_carries_on_when_a_cluster_master_fails_over(
    nodes: ClusterNodes, tmp_path: Path
) -> None:
    broker = LocalRedis(tmp_path / "broker").start()
    system = System(
        redis_url=nodes.url,
        tmp=tmp_path,
        sink_url=(tmp_path / "bucket").as_uri(),
        env_overrides={
            "ARCHIVER_BROKER_URL": broker.url,
            "ARCHIVER_LEASE_SECONDS": "3",
            "ARCHIVER_LEADER_TTL_SECONDS": "3",
            "ARCHIVER_DISPATCH_TIMEOUT_SECONDS": "10",
        },
    )
    load = SteadyLoad(system, PARTITIONS)
    try:
        system.start_worker(concurrency=2)
        system.start_scheduler()
        system.start_scheduler()
        load.start()
        # The master serving partition 1's keys (its replica takes over its slots).
        key = RedisKeys(system.prefix).partition(PartitionId(system.storage, 1))
        victim = nodes.master_of(key)
        report = load.fail_over(
            lambda: nodes.kill(victim),
            lambda: nodes.master_of(key) != victim and nodes.healthy(),
        )
        system.assert_invariants()
        print(f"\ncluster failover: {report}")
    finally:
        load.stop()
        system.close()
        broker.stop()
