"""The archive task: a thin Celery shell around ``archiver.runtime.entry_archiver``."""

from __future__ import annotations

import logging

import redis
from celery import Task

from archiver.core.lsn import check_lsn
from archiver.core.object_names import check_partition, check_storage
from archiver.core.partition import Claim
from archiver.errors import InvalidLSN, InvalidName
from archiver.observability import metrics
from archiver.observability.logs import entry_fields
from archiver.runtime.entry_archiver import AttemptOutcome
from archiver.runtime.taskqueue import TASK_NAME
from workers.application import app, entry_archiver, settings, stop_worker

log = logging.getLogger(__name__)


@app.task(name=TASK_NAME, bind=True, max_retries=None)
def archive_entry(self: Task, storage: str, partition: int, lsn: int, token: int) -> str:  # type: ignore[type-arg]
    try:
        check_storage(storage)
        check_partition(partition)
        check_lsn(lsn)
        if isinstance(token, bool) or not isinstance(token, int) or token < 1:
            raise InvalidName(f"fencing token must be a positive integer, got {token!r}")
    except (InvalidName, InvalidLSN) as exc:
        # Nothing to retry: a malformed task can never become valid. The partition's grant
        # expires and the scheduler dispatches a correct task.
        log.error("rejected archive task with invalid arguments: %s", exc)
        return "rejected"
    try:
        with metrics.TASKS_RUNNING.track_inprogress():
            attempt = entry_archiver().run_chain(storage, partition, lsn, token)
    except redis.RedisError as exc:
        log.warning(
            "state store unavailable; retrying",
            extra=entry_fields(storage, partition, lsn, error=str(exc)),
        )
        raise self.retry(countdown=settings.retry_min_seconds) from exc
    if attempt.sink_lost is not None:
        stop_worker()
    if attempt.outcome is AttemptOutcome.RETRY:
        # The grant that failed, which after a chain is not the one this task was sent with.
        claim = attempt.claim or Claim(lsn, token)
        raise self.retry(args=(storage, partition, claim.lsn, claim.token), countdown=attempt.delay)
    return attempt.outcome.value
