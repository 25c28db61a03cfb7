"""The worker's Celery app and its per-process resources.

Connections and clients are made lazily in each worker process, after the fork: neither
redis-py pools nor boto3 clients should cross a fork. What they are made from (modules, the
S3 model) is loaded here, before it: once for all the processes.
"""

from __future__ import annotations

import logging
import os

from archiver.config import Settings
from archiver.logging_setup import configure_logging
from archiver.redis_client import connect
from archiver.redis_keys import RedisKeys
from archiver.sinks import open_sink, preload_sink
from archiver.state_store import RedisStateStore
from archiver.streams import Streams
from archiver.taskqueue import CeleryDispatcher, make_celery
from archiver.worker import EntryArchiver

settings = Settings.from_env()
configure_logging(log_format=settings.log_format)
app = make_celery(settings, name="workers")
if settings.sink_url:
    preload_sink(settings.sink_url)

_archivers: dict[int, EntryArchiver] = {}
log = logging.getLogger(__name__)


def entry_archiver() -> EntryArchiver:
    pid = os.getpid()
    archiver = _archivers.get(pid)
    if archiver is None:
        _archivers.clear()
        client = connect(settings.redis_url)
        keys = RedisKeys(settings.redis_prefix)
        archiver = EntryArchiver(
            settings,
            RedisStateStore(client, keys),
            Streams(client, keys),
            open_sink(settings.require_sink_url()),
            CeleryDispatcher(app),
        )
        _archivers[pid] = archiver
    return archiver
