"""The state store on a real Redis Cluster: three masters on loopback ports, made with
``redis-server --cluster-enabled yes`` and ``redis-cli --cluster create``.

Every partition's keys share a hash tag, so each script touches one slot; the partitions
themselves spread over all three masters.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from redis.cluster import RedisCluster

from archiver.core.object_names import PartitionId
from archiver.core.partition import Gap, ReconcileResult, RecordedFailure, VerifiedRun
from archiver.store.client import connect
from archiver.store.keys import RedisKeys
from archiver.store.state_store import RedisStateStore
from archiver.store.streams import Streams
from tests.redis_cluster import start_cluster
from tests.store_calls import apply_notification, claim_many

HOUR = 3600.0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    nodes = start_cluster(tmp_path_factory.mktemp("cluster"))
    try:
        client = RedisCluster(host="127.0.0.1", port=nodes.ports[0], decode_responses=True)
        yield client
        client.close()
    finally:
        nodes.stop()


@pytest.fixture
def store(cluster: RedisCluster) -> RedisStateStore:
    prefix = f"t{time.time_ns()}"  # each test its own keys
    return RedisStateStore(cluster, RedisKeys(prefix))


def test_each_partition_lives_in_one_slot_and_partitions_spread(
    store: RedisStateStore, cluster: RedisCluster
) -> None:
    keys = store.keys
    slots = set()
    for partition in range(1, 31):
        names = [
            keys.partition(PartitionId("s", partition)),
            keys.gaps(PartitionId("s", partition)),
            keys.marks(PartitionId("s", partition)),
            keys.audit(PartitionId("s", partition)),
        ]
        partition_slots = {cluster.keyslot(name) for name in names}  # type: ignore[no-untyped-call]
        assert len(partition_slots) == 1, names
        slots |= partition_slots
    owners = {
        cluster.get_node_from_key(keys.partition(PartitionId("s", p))).name  # type: ignore[no-untyped-call]
        for p in range(1, 31)
    }
    assert len(owners) == 3, "30 partitions should land on all three masters"
    assert len(slots) == 30


def test_the_whole_life_of_partitions_on_a_cluster(store: RedisStateStore) -> None:
    # Notifications for partitions on every master, in one pipelined batch.
    results = store.transitions.apply_notifications([("s", p, 1, 3) for p in range(1, 10)], HOUR)
    claims = {p: r.claim for p, r in zip(range(1, 10), results, strict=True)}
    assert all(c is not None and c.lsn == 1 for c in claims.values())
    for partition, claim in claims.items():
        assert claim is not None
        started = store.transitions.start_attempt(
            PartitionId("s", partition), 1, claim.token, HOUR, "host:1"
        )
        assert started.held
        commit = store.transitions.commit_success(PartitionId("s", partition), 1, claim.token, HOUR)
        assert commit.committed
        assert commit.next_claim is not None
        assert commit.next_claim.lsn == 2
    # A failure, a gap, fencing, the admin scripts and reconcile.
    first = store.records.load(PartitionId("s", 1))
    assert first is not None
    token = first.state.fencing_token
    assert store.transitions.record_failure(
        PartitionId("s", 1), 2, token, "boom", HOUR
    ) == RecordedFailure(1)
    gap = apply_notification(store, "s", 2, 3, 5, HOUR)
    assert gap.gap == Gap(2, 3)
    assert store.admin.pause(PartitionId("s", 3), "ops", "test").done
    assert store.admin.release(PartitionId("s", 4), "ops", "test").done
    assert not store.transitions.commit_success(
        PartitionId("s", 4), 2, 2, HOUR
    ).committed  # fenced off
    assert store.admin.skip_to(PartitionId("s", 5), 4, "ops", "lost").done
    verified = VerifiedRun(first=1, last=7, checked_from=1, holes=(Gap(3, 5),))
    assert store.transitions.reconcile(PartitionId("s", 20), verified) == ReconcileResult(
        True, None
    )
    # Listing pages through the index (SSCAN) and reads each partition from its own master.
    records = {r.partition: r for r in store.records.all()}
    assert set(records) == {*range(1, 10), 20}
    assert records[3].state.paused
    assert records[5].state.next_lsn == 4
    assert records[20].state.next_lsn == 8
    assert records[2].gaps_total == 1
    # Sweep-style claims across the cluster in one pipeline.
    claimed = claim_many(store, [("s", p) for p in range(1, 10)], HOUR)
    assert {p for _, p, _ in claimed} == {4}  # released: claimable again; others are held
    # Streams work on a cluster too.
    streams = Streams(store.client, store.keys)
    streams.publish_ack("s", 1, 1)
    _after, acks = streams.read_acks("0")
    assert [(a.partition, a.lsn) for a in acks] == [(1, 1)]


def test_scripts_are_loaded_again_on_every_master_after_a_flush(
    store: RedisStateStore, cluster: RedisCluster
) -> None:
    store.transitions.apply_notifications([("s", p, 1, 1) for p in range(1, 7)], HOUR)
    for node in cluster.get_primaries():  # type: ignore[no-untyped-call]
        node.redis_connection.script_flush()
    results = store.transitions.apply_notifications([("s", p, 1, 2) for p in range(1, 7)], HOUR)
    assert [r.outcome.value for r in results] == ["applied"] * 6


def test_a_cluster_url_gives_a_cluster_client(cluster: RedisCluster) -> None:
    node = cluster.get_primaries()[0]  # type: ignore[no-untyped-call]
    client: Any = connect(f"redis://{node.host}:{node.port}/0?cluster=yes")
    assert isinstance(client, RedisCluster)
    store = RedisStateStore(client, RedisKeys(f"u{time.time_ns()}"))
    results = store.transitions.apply_notifications([("s", p, 1, 1) for p in range(1, 7)], HOUR)
    assert all(r.claim is not None for r in results)
    assert len(list(store.records.all())) == 6
