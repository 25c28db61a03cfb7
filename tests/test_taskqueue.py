"""Queue depths as each broker counts them (real Redis, real RabbitMQ)."""

from __future__ import annotations

import uuid
from typing import Any

import kombu

from archiver.config import Settings
from archiver.taskqueue import TASK_NAME, make_celery, queue_depths


def test_queue_depths_on_both_brokers(redis_url: str, rabbitmq_url: str) -> None:
    for broker in (redis_url, rabbitmq_url):
        app = make_celery(Settings(redis_url=redis_url, broker_url=broker))
        queue = f"archiver.depth-{uuid.uuid4().hex[:8]}"
        try:
            for partition in (1, 2, 3):
                app.send_task(TASK_NAME, args=["s", partition, 1, 1], queue=queue)
            depths = queue_depths(app, [queue, "archiver.never-declared"])
            assert depths == {queue: 3, "archiver.never-declared": 0}, broker
        finally:
            if broker == rabbitmq_url:
                with kombu.Connection(rabbitmq_url) as connection:
                    channel: Any = connection.channel()
                    channel.queue_delete(queue)
