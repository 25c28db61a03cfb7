"""Celery's broker through Redis Sentinel: kombu's Sentinel transport, with one repair.

When a worker's broker connection is lost while it holds unacknowledged messages (late
acknowledgement: every task running), Celery closes the connection, and closing the channel
hands those messages back through a new connection pool. With several Sentinels, kombu has
by then moved the connection on to the next one, which clears its client; the Sentinel
channel has dropped its pools (to find the new master) and builds the new one from that
client: an ``AttributeError``, which Celery takes for an unrecoverable error, and the worker
exits (kombu 5.7). Here the channel builds it from what it was opened with: the messages go
back to their queue on the master the Sentinels name now (with none named yet, the close
fails as a connection error, which it ignores, and their partitions are dispatched again
later), and the worker reconnects.
"""

from __future__ import annotations

from typing import Any

import kombu.transport
import redis
from kombu.transport.redis import SentinelChannel, SentinelTransport

# What Celery's ``broker_transport`` names for a ``sentinel://`` broker.
TRANSPORT = f"{__name__}:Transport"


class Channel(SentinelChannel):
    def __init__(self, connection: Any, *args: Any, **kwargs: Any) -> None:
        # What the channel was opened with, for a pool made after the close cleared it.
        self._opened_with = connection.client
        super().__init__(connection, *args, **kwargs)

    def _get_pool(self, asynchronous: bool = False) -> Any:
        if self.connection.client is not None:
            return super()._get_pool(asynchronous)  # type: ignore[misc]
        if self._opened_with is None:
            raise redis.ConnectionError("the broker connection is closed")
        # Closing: the messages go back through the master the Sentinels name now.
        self.connection.client = self._opened_with
        try:
            return super()._get_pool(asynchronous)  # type: ignore[misc]
        finally:
            self.connection.client = None


class Transport(SentinelTransport):
    Channel = Channel


# With several Sentinels, kombu moves a failing connection on to the next one's URL and takes
# the transport from that URL's scheme again, whatever was given: ``sentinel`` must name this
# one, in every process that imports the archiver's Celery settings.
kombu.transport.TRANSPORT_ALIASES["sentinel"] = TRANSPORT
getattr(kombu.transport, "_transport_cache", {}).pop("sentinel", None)
