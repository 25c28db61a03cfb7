"""The Celery task's boundary, with a real worker process."""

from __future__ import annotations

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
