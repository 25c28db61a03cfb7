"""Waiting for replicas before anything outside Redis acts on a write.

An acknowledgement lets the producer delete its entry. Were Redis to fail over to a replica
that had not received the commit yet, the partition's state would go back behind what the
producer was told (the archive still holds the object, so a redone attempt finds it, but the
state and the producer disagree). With ``ARCHIVER_REDIS_MIN_REPLICAS`` a commit is first
confirmed on that many replicas (Redis ``WAIT``), and an acknowledgement that could not be
is held back: the partition's next acknowledgement, which covers it, goes out once confirmed.
"""

from __future__ import annotations

from typing import Any

from redis.cluster import RedisCluster

from archiver.core.object_names import PartitionId
from archiver.observability import metrics
from archiver.store.keys import RedisKeys


class ReplicaWait:
    def __init__(
        self, client: Any, keys: RedisKeys, min_replicas: int, timeout_seconds: float
    ) -> None:
        if min_replicas and isinstance(client, RedisCluster):
            # A cluster's WAIT would go to whichever node owns the slot of the word "WAIT".
            raise ValueError("waiting for replicas is for one server, not a Redis Cluster")
        self.client = client
        self.keys = keys
        self.min_replicas = min_replicas
        self.timeout_ms = max(1, round(timeout_seconds * 1000))

    @property
    def enabled(self) -> bool:
        return self.min_replicas > 0

    def queue(self, pipe: Any) -> None:
        """Queue a ``WAIT`` after a write queued on ``pipe``: its reply says how many replicas
        hold that write (and whatever the connection wrote before)."""
        pipe.execute_command("WAIT", self.min_replicas, self.timeout_ms)

    def enough(self, reply: Any) -> bool:
        held = int(reply) >= self.min_replicas
        if not held:
            metrics.ACKNOWLEDGEMENTS_HELD.inc()
        return held

    def acknowledged_on_replicas(self, partitions: list[PartitionId]) -> list[int] | None:
        """Each partition's acknowledged LSN as the replicas hold it; None if they could not
        confirm in time.

        Read, then a write of our own, then ``WAIT`` for it, all on one connection: a primary
        replicates in order, so what it held when read is on the replicas once the write is.
        Read here, not earlier, because the server may have changed since (a failover)."""
        pipe = self.client.pipeline(transaction=False)
        for pid in partitions:
            pipe.hget(self.keys.partition(pid), "acked")
        pipe.incr(self.keys.replication_probe)
        self.queue(pipe)
        replies = pipe.execute()
        if not self.enough(replies[-1]):
            return None
        return [int(value or 0) for value in replies[: len(partitions)]]
