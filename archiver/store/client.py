"""Redis connections with deadlines: a dead or black-holed server fails a call, never hangs it.

Every connection to a single server counts its round trips
(``archiver_redis_round_trips_total``): a pipeline or a script is one, whatever it does inside.
The orchestration's cost per archived entry is measured with it.
"""

from __future__ import annotations

from functools import cache
from typing import Any, cast
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis
from redis.cluster import RedisCluster
from redis.sentinel import Sentinel

from archiver.observability import metrics
from archiver.store.urls import (
    SentinelAddress,
    cluster_requested,
    is_sentinel_url,
    parse_sentinel_url,
)

SOCKET_TIMEOUT = 10.0
CONNECT_TIMEOUT = 5.0


@cache
def _counting(connection_class: type[Any]) -> type[Any]:
    """``connection_class`` (plain, TLS or Unix socket) that counts what it sends."""

    class CountingConnection(connection_class):  # type: ignore[misc]
        def send_packed_command(self, command: Any, check_health: bool = True) -> None:
            metrics.REDIS_ROUND_TRIPS.inc()
            super().send_packed_command(command, check_health)

    CountingConnection.__name__ = f"Counting{connection_class.__name__}"
    return CountingConnection


def connect(url: str, decode_responses: bool = True) -> redis.Redis:
    """A client for ``url``; with ``?cluster=yes`` in it, for a Redis Cluster reached through
    that node (the state store and streams then spread over its masters); for a
    ``sentinel://`` URL, for the master its Sentinels name now, found again after a
    failover."""
    if is_sentinel_url(url):
        return _sentinel_master(parse_sentinel_url(url), decode_responses)
    parts = urlsplit(url)
    params = dict(parse_qsl(parts.query))
    cluster = params.pop("cluster", None)
    if cluster is not None:
        wanted = cluster_requested(url)
        url = urlunsplit(parts._replace(query=urlencode(params)))
        if wanted:
            cluster_client = RedisCluster.from_url(
                url,
                socket_timeout=SOCKET_TIMEOUT,
                socket_connect_timeout=CONNECT_TIMEOUT,
                decode_responses=decode_responses,
            )
            return cast(redis.Redis, cluster_client)
    return _counted(redis.Redis.from_url(url, **_options(decode_responses)))


def _options(decode_responses: bool) -> dict[str, Any]:
    """What every connection to one server is made with."""
    return {
        "socket_timeout": SOCKET_TIMEOUT,
        "socket_connect_timeout": CONNECT_TIMEOUT,
        "health_check_interval": 30,
        "decode_responses": decode_responses,
    }


def _counted(client: redis.Redis) -> redis.Redis:
    pool = client.connection_pool
    pool.connection_class = _counting(pool.connection_class)
    return client


def _sentinel_master(address: SentinelAddress, decode_responses: bool) -> redis.Redis:
    sentinel = Sentinel(  # type: ignore[no-untyped-call,unused-ignore]
        list(address.sentinels),
        socket_timeout=SOCKET_TIMEOUT,
        socket_connect_timeout=CONNECT_TIMEOUT,
    )
    client: redis.Redis = sentinel.master_for(  # type: ignore[no-untyped-call,unused-ignore]
        address.master,
        db=address.db,
        password=address.password,
        **_options(decode_responses),
    )
    return _counted(client)
