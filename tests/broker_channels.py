"""The moment a Celery worker's broker channel is closed after its connection went, set up
by hand on real servers (in a real failover or restart it is a race)."""

from __future__ import annotations

from typing import Any

import kombu

from tests.support import wait_for


def close_after_the_connection_went(
    url: str, transport: Any, options: dict[str, str], queue_name: str
) -> None:
    """Publish a message and take it unacknowledged; then close the channel as Celery's
    consumer does once the connection is lost: its pools dropped, the connection's client
    cleared, and the closing channel handing the message back."""
    with kombu.Connection(url, transport=transport, transport_options=options) as connection:
        channel: Any = connection.default_channel
        queue = kombu.Queue(queue_name, channel=channel)
        queue.declare()
        kombu.Producer(channel).publish({"n": 1}, routing_key=queue_name)
        assert wait_for(lambda: queue.get(no_ack=False), what="the message") is not None
        channel._disconnect_pools()
        channel.connection.client = None
        connection.maybe_close_channel(channel)


def waiting_message(url: str, transport: Any, options: dict[str, str], queue_name: str) -> Any:
    """The payload of the next message in the queue, for the next worker."""
    with kombu.Connection(url, transport=transport, transport_options=options) as connection:
        message = kombu.Queue(queue_name, channel=connection.default_channel).get(no_ack=True)
        assert message is not None
        return message.payload
