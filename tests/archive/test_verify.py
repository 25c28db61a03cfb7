"""``archiver verify`` on filesystem and S3 buckets."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from archiver.cli import main
from archiver.core.compression import encode
from archiver.core.object_names import Compression, PartitionId, archive_key
from archiver.core.partition import Gap
from archiver.sinks import open_sink
from archiver.sinks.s3 import S3Sink
from archiver.store.state_store import RedisStateStore
from tests.archive_factory import archive_range, new_bucket
from tests.store_calls import apply_notification
from tests.support import S3Endpoint


def _verify(sink_url: str, *args: str) -> tuple[int, dict[str, Any]]:
    result = CliRunner().invoke(
        main, ["verify", *args, "--json"], env={"ARCHIVER_SINK_URL": sink_url}
    )
    assert result.exit_code in (0, 1), result.output
    report: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return result.exit_code, report


def _partition(report: dict[str, Any], partition: int) -> dict[str, Any]:
    found: list[dict[str, Any]] = [p for p in report["partitions"] if p["partition"] == partition]
    assert len(found) == 1
    return found[0]


def test_a_sound_archive_verifies_clean_across_partition_boundaries(tmp_path: Path) -> None:
    bucket = new_bucket(tmp_path / "bucket")
    archive_range(bucket, tmp_path / "wal", 1, range(1, 6))
    archive_range(bucket, tmp_path / "wal", 10, range(6, 9))  # 10 starts where 1 ends: no gap
    archive_range(bucket, tmp_path / "wal", 11, range(1, 3), compression=Compression.ZSTD)
    status, report = _verify(bucket.root.as_uri())
    assert status == 0
    assert report["problems"] == 0
    assert _partition(report, 1)["ranges"] == [{"first": 1, "last": 5}]
    assert _partition(report, 10)["ranges"] == [{"first": 6, "last": 8}]
    assert _partition(report, 10)["gaps"] == []
    assert _partition(report, 11)["archives"] == 2
    text = CliRunner().invoke(main, ["verify"], env={"ARCHIVER_SINK_URL": bucket.root.as_uri()})
    assert "3 partitions verified, 0 problems" in text.output


def test_every_kind_of_problem_is_reported_and_fails_the_run(tmp_path: Path) -> None:
    bucket = new_bucket(tmp_path / "bucket")
    archive_range(bucket, tmp_path / "wal", 1, [1, 2, 3, 5])  # 4 is missing
    corrupt = bucket.root / archive_key("default", 1, 2)
    corrupt.write_bytes(corrupt.read_bytes()[:-1024] + b"\x01" * 1024)
    (bucket.root / "default" / "1" / "notes.txt").write_bytes(b"?")
    (bucket.root / "default" / "1" / ".tmp-0000000000006.tar.abc").write_bytes(b"")
    (bucket.root / "default" / "junk").mkdir()
    # LSN 3 stored a second time, compressed: the archiver never does this itself.
    plain = bucket.read(archive_key("default", 1, 3))
    bucket.write(
        archive_key("default", 1, 3, Compression.ZSTD),
        lambda: encode(iter([plain]), Compression.ZSTD),
    )
    status, report = _verify(bucket.root.as_uri())
    assert status == 1
    p = _partition(report, 1)
    assert p["gaps"] == [{"expected": 4, "actual": 5, "recorded": None}]
    assert [b["key"] for b in p["bad"]] == [archive_key("default", 1, 2)]
    assert "does not match recorded" in p["bad"][0]["problem"]
    assert p["strays"] == ["default/1/notes.txt"]
    assert p["leftovers"] == ["default/1/.tmp-0000000000006.tar.abc"]
    assert p["duplicates"] == [3]
    assert report["stray_directories"] == ["default/junk/"]
    assert report["problems"] == 6
    # One partition, gaps not counted: no stray directory, no gap.
    status, narrower = _verify(bucket.root.as_uri(), "default", "1", "--ignore-gaps")
    assert narrower["problems"] == 4


def test_a_structurally_bad_tar_with_a_good_checksum_is_flagged(tmp_path: Path) -> None:
    bucket = new_bucket(tmp_path / "bucket")
    bucket.write(archive_key("default", 1, 1), lambda: iter([b"not a tar at all" * 64]))
    status, report = _verify(bucket.root.as_uri(), "default", "1")
    assert status == 1
    assert "bad tar" in _partition(report, 1)["bad"][0]["problem"]


def test_s3_leftover_uploads_and_more_than_1000_objects(
    s3_endpoint: S3Endpoint, s3_bucket: str, tmp_path: Path
) -> None:
    sink = open_sink(s3_endpoint.sink_url(s3_bucket))
    assert isinstance(sink, S3Sink)
    archive_range(sink, tmp_path / "wal", 1, range(1, 1106), size=10)
    sink.client.create_multipart_upload(Bucket=s3_bucket, Key=archive_key("default", 1, 1106))
    status, report = _verify(s3_endpoint.sink_url(s3_bucket), "--parallel", "16")
    assert status == 1
    p = _partition(report, 1)
    assert p["archives"] == 1105
    assert p["ranges"] == [{"first": 1, "last": 1105}]
    assert p["bad"] == []
    assert len(p["leftovers"]) == 1
    assert "incomplete multipart upload" in p["leftovers"][0]


def test_with_state_a_recorded_gap_is_told_from_lost_objects(
    tmp_path: Path, redis_url: str, store: RedisStateStore
) -> None:
    bucket = new_bucket(tmp_path / "bucket")
    # Partition 1: the producer lost 3-4 before they were archived (a recorded gap); then 7
    # went missing from the archive, which no gap explains.
    archive_range(bucket, tmp_path / "wal", 1, [1, 2, 5, 6, 8])
    claim = apply_notification(store, "default", 1, 1, 2, 60).claim
    while claim is not None:
        claim = store.transitions.commit_success(
            PartitionId("default", 1), claim.lsn, claim.token, 60
        ).next_claim
    assert apply_notification(store, "default", 1, 5, 8, 60).gap == Gap(3, 5)
    env = {"ARCHIVER_SINK_URL": bucket.root.as_uri(), "ARCHIVER_REDIS_URL": redis_url}
    result = CliRunner().invoke(main, ["verify", "--ignore-gaps", "--json"], env=env)
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    gaps = _partition(report, 1)["gaps"]
    assert gaps == [
        {"expected": 3, "actual": 5, "recorded": True},
        {"expected": 7, "actual": 8, "recorded": False},
    ]
    assert report["problems"] == 1
    text = CliRunner().invoke(main, ["verify", "--ignore-gaps"], env=env)
    assert "LOST default/1 LSN 7 to 7: not in the archive, and no gap is recorded" in text.output
    # Without state nothing can be told apart, and --ignore-gaps ignores both, as it says.
    env.pop("ARCHIVER_REDIS_URL")
    status, blind = _verify(bucket.root.as_uri(), "--ignore-gaps")
    assert (status, blind["problems"]) == (0, 0)
    assert _partition(blind, 1)["gaps"][1]["recorded"] is None
