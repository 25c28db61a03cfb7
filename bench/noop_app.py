"""The engine's ceiling for scenario 1: a Celery app with the archiver's own settings whose task
does nothing but count itself done (one INCR, so that the benchmark sees when all have run)."""

from __future__ import annotations

import redis

from archiver.config import Settings
from archiver.runtime.taskqueue import make_celery
from archiver.store.client import connect

QUEUE = "bench.noop"
DONE_KEY = "bench:noop:done"

settings = Settings.from_env()
app = make_celery(settings, name="bench-noop")
_client: list[redis.Redis] = []


@app.task(name="bench.noop")
def noop() -> None:
    if not _client:
        _client.append(connect(settings.redis_url))
    _client[0].incr(DONE_KEY)
