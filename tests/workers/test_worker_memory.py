"""What a worker host's main process keeps per task, with a real prefork worker."""

from __future__ import annotations

import sys

from celery import Celery

from tests.support import System, wait_for
from tests.workers.timer_probe import COUNTER

TASKS = 600


def test_the_main_process_keeps_nothing_per_finished_task(system: System) -> None:
    # Celery's time limits leave an entry in the main process's timer for every task until
    # its limit would have fired (half an hour by default), ended or not: memory that grows
    # with the work done. The archiver sets none, so finished tasks leave nothing behind.
    probe = system.tmp / "timer-entries"
    command = [
        sys.executable, "-m", "celery", "-A", "tests.workers.timer_probe", "worker",
        "-Q", "archiver.probe", "-c", "2", "-P", "prefork",
        "--without-gossip", "--without-mingle", "--without-heartbeat",
    ]  # fmt: skip
    system._spawn("probe-worker", command, env={"TIMER_PROBE_FILE": str(probe)})
    wait_for(probe.exists, timeout=60, what="the worker to start")
    before = int(probe.read_text())
    app = Celery(broker=system.redis_url)
    with app.producer_or_acquire() as producer:
        for _ in range(TASKS):
            app.send_task("timer_probe.noop", queue="archiver.probe", producer=producer)
    wait_for(
        lambda: int(system.client.get(COUNTER) or 0) >= TASKS,
        timeout=120,
        what=f"{TASKS} tasks to run",
    )
    # Held per task, this would be at least TASKS entries.
    assert int(probe.read_text()) <= before + 20
