"""Sending tasks and counting queues, on each broker (real Redis, real RabbitMQ)."""

from __future__ import annotations

import uuid
from typing import Any

import kombu
import pytest
from kombu.transport.redis import Transport as StockRedisTransport

from archiver.config import Settings
from archiver.dev.local_redis import free_port
from archiver.runtime import redis_broker
from archiver.runtime.dispatch import ArchiveTask
from archiver.runtime.taskqueue import (
    TASK_NAME,
    CeleryDispatcher,
    make_celery,
    queue_depths,
    queue_name,
)
from tests.broker_channels import close_after_the_connection_went, waiting_message
from tests.support import wait_for


def _delete_queue(url: str, queue: str) -> None:
    with kombu.Connection(url) as connection:
        channel: Any = connection.channel()
        channel.queue_delete(queue)


def test_queue_depths_on_both_brokers(redis_url: str, rabbitmq_url: str) -> None:
    for broker in (redis_url, rabbitmq_url):
        app = make_celery(Settings(redis_url=redis_url, broker_url=broker))
        queue = f"archiver.depth-{uuid.uuid4().hex[:8]}"
        try:
            for partition in (1, 2, 3):
                app.send_task(TASK_NAME, args=["s", partition, 1, 1], queue=queue)
            # RabbitMQ counts a message once it has routed it, a moment after the publish.
            wanted = {queue: 3, "archiver.never-declared": 0}
            wait_for(
                lambda: queue_depths(app, [queue, "archiver.never-declared"]) == wanted,  # noqa: B023
                timeout=10,
                what=f"the depths on {broker}",
            )
        finally:
            if broker == rabbitmq_url:
                _delete_queue(rabbitmq_url, queue)


def test_tasks_sent_together_arrive_as_celery_tasks_on_both_brokers(
    redis_url: str, rabbitmq_url: str
) -> None:
    """On Redis they go out in one pipeline, addressed to the queue by name; on RabbitMQ one
    by one, the queue declared first. Either way a Celery worker reads the same messages."""
    for broker in (redis_url, rabbitmq_url):
        app = make_celery(Settings(redis_url=redis_url, broker_url=broker))
        storage = f"batch{uuid.uuid4().hex[:8]}"
        tasks = [ArchiveTask(storage, partition, 7, partition * 10) for partition in (1, 2, 3)]
        try:
            assert CeleryDispatcher(app)(tasks) == [None, None, None], broker
            wait_for(
                lambda: queue_depths(app, [queue_name(storage)]) == {queue_name(storage): 3},  # noqa: B023
                timeout=10,
                what=f"three messages on {broker}",
            )
            received = []
            with (
                app.connection_for_read() as connection,
                connection.SimpleQueue(queue_name(storage)) as simple,
            ):
                for _ in tasks:
                    message = simple.get(timeout=5)
                    args, kwargs, _embed = message.decode()
                    received.append((message.headers["task"], tuple(args), kwargs))
                    message.ack()
            assert received == [(TASK_NAME, tuple(task), {}) for task in tasks], broker
        finally:
            if broker == rabbitmq_url:
                _delete_queue(rabbitmq_url, queue_name(storage))


def test_an_unreachable_broker_fails_every_task_and_raises_nothing(redis_url: str) -> None:
    """The dispatcher's caller releases the claims of unsent tasks; it must learn of every one."""
    nobody = f"redis://127.0.0.1:{free_port()}/0"
    app = make_celery(Settings(redis_url=redis_url, broker_url=nobody))
    results = CeleryDispatcher(app)([ArchiveTask("s", p, 1, 1) for p in (1, 2)])
    assert len(results) == 2
    assert all(isinstance(error, Exception) for error in results)


@pytest.mark.parametrize("transport", ["stock", "ours"])
def test_a_channel_closed_after_its_connection_went_hands_its_messages_back(
    redis_url: str, transport: str
) -> None:
    # What Celery's consumer does once the broker connection is lost with messages
    # unacknowledged (seen in the chaos suite after a Redis restart): the channel, closing,
    # hands them back through a new pool, after the connection's client was cleared. Set up by
    # hand here (the moment is a race); the server is real.
    chosen = StockRedisTransport if transport == "stock" else redis_broker.Transport
    queue_name = f"probe-{uuid.uuid4().hex[:8]}"
    if transport == "stock":
        # kombu 5.7: an AttributeError, which Celery's consumer takes for unrecoverable.
        with pytest.raises(AttributeError):
            close_after_the_connection_went(redis_url, chosen, {}, queue_name)
        return
    close_after_the_connection_went(redis_url, chosen, {}, queue_name)
    assert waiting_message(redis_url, chosen, {}, queue_name) == {"n": 1}


def test_redis_brokers_use_the_repaired_transport(redis_url: str) -> None:
    for url in (redis_url, "rediss://h:1/0", "sentinel://h:1/0"):
        transport = kombu.Connection(url).transport
        assert type(transport).__module__ == redis_broker.__name__, url
