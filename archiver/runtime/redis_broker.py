"""Celery's broker on Redis: kombu's Redis and Redis Sentinel transports, with one repair.

When a worker's broker connection is lost while it holds unacknowledged messages (late
acknowledgement: every task running), Celery closes the connection, and closing the channel
hands those messages back through a new connection pool. The channel has dropped its pools
by then, and builds the new one from the connection's client, which the close may already
have cleared (with several Sentinels, kombu has moved the connection on to the next one): an
``AttributeError``, which Celery takes for an unrecoverable error, and the worker exits
(kombu 5.7; seen after a Redis restart and after a Sentinel failover). Here the channel
builds it from what it was opened with: the messages go back to their queue (on the master
the Sentinels name now), or, with no server there yet, the close fails as a connection
error, which it ignores, and their partitions are dispatched again later. The worker
reconnects.

Importing this module makes ``redis://``, ``rediss://``, ``redis+socket://`` and
``sentinel://`` brokers use these transports in the process: kombu takes the transport from
a URL's scheme again whenever it moves a connection on to another URL.
"""

from __future__ import annotations

from typing import Any

import kombu.transport
import redis
from kombu.transport import redis as kombu_redis


class _RepairedPool:
    """Makes the channel's connection pool from what the channel was opened with when the
    connection's client is gone."""

    connection: Any

    def __init__(self, connection: Any, *args: Any, **kwargs: Any) -> None:
        self._opened_with = connection.client
        super().__init__(connection, *args, **kwargs)  # type: ignore[call-arg]

    def _get_pool(self, asynchronous: bool = False) -> Any:
        if self.connection.client is not None:
            return super()._get_pool(asynchronous)  # type: ignore[misc]
        if self._opened_with is None:
            raise redis.ConnectionError("the broker connection is closed")
        self.connection.client = self._opened_with
        try:
            return super()._get_pool(asynchronous)  # type: ignore[misc]
        finally:
            self.connection.client = None


class Channel(_RepairedPool, kombu_redis.Channel):
    pass


class Transport(kombu_redis.Transport):
    Channel = Channel


class SentinelChannel(_RepairedPool, kombu_redis.SentinelChannel):
    pass


class SentinelTransport(kombu_redis.SentinelTransport):
    Channel = SentinelChannel


TRANSPORTS = {
    "redis": f"{__name__}:Transport",
    "rediss": f"{__name__}:Transport",
    "sentinel": f"{__name__}:SentinelTransport",
}
# What Celery's ``broker_transport`` names for a ``sentinel://`` broker.
SENTINEL = TRANSPORTS["sentinel"]

for _scheme, _transport in TRANSPORTS.items():
    kombu.transport.TRANSPORT_ALIASES[_scheme] = _transport
    getattr(kombu.transport, "_transport_cache", {}).pop(_scheme, None)
