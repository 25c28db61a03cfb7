"""The worker's Celery app and its per-process resources.

Connections and clients are made lazily in each worker process, after the fork: neither
redis-py pools nor boto3 clients should cross a fork. What they are made from (modules, the
S3 model) is loaded here, before it: once for all the processes.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from types import FrameType

from celery import signals
from celery.platforms import EX_FAILURE

from archiver.config import Settings
from archiver.observability.logs import configure_logging
from archiver.runtime.entry_archiver import EntryArchiver
from archiver.runtime.taskqueue import CeleryDispatcher, make_celery
from archiver.sinks import open_mirrors, open_sink, preload_sink
from archiver.store.client import connect
from archiver.store.keys import RedisKeys
from archiver.store.state_store import RedisStateStore
from archiver.store.streams import Streams

settings = Settings.from_env()
configure_logging(settings.log_level, settings.log_format)
app = make_celery(settings, name="workers")
if settings.sink_url:
    preload_sink(settings.sink_url)

_archivers: dict[int, EntryArchiver] = {}
_archivers_lock = threading.Lock()
log = logging.getLogger(__name__)
# The worker's main process, which its pool processes ask to stop (see ``stop_worker``).
_main_pid: int | None = None
_STOP_SIGNAL = signal.SIGUSR2
# Set in each process of a prefork pool, which runs one attempt at a time in its main thread:
# there an attempt past its time limit can be interrupted, and the process ended.
_pool_process = False


@signals.worker_process_init.connect
def _in_pool_process(**_: object) -> None:
    global _pool_process  # noqa: PLW0603 - set once per pool process, at its start
    _pool_process = True


@signals.worker_init.connect
def _listen_for_stop(**_: object) -> None:
    global _main_pid  # noqa: PLW0603 - set once, in the main process, before the pool forks
    _main_pid = os.getpid()
    signal.signal(_STOP_SIGNAL, _stop_soon)


def _stop_soon(_signum: int, _frame: FrameType | None) -> None:
    # What Celery's own SIGTERM handler does (a warm shutdown: running tasks finish), but
    # with a failing exit status, so that a supervisor sees the worker did not stop by choice.
    from celery.worker import state

    state.should_stop = EX_FAILURE  # type: ignore[assignment]


def stop_worker() -> None:
    """Shut this worker down once its running tasks are done, exiting non-zero. Called from a
    task (in a pool process, or the main one with a solo pool) that found the host unusable."""
    if _main_pid is not None:
        os.kill(_main_pid, _STOP_SIGNAL)


def entry_archiver() -> EntryArchiver:
    """This process's archiver, shared by its threads (with ``-P threads``)."""
    pid = os.getpid()
    archiver = _archivers.get(pid)
    if archiver is not None:
        return archiver
    with _archivers_lock:
        archiver = _archivers.get(pid)
        if archiver is not None:
            return archiver
        _archivers.clear()
        client = connect(settings.redis_url)
        keys = RedisKeys(settings.redis_prefix)
        archiver = EntryArchiver(
            settings,
            RedisStateStore(client, keys, mirror_targets=settings.mirror_targets),
            Streams(client, keys),
            open_sink(settings.require_sink_url(), settings.keyring),
            CeleryDispatcher(app),
            open_mirrors(settings.mirror_urls, settings.keyring),
        )
        if _pool_process:
            archiver.keeper.end_overruns()
        _archivers[pid] = archiver
    return archiver
