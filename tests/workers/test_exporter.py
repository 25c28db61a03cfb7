"""A worker host serves one /metrics endpoint that sums all its Celery processes.

Real worker processes (prefork), a real Redis, a filesystem bucket; scraped over HTTP.
"""

from __future__ import annotations

import signal
import urllib.request
from pathlib import Path

import psutil
from prometheus_client.parser import text_string_to_metric_families

from archiver.dev.local_redis import free_port
from tests.support import System, wait_for


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def listening_ports(process: psutil.Process) -> set[int]:
    return {
        c.laddr.port for c in process.net_connections(kind="tcp") if c.status == psutil.CONN_LISTEN
    }


def test_one_endpoint_per_host_sums_every_worker_process(system: System, tmp_path: Path) -> None:
    port = free_port()
    metrics_dir = tmp_path / "metrics"
    node = "metrics-test@host"
    host_dir = metrics_dir / node
    host_dir.mkdir(parents=True)
    stale = host_dir / "counter_999999.db"
    stale.write_bytes(b"left over from an earlier run")
    env = {"ARCHIVER_WORKER_METRICS_PORT": str(port), "ARCHIVER_METRICS_DIR": str(metrics_dir)}
    worker = system.start_worker(concurrency=2, env=env, node_name=node)
    system.start_scheduler()
    # Cleaned at start: an earlier run's samples would be summed with this one's.
    assert not stale.exists()

    for partition in (1, 2, 3):
        for lsn in (1, 2):
            system.write(partition, lsn)
        system.notify(partition, 1, 2)
    for partition in (1, 2, 3):
        system.wait_acked(partition, 2)

    def archived() -> float:
        return value(
            scrape(port), "archiver_entries_archived_total", storage="default", status="success"
        )

    wait_for(lambda: archived() == 6, timeout=30, what="6 archived entries on the endpoint")
    samples = scrape(port)
    assert value(samples, "archiver_archive_duration_seconds_count", storage="default") == 6
    assert value(samples, "archiver_archived_bytes_total", storage="default") > 0
    assert value(samples, "archiver_acknowledgements_total") == 6
    assert value(samples, "archiver_tasks_running") == 0

    # Only the main process listens; the children closed the socket they inherited.
    main = psutil.Process(worker.popen.pid)
    children = main.children()
    assert len(children) == 2
    assert port in listening_ports(main)
    for child in children:
        assert port not in listening_ports(child)

    # A child killed without warning is marked dead: its live gauge goes, its counts stay.
    child_pids = {c.pid for c in children}
    live_files = [
        path
        for path in sorted(host_dir.glob("gauge_livesum_*.db"))
        if int(path.stem.rsplit("_", 1)[1]) in child_pids
    ]
    assert live_files, list(host_dir.iterdir())
    victim = int(live_files[0].stem.rsplit("_", 1)[1])
    psutil.Process(victim).send_signal(signal.SIGKILL)
    wait_for(lambda: not live_files[0].exists(), timeout=20, what="the dead child to be marked")
    assert archived() == 6
    # Celery replaced the child; the host goes on archiving and counting.
    system.write(1, 3)
    system.notify(1, 1, 3)
    system.wait_acked(1, 3)
    wait_for(lambda: archived() == 7, timeout=30, what="the 7th archived entry on the endpoint")


def test_a_task_chains_entries_at_two_redis_round_trips_each(
    system: System, tmp_path: Path
) -> None:
    port = free_port()
    env = {
        "ARCHIVER_WORKER_METRICS_PORT": str(port),
        "ARCHIVER_METRICS_DIR": str(tmp_path / "metrics"),
        "ARCHIVER_CHAIN_ENTRIES": "10",
    }
    system.start_worker(concurrency=1, env=env)
    system.start_scheduler()
    wait_for(lambda: scrape(port), what="the worker's metrics endpoint")
    before = value(scrape(port), "archiver_redis_round_trips_total")
    entries = 30
    for lsn in range(1, entries + 1):
        system.write(1, lsn)
    system.notify(1, 1, entries)
    system.wait_acked(1, entries)
    assert system.acks(1) == list(range(1, entries + 1))
    wait_for(
        lambda: (
            value(
                scrape(port), "archiver_entries_archived_total", storage="default", status="success"
            )
            == entries
        ),
        what="every entry counted",
    )
    per_entry = (value(scrape(port), "archiver_redis_round_trips_total") - before) / entries
    # Two per chained entry (commit and claim; acknowledge and start the next), a few more
    # where a chain ends and its last grant goes back to the queue.
    assert per_entry <= 3, per_entry
    # Chains of 10: three tasks ran 30 entries (plus no retries).
    received = [
        line
        for line in system.logs().splitlines()
        if "Task archiver.archive_entry" in line and "received" in line
    ]
    assert len(received) == 3, received
