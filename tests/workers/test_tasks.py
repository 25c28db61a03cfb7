"""The Celery task's boundary, with a real worker process."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from typing import Any

from celery import Celery

from archiver.runtime.taskqueue import TASK_NAME
from tests.support import System, wait_for


def test_malformed_task_arguments_are_refused_without_touching_state(system: System) -> None:
    worker = system.start_worker()
    app = Celery(broker=system.redis_url)
    for args in (
        ["../etc", 1, 1, 1],
        ["default", 0, 1, 1],
        ["default", 1, 2**64, 1],
        ["default", 1, 1, "x"],
    ):
        app.send_task(TASK_NAME, args=args, queue="archiver.default", serializer="json")
    wait_for(
        lambda: worker.output().count("rejected archive task with invalid arguments") == 4,
        what="four rejections",
    )
    assert system.client.keys("archiver:partition:*") == []


def test_only_json_messages_are_accepted(system: System) -> None:
    worker = system.start_worker()
    app = Celery(broker=system.redis_url)
    app.conf.accept_content = ["json", "pickle"]
    app.send_task(
        TASK_NAME, args=["default", 1, 1, 1], queue="archiver.default", serializer="pickle"
    )
    wait_for(lambda: "untrusted content of type pickle" in worker.output(), what="the refusal")
    assert "archiver.worker" not in worker.output()


def test_with_events_a_monitor_sees_every_archive_task_and_the_worker(system: System) -> None:
    # What Flower reads: task events and worker heartbeats on the broker's event exchange.
    app = Celery(broker=system.redis_url)
    seen: list[dict[str, Any]] = []
    ready = threading.Event()
    stop = threading.Event()

    def listen() -> None:
        with app.connection() as connection:
            receiver = app.events.Receiver(connection, handlers={"*": seen.append})
            ready.set()
            with contextlib.suppress(socket.timeout, TimeoutError):
                for _ in receiver.itercapture(limit=None, timeout=1.0, wakeup=False):
                    if stop.is_set():
                        break

    def listening() -> None:
        while not stop.is_set():
            with contextlib.suppress(socket.timeout, TimeoutError):
                listen()

    listener = threading.Thread(target=listening, daemon=True)
    listener.start()
    ready.wait(10)
    try:
        system.start_worker(events=True)
        system.start_scheduler()
        for lsn in (1, 2):
            system.write(1, lsn)
        system.notify(1, 1, 2)
        system.wait_acked(1, 2)

        def kinds() -> set[str]:
            return {e["type"] for e in list(seen) if e.get("name", TASK_NAME) == TASK_NAME}

        wanted = {"task-received", "task-started", "task-succeeded", "worker-heartbeat"}
        wait_for(lambda: wanted <= kinds(), timeout=30, what=f"the events {wanted}")
        received = [e for e in list(seen) if e["type"] == "task-received"]
        assert received[0]["name"] == TASK_NAME
        assert received[0]["args"].startswith("['default', 1, 1, ")
    finally:
        stop.set()
        listener.join(10)
    system.assert_invariants()


def test_without_events_the_worker_sends_none(system: System) -> None:
    app = Celery(broker=system.redis_url)
    seen: list[dict[str, Any]] = []
    system.start_worker()
    system.start_scheduler()
    with app.connection() as connection:
        receiver = app.events.Receiver(connection, handlers={"*": seen.append})
        consumer = receiver.itercapture(limit=None, timeout=1.0, wakeup=False)
        next(consumer)  # bound to the exchange before anything runs
        system.write(1, 1)
        system.notify(1, 1, 1)
        system.wait_acked(1, 1)
        with contextlib.suppress(socket.timeout, TimeoutError, StopIteration):
            deadline = time.monotonic() + 3  # heartbeats would come every 2 s
            while time.monotonic() < deadline:
                next(consumer)
    assert seen == []
