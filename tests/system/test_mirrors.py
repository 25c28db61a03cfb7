"""A second destination end to end: real worker and scheduler processes, a real Redis, and two
buckets on moto's S3 server, the mirror's behind a proxy that can cut it off (connections
never accepted: a mirror that is down, or unreachable)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from archiver.cli import main
from archiver.core.lsn import format_lsn
from archiver.sinks import open_sink
from tests.faults import FaultProxy
from tests.support import S3Endpoint, System, wait_for


def archiver(system: System, *args: str) -> Result:
    return CliRunner().invoke(main, list(args), env=system.env())


def mirrors(system: System) -> dict[str, Any]:
    result = archiver(system, "inspect", "mirrors", "--all", "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)["far"]  # type: ignore[no-any-return]


def mirror_bucket(s3_endpoint: S3Endpoint, name: str) -> str:
    s3_endpoint.client().create_bucket(Bucket=name)
    return name


@pytest.fixture
def mirrored(
    redis_url: str, tmp_path: Path, s3_endpoint: S3Endpoint, s3_bucket: str, proxy: FaultProxy
) -> Iterator[System]:
    bucket = mirror_bucket(s3_endpoint, s3_bucket + "-far")
    mirror_url = (
        f"s3://{bucket}/wal?endpoint_url={proxy.url}&region=us-east-1"
        "&connect_timeout=1&read_timeout=5&max_attempts=1"
    )
    system = System(
        redis_url=redis_url,
        tmp=tmp_path,
        sink_url=s3_endpoint.sink_url(s3_bucket, "wal"),
        env_overrides={"ARCHIVER_MIRROR_URLS": f"far={mirror_url}"},
    )
    system.mirror = open_sink(mirror_url)  # type: ignore[attr-defined]
    yield system
    system.close()


def same_objects(system: System, lsns: range) -> bool:
    mirror = system.mirror  # type: ignore[attr-defined]
    for lsn in lsns:
        key = f"{system.storage}/1/{format_lsn(lsn)}.tar"
        if not mirror.exists(key):
            return False
        assert mirror.read(key) == system.sink.read(key)
        assert mirror.metadata(key) == system.sink.metadata(key)
    return True


def test_a_mirror_that_is_down_falls_behind_without_holding_acks_then_catches_up(
    mirrored: System, proxy: FaultProxy, tmp_path: Path
) -> None:
    system = mirrored
    proxy.stop_accepting()
    system.start()
    for lsn in range(1, 6):
        system.write(1, lsn)
    system.notify(1, 1, 5)
    system.wait_acked(1, 5)  # the mirror being down holds nothing back
    behind = wait_for(lambda: (m := mirrors(system))["failing"] and m, what="copies to fail")
    assert behind["lag_entries"] == 5
    (row,) = behind["detail"]
    assert (row["through"], row["lag_entries"]) == (None, 5)
    assert row["last_error"]
    proxy.start_accepting()
    wait_for(lambda: mirrors(system)["lag_entries"] == 0, timeout=60, what="the mirror to catch up")
    assert same_objects(system, range(1, 6))
    verified = archiver(system, "verify", "--sink", "far", "--json")
    assert verified.exit_code == 0, verified.output
    restored = archiver(
        system, "restore", "default", "1", "--sink", "far", "--dest", str(tmp_path / "r")
    )
    assert restored.exit_code == 0, restored.output
    for (_partition, lsn), files in system.written.items():
        for path, content in files.items():
            assert (tmp_path / "r" / format_lsn(lsn) / path).read_bytes() == content
    unknown = archiver(system, "verify", "--sink", "nowhere")
    assert unknown.exit_code == 2
    assert "known: primary, far" in unknown.output
    system.assert_invariants()


def test_ack_policy_all_holds_acks_until_the_mirror_has_the_entry(
    mirrored: System, proxy: FaultProxy
) -> None:
    system = mirrored
    system.env_overrides["ARCHIVER_ACK_POLICY"] = "all"
    proxy.stop_accepting()
    system.start()
    for lsn in range(1, 4):
        system.write(1, lsn)
    system.notify(1, 1, 3)
    system.wait_attempts(1, 2)
    assert system.acks(1) == []  # held back while the mirror cannot take the entry
    assert system.archived(1) == [1]  # the primary has it
    proxy.start_accepting()
    system.wait_acked(1, 3, timeout=60)
    assert same_objects(system, range(1, 4))
    # The copier moved the mirror's progress over the first entries, and published them.
    assert mirrors(system)["detail"][0]["through"] == 3
    system.assert_invariants()
