"""A real Prometheus server scrapes a running scheduler and a worker host while the demo
workload is archived; its HTTP API must show the counters and gauges moving as they should.

Prometheus is Debian's `prometheus` package (``scripts/test`` installs it).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from archiver.dev.local_redis import free_port
from tests.support import REPO, System, missing_server, wait_for

PARTITIONS = 4
ENTRIES = 5


class Prometheus:
    def __init__(self, tmp: Path, targets: dict[str, int]) -> None:
        binary = shutil.which("prometheus")
        if binary is None:
            missing_server("prometheus is not installed (Debian package `prometheus`)")
        self.port = free_port()
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(REPO / "ops" / "prometheus" / "alerts.yml")],
            "scrape_configs": [
                {"job_name": job, "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}
                for job, port in targets.items()
            ],
        }
        config_file = tmp / "prometheus.yml"
        config_file.write_text(json.dumps(config))  # JSON is YAML
        self.log = tmp / "prometheus.log"
        with open(self.log, "wb") as out:
            self.process = subprocess.Popen(
                [
                    binary,
                    f"--config.file={config_file}",
                    f"--storage.tsdb.path={tmp / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        wait_for(self._ready, timeout=60, what="Prometheus to start")

    def _ready(self) -> bool:
        assert self.process.poll() is None, self.log.read_text()
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=2) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def query(self, expression: str) -> float | None:
        """The value of an instant query that returns one series, or None when it has none."""
        url = f"http://127.0.0.1:{self.port}/api/v1/query?" + urllib.parse.urlencode(
            {"query": expression}
        )
        with urllib.request.urlopen(url, timeout=5) as response:
            body = json.loads(response.read())
        assert body["status"] == "success", body
        result = body["data"]["result"]
        assert len(result) <= 1, (expression, result)
        return float(result[0]["value"][1]) if result else None

    def wait_value(self, expression: str, expected: float, timeout: float = 60) -> None:
        seen: list[float | None] = []

        def matches() -> bool:
            seen.append(self.query(expression))
            return seen[-1] == expected

        try:
            wait_for(matches, timeout=timeout, interval=0.5, what=f"{expression} == {expected}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; last value {seen[-1:]}") from None

    def rules_loaded(self) -> int:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/api/v1/rules", timeout=5) as r:
            groups = json.loads(r.read())["data"]["groups"]
        return sum(len(group["rules"]) for group in groups)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


@pytest.fixture
def ports() -> dict[str, int]:
    return {"archiver-scheduler": free_port(), "archiver-workers": free_port()}


@pytest.fixture
def prometheus(tmp_path: Path, ports: dict[str, int]) -> Iterator[Prometheus]:
    server = Prometheus(tmp_path, ports)
    yield server
    server.stop()


def test_prometheus_sees_the_demo_workload_archived(
    system: System, prometheus: Prometheus, ports: dict[str, int]
) -> None:
    system.env_overrides.update(
        {
            "ARCHIVER_METRICS_PORT": str(ports["archiver-scheduler"]),
            "ARCHIVER_WORKER_METRICS_PORT": str(ports["archiver-workers"]),
            "ARCHIVER_METRICS_DIR": str(system.tmp / "metrics"),
            "ARCHIVER_STATE_METRICS_INTERVAL_SECONDS": "0.5",
        }
    )
    system.start_scheduler()
    prometheus.wait_value('up{job="archiver-scheduler"}', 1)
    prometheus.wait_value("archiver_scheduler_leader", 1)
    # The project's alert rules load into a real server.
    assert prometheus.rules_loaded() >= 9

    # The producer writes before any worker runs: Prometheus sees the backlog waiting.
    for partition in range(1, PARTITIONS + 1):
        for lsn in range(1, ENTRIES + 1):
            system.write(partition, lsn)
        system.notify(partition, 1, ENTRIES)
    total = PARTITIONS * ENTRIES
    prometheus.wait_value('archiver_backlog_entries{storage="default"}', total)
    prometheus.wait_value('archiver_partitions{storage="default",state="in-flight"}', PARTITIONS)
    prometheus.wait_value('archiver_notifications_total{result="applied"}', PARTITIONS)
    wait_for(
        lambda: (
            (
                prometheus.query('archiver_oldest_unarchived_entry_age_seconds{storage="default"}')
                or 0
            )
            > 0
        ),
        timeout=30,
        what="the oldest waiting entry to age",
    )

    # A worker host starts: everything is archived, and every figure follows.
    system.start_worker(concurrency=2)
    for partition in range(1, PARTITIONS + 1):
        system.wait_acked(partition, ENTRIES)
    prometheus.wait_value('up{job="archiver-workers"}', 1)
    prometheus.wait_value('sum(archiver_entries_archived_total{status="success"})', total)
    prometheus.wait_value("sum(archiver_archive_duration_seconds_count)", total)
    prometheus.wait_value('sum(archiver_acknowledgements_total{job="archiver-workers"})', total)
    prometheus.wait_value('archiver_backlog_entries{storage="default"}', 0)
    prometheus.wait_value('archiver_oldest_unarchived_entry_age_seconds{storage="default"}', 0)
    prometheus.wait_value('archiver_partitions{storage="default",state="idle"}', PARTITIONS)
    prometheus.wait_value('archiver_gaps_total{storage="default"}', 0)
    prometheus.wait_value("archiver_fleet_backoff_seconds", 0)
    prometheus.wait_value('sum(archiver_entries_archived_total{status="fail"}) or vector(0)', 0)
    bytes_archived = prometheus.query("sum(archiver_archived_bytes_total)")
    assert bytes_archived is not None
    assert bytes_archived > 0
    # Nothing is firing after a clean run (pending alerts are not firing ones).
    assert prometheus.query('count(ALERTS{alertstate="firing"})') is None
