"""A worker app for ``test_worker_memory``: the archiver's worker app with a no-op task, and a
thread in the main process that writes how many entries its event loop's timer holds."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from celery import signals
from kombu.asynchronous import get_event_loop

from archiver.store.client import connect
from workers import app
from workers.application import settings

COUNTER = "timer-probe:done"


@app.task(name="timer_probe.noop")
def noop() -> None:
    connect(settings.redis_url).incr(COUNTER)


@signals.worker_ready.connect
def _report_timer(**_: object) -> None:
    out = Path(os.environ["TIMER_PROBE_FILE"])

    def report() -> None:
        while True:
            hub = get_event_loop()
            if hub is not None:
                out.with_suffix(".tmp").write_text(str(len(hub.timer)))
                out.with_suffix(".tmp").replace(out)
            time.sleep(0.1)

    threading.Thread(target=report, name="timer-probe", daemon=True).start()
