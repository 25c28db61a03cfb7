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

from archiver.observability import metrics
from archiver.store.keys import RedisKeys


class ReplicaWait:
    def __init__(
        self, client: Any, keys: RedisKeys, min_replicas: int, timeout_seconds: float
    ) -> None:
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

    def confirm(self) -> bool:
        """Whether every write made before this call, by any client, is on enough replicas.

        A write of our own, then ``WAIT`` for it: a primary replicates in order, so what it
        wrote before is there too."""
        if not self.enabled:
            return True
        pipe = self.client.pipeline(transaction=False)
        pipe.incr(self.keys.replication_probe)
        self.queue(pipe)
        return self.enough(pipe.execute()[-1])
