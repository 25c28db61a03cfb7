"""One /metrics endpoint per worker host, summing all its Celery processes.

Worker children count in prometheus-client's multiprocess mode: each writes its samples to
files in ``PROMETHEUS_MULTIPROC_DIR``, which ``archiver worker`` sets and empties before Celery
starts. Only the main process serves, reading every child's files:
- the server starts in the main process (``worker_init``); a child closes the listening socket
  it inherited at fork, so no child ever serves or holds the port;
- a child that exits is marked dead (its live gauges dropped), and so is one that was killed
  without a chance to say so: the main process looks for the files of vanished processes.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from pathlib import Path
from typing import Any

from celery import signals
from prometheus_client import CollectorRegistry, multiprocess, start_http_server

from workers.application import settings

log = logging.getLogger("workers.metrics")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
REAP_INTERVAL_SECONDS = 5.0
_PID_IN_NAME = re.compile(r"_(\d+)\.db$")


class HostMetricsServer:
    def __init__(self, directory: Path, port: int) -> None:
        self.directory = directory
        self.port = port
        self._server: Any = None
        self._stop = threading.Event()
        self._marked: set[int] = set()

    def start(self) -> None:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=str(self.directory))  # type: ignore[no-untyped-call]
        self._server, _thread = start_http_server(self.port, registry=registry)
        threading.Thread(target=self._reap, name="metrics-reaper", daemon=True).start()
        log.info("serving worker metrics on port %d from %s", self.port, self.directory)

    def close_inherited_socket(self) -> None:
        """In a forked child: drop the copy of the listening socket, leave the parent's be."""
        if self._server is not None:
            self._server.socket.close()
            self._server = None

    def mark_dead(self, pid: int) -> None:
        if pid not in self._marked:
            multiprocess.mark_process_dead(pid, path=str(self.directory))  # type: ignore[no-untyped-call]
            self._marked.add(pid)

    def reap_once(self) -> list[int]:
        """Mark every process that left files behind and no longer runs; returns their pids."""
        reaped = []
        for pid in sorted(pids_with_files(self.directory) - self._marked):
            if pid != os.getpid() and not _alive(pid):
                self.mark_dead(pid)
                reaped.append(pid)
        return reaped

    def _reap(self) -> None:
        while not self._stop.wait(REAP_INTERVAL_SECONDS):
            try:
                self.reap_once()
            except OSError:
                log.warning("could not mark dead worker processes", exc_info=True)


def pids_with_files(directory: Path) -> set[int]:
    pids = set()
    for path in directory.glob("*.db"):
        match = _PID_IN_NAME.search(path.name)
        if match:
            pids.add(int(match[1]))
    return pids


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


_host_server: HostMetricsServer | None = None


@signals.worker_init.connect
def _serve_host_metrics(**_: Any) -> None:
    global _host_server  # noqa: PLW0603 - one server per worker host
    directory = os.environ.get(MULTIPROC_ENV)
    if not settings.worker_metrics_port:
        return
    if not directory:
        log.warning(
            "worker metrics are off: start workers with `archiver worker`, which prepares %s",
            MULTIPROC_ENV,
        )
        return
    server = HostMetricsServer(Path(directory), settings.worker_metrics_port)
    try:
        server.start()
    except OSError as exc:
        # Losing metrics is no reason to stop archiving; the log and the scrape show it.
        log.error("cannot serve worker metrics on port %d: %s", settings.worker_metrics_port, exc)
        return
    _host_server = server


@signals.worker_process_init.connect
def _child_started(**_: Any) -> None:
    if _host_server is not None:
        _host_server.close_inherited_socket()


@signals.worker_process_shutdown.connect
def _child_exiting(pid: int | None = None, **_: Any) -> None:
    if os.environ.get(MULTIPROC_ENV):
        multiprocess.mark_process_dead(pid or os.getpid())  # type: ignore[no-untyped-call]
