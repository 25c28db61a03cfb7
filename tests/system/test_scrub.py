"""The continuous scrubber in the leading scheduler: real scheduler and worker processes, a
real Redis and moto's S3 server; an object corrupted and another deleted behind the archiver's
back are found, recorded, counted, and left as they are."""

from __future__ import annotations

import json
import urllib.request
from typing import Any

from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families

from archiver.cli import main
from archiver.core.object_names import archive_key
from archiver.dev.local_redis import free_port
from tests.support import S3Endpoint, System, wait_for


def scrub_report(system: System) -> dict[str, Any]:
    result = CliRunner().invoke(main, ["inspect", "scrub", "--json"], env=system.env())
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def scraped(port: int) -> dict[str, float]:
    """The scheduler's samples by name and labels, as Prometheus would read them."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}"] = sample.value
    return samples


def test_the_scheduler_scrubber_finds_a_corrupted_and_a_deleted_object(
    s3_system: System, s3_endpoint: S3Endpoint, s3_bucket: str
) -> None:
    system = s3_system
    port = free_port()
    system.start_worker()
    for lsn in range(1, 7):
        system.write(1, lsn)
    system.notify(1, 1, 6)
    scheduler_env = {
        "ARCHIVER_SCRUB_BYTES_PER_SECOND": "10000000",
        "ARCHIVER_SCRUB_REQUESTS_PER_SECOND": "200",
        "ARCHIVER_METRICS_PORT": str(port),
    }
    system.start_scheduler(scheduler_env)
    system.wait_acked(1, 6)
    wait_for(lambda: scrub_report(system)["cycle"] >= 2, timeout=60, what="a clean scrub cycle")
    assert scrub_report(system)["findings"] == []

    s3 = s3_endpoint.client()
    corrupted = "wal/" + archive_key(system.storage, 1, 2)
    original = s3.get_object(Bucket=s3_bucket, Key=corrupted)
    damaged = bytearray(original["Body"].read())
    damaged[600] ^= 0xFF
    # Bit rot: other bytes under the checksum recorded when the object was written.
    s3.put_object(
        Bucket=s3_bucket, Key=corrupted, Body=bytes(damaged), Metadata=original["Metadata"]
    )
    lost = "wal/" + archive_key(system.storage, 1, 4)
    s3.delete_object(Bucket=s3_bucket, Key=lost)

    def both_found() -> list[dict[str, Any]] | None:
        found = scrub_report(system)["findings"]
        return found if len(found) == 2 else None

    found = wait_for(both_found, timeout=60, what="the scrubber to find both")
    assert {(f["kind"], f["subject"]) for f in found} == {
        ("corrupt", corrupted.removeprefix("wal/")),
        ("missing", f"{system.storage}/1 LSN 4-4"),
    }

    def counted() -> dict[str, float] | None:
        samples = scraped(port)
        missing = samples.get("archiver_scrub_findings_total{kind=missing,sink=primary}")
        return samples if missing else None

    metrics = wait_for(counted, what="the findings in the scheduler's metrics")
    assert metrics["archiver_scrub_findings_total{kind=corrupt,sink=primary}"] >= 1
    assert metrics["archiver_scrub_findings_total{kind=unopened,sink=primary}"] == 0
    assert metrics["archiver_scrubbed_objects_total{sink=primary}"] >= 6  # a whole cycle
    assert metrics["archiver_scrub_oldest_unscrubbed_age_seconds{sink=primary}"] < 60
    # Nothing was repaired, replaced or removed.
    assert s3.get_object(Bucket=s3_bucket, Key=corrupted)["Body"].read() == bytes(damaged)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=s3_bucket, Prefix="wal/")["Contents"]]
    assert lost not in keys
    assert len(keys) == 5
    assert "scrub found a problem" in system.logs()
