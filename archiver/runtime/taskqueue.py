"""The Celery side shared by the scheduler (which sends) and the workers (which run).

Redelivery settings, and why:
- ``acks_late`` with ``reject_on_worker_lost``: a task message is only acknowledged once the
  attempt ended, so a worker killed mid-upload leaves the message to be delivered again.
- prefetch 1: a worker holds no more messages than it runs, so a dead worker strands none.
- ``visibility_timeout`` above the longest a task can run (a chain's time, then one attempt
  to its limit and grace) plus the longest retry wait: Redis redelivers unacknowledged
  messages after it, also while the first worker still runs them.
- no Celery time limits: the prefork pool keeps a timer entry per task in the worker's main
  process until the task's limit would have fired, ended or not, so that memory grows with
  rate times limit. Each attempt is bounded by the lease keeper instead (``LeaseKeeper``).
- cancel long-running tasks on connection loss: their messages are redelivered anyway.
Redelivered or duplicated tasks are harmless: a task only acts while it holds the partition's
current fencing token, and archive objects are written once.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Sequence
from typing import Any

from celery import Celery
from kombu import Producer

from archiver.config import Settings
from archiver.runtime import redis_broker
from archiver.runtime.dispatch import ArchiveTask
from archiver.runtime.entry_archiver import overrun_grace
from archiver.store.urls import is_sentinel_url, parse_sentinel_url

TASK_NAME = "archiver.archive_entry"
QUEUE_PREFIX = "archiver."


def queue_name(storage: str) -> str:
    """Only the host holding a storage's files can read its entries: one queue per storage."""
    return QUEUE_PREFIX + storage


# Celery's pools a worker host may run: a process per upload in flight (isolated, about
# 80 MiB each), or a thread per upload in one process (a few MiB each; for object stores far
# away, where uploads mostly wait).
POOLS = ("prefork", "threads")


def worker_command(
    queues: list[str],
    concurrency: int,
    node_name: str,
    pool: str = "prefork",
    events: bool = False,
) -> list[str]:
    """The command line of a worker host consuming ``queues`` (``archiver worker``)."""
    return [
        sys.executable, "-m", "archiver", "worker",
        "--queues", ",".join(queues),
        "--concurrency", str(concurrency),
        "--node-name", node_name,
        "--pool", pool,
        *(["--events"] if events else []),
    ]  # fmt: skip


def celery_worker_argv(
    queues: list[str],
    concurrency: int,
    node_name: str,
    pool: str = "prefork",
    events: bool = False,
) -> list[str]:
    """What ``archiver worker`` runs once the host is prepared. With ``events``, the worker
    sends task events and heartbeats, which monitors such as Flower show."""
    if pool not in POOLS:
        raise ValueError(f"pool must be one of {POOLS}, got {pool!r}")
    return [
        sys.executable, "-m", "celery", "-A", "workers", "worker",
        "-Q", ",".join(queues),
        "-c", str(concurrency),
        "-P", pool,
        "-n", node_name,
        "--without-gossip", "--without-mingle",
        *(["--task-events"] if events else ["--without-heartbeat"]),
        "--loglevel", "INFO",
    ]  # fmt: skip


def queue_depths(app: Celery, queues: list[str]) -> dict[str, int]:
    """Messages waiting in each queue, as the broker counts them. A queue the broker does not
    know (never declared; on Redis, also an empty one) holds none."""
    depths: dict[str, int] = {}
    with app.connection_for_read() as connection:
        for queue in queues:
            channel: Any = connection.channel()
            try:
                depths[queue] = int(channel.queue_declare(queue=queue, passive=True).message_count)
            except connection.channel_errors:
                depths[queue] = 0
            finally:
                with contextlib.suppress(*connection.connection_errors, *connection.channel_errors):
                    channel.close()
    return depths


def make_celery(settings: Settings, name: str = "archiver") -> Celery:
    limit = settings.task_time_limit_seconds
    broker = settings.broker_url
    transport_options: dict[str, str] = {}
    transport = None
    if is_sentinel_url(broker):
        transport = redis_broker.SENTINEL
        if ";" not in broker:  # ours, in kombu's spelling
            broker, transport_options = parse_sentinel_url(broker).as_kombu()
    app = Celery(name, broker=broker)
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        task_ignore_result=True,
        result_backend=None,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        worker_cancel_long_running_tasks_on_connection_loss=True,
        task_time_limit=None,
        task_soft_time_limit=None,
        broker_connection_retry_on_startup=True,
        broker_transport_options={
            "visibility_timeout": int(
                settings.chain_seconds
                + limit
                + overrun_grace(limit)
                + settings.retry_max_seconds
                + 300
            ),
            # Sends fail rather than hang when the broker is unreachable.
            "socket_timeout": 10,
            "socket_connect_timeout": 5,
            **transport_options,
        },
        broker_transport=transport,
        task_default_queue=queue_name("default"),
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,
    )
    return app


class CeleryDispatcher:
    """Sends archive tasks; the scheduler and the workers both dispatch through it.

    Tasks sent together go out as one batch where the transport batches publishing (Redis:
    one pipeline), which costs a fraction of sending them one by one; elsewhere each is
    published at once."""

    def __init__(self, app: Celery) -> None:
        self.app = app
        with app.connection_for_write() as connection:
            # Celery publishes to a queue by its name (the default exchange). On Redis that
            # needs no declaration, which would otherwise cost more than the rest of a send;
            # an AMQP broker drops a message whose queue does not exist yet.
            self._declare: list[Any] | None = (
                [] if connection.transport.driver_type == "redis" else None
            )

    def __call__(self, tasks: Sequence[ArchiveTask]) -> list[Exception | None]:
        results: list[Exception | None] = []
        try:
            # The batch is large enough to go out in one flush, at the end.
            with (
                self.app.producer_or_acquire() as producer,
                producer.batch(max_size=4 * len(tasks) + 1),
            ):
                results.extend(self._send(task, producer) for task in tasks)
        except Exception as exc:
            # The batch did not go out, or not all of it: count every task as unsent.
            return [exc] * len(tasks)
        return results

    def _send(self, task: ArchiveTask, producer: Producer) -> Exception | None:
        args = list(task)
        try:
            self.app.send_task(
                TASK_NAME,
                args=args,
                queue=queue_name(task.storage),
                producer=producer,
                declare=self._declare,
                # What monitoring shows of the arguments; Celery's own rendering of plain
                # values gives the same text at several times the cost.
                argsrepr=repr(args),
                kwargsrepr="{}",
            )
        except Exception as exc:
            return exc
        return None
