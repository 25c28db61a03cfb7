"""A pipeline for Redis Cluster that may hold scripts.

redis-py's cluster pipeline refuses EVALSHA. This one records the calls, sends each master the
calls whose first key it owns, in one pipeline per master, and returns the replies in the order
of the calls. Every script here touches the keys of one partition (one slot), so routing by
the first key is exact.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import redis
from redis.cluster import RedisCluster
from redis.exceptions import (
    AskError,
    ClusterDownError,
    MovedError,
    RedisClusterException,
    TryAgainError,
)

# Where a command's first key is among its arguments.
_KEY_POSITION = {"evalsha": 2, "eval": 2}


class ClusterBatch:
    def __init__(self, cluster: RedisCluster) -> None:
        self._cluster = cluster
        self._calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    def __getattr__(self, command: str) -> Callable[..., ClusterBatch]:
        def record(*args: Any, **kwargs: Any) -> ClusterBatch:
            self._calls.append((command, args, kwargs))
            return self

        return record

    def execute(self) -> list[Any]:
        try:
            return self._execute()
        except RedisClusterException as exc:
            # Not a RedisError (a slot no node serves, mid-failover): callers ride those out.
            raise redis.ConnectionError(f"Redis Cluster: {exc}") from exc
        finally:
            self._calls = []

    def _execute(self) -> list[Any]:
        by_node: dict[str, tuple[Any, list[int]]] = {}
        for index, (command, args, _kwargs) in enumerate(self._calls):
            key = args[_KEY_POSITION.get(command, 0)]
            node = self._cluster.get_node_from_key(key)  # type: ignore[no-untyped-call]
            if node.name not in by_node:
                by_node[node.name] = (node.redis_connection.pipeline(transaction=False), [])
            pipe, indexes = by_node[node.name]
            getattr(pipe, command)(*args, **self._calls[index][2])
            indexes.append(index)
        replies: list[Any] = [None] * len(self._calls)
        try:
            for pipe, indexes in by_node.values():
                for index, reply in zip(indexes, pipe.execute(), strict=True):
                    replies[index] = reply
        except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError) as exc:
            if not isinstance(exc, redis.ResponseError) or _moved(exc):
                # A master died or its slots moved (a failover): learn the cluster's map
                # again, so that the caller's retry goes where the slots are now. If that
                # fails too, the next batch tries again; the caller hears the first error.
                with contextlib.suppress(RedisClusterException, redis.RedisError):
                    self._cluster.nodes_manager.initialize()
            raise
        return replies


def _moved(exc: redis.ResponseError) -> bool:
    moved = (MovedError, AskError, ClusterDownError, TryAgainError)
    return isinstance(exc, moved) or str(exc).split(" ", 1)[0] in ("MOVED", "ASK", "CLUSTERDOWN")
