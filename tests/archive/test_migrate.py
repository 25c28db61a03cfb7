"""``archiver migrate-sidecars``: a filesystem bucket of an earlier release (``<name>.sha256``
checksum files) turned into fileblob's layout, which the Go original can list."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from archiver.cli import main
from archiver.core.object_names import archive_key
from archiver.sinks import FilesystemSink
from tests.archive_factory import archive_range, new_bucket
from tests.original_bucket import OriginalListingFailed, listed_by_original
from tests.support import S3Endpoint


def _migrate(url: str, *args: str) -> Result:
    return CliRunner().invoke(main, ["migrate-sidecars", *args], env={"ARCHIVER_SINK_URL": url})


def _as_earlier_release(bucket: FilesystemSink, key: str) -> Path:
    """Replace an object's attributes with the checksum file an earlier release wrote."""
    path = bucket.root / key
    (bucket.root / (key + ".attrs")).unlink()
    checksum = path.with_name(path.name + ".sha256")
    checksum.write_text(hashlib.sha256(path.read_bytes()).hexdigest() + "\n")
    return checksum


def _files(bucket: FilesystemSink) -> dict[str, bytes]:
    return {
        str(p.relative_to(bucket.root)): p.read_bytes()
        for p in sorted(bucket.root.rglob("*"))
        if p.is_file()
    }


def test_a_bucket_of_checksum_files_is_migrated_after_a_dry_run(tmp_path: Path) -> None:
    bucket = new_bucket(tmp_path / "bucket")
    archive_range(bucket, tmp_path / "wal", 1, range(1, 6))
    for lsn in range(1, 5):
        _as_earlier_release(bucket, archive_key("default", 1, lsn))
    # One whose object was pruned (a crash between the two deletes), one whose object no
    # longer matches it.
    (bucket.root / archive_key("default", 1, 4)).unlink()
    mismatched = bucket.root / (archive_key("default", 1, 3) + ".sha256")
    mismatched.write_text("0" * 64 + "\n")
    with pytest.raises(OriginalListingFailed):
        listed_by_original(bucket.root, "default", 1)
    before = _files(bucket)

    dry = _migrate(bucket.root.as_uri())
    assert dry.exit_code == 1, dry.output  # one is left as it is
    assert "would migrate 2 and remove 1; 1 would be left" in dry.output
    assert f"LEFT {archive_key('default', 1, 3)}.sha256: SHA-256" in dry.output
    assert _files(bucket) == before

    applied = CliRunner().invoke(
        main,
        ["migrate-sidecars", "--apply", "--json"],
        env={"ARCHIVER_SINK_URL": bucket.root.as_uri()},
    )
    assert applied.exit_code == 1, applied.output
    summary: dict[str, Any] = json.loads(applied.stdout)
    assert (summary["migrated"], summary["removed"], summary["left"]) == (2, 1, 1)
    assert not summary["dry_run"]
    names = sorted(p.name for p in (bucket.root / "default" / "1").iterdir())
    assert names == [
        "0000000000001.tar",
        "0000000000001.tar.attrs",
        "0000000000002.tar",
        "0000000000002.tar.attrs",
        "0000000000003.tar",
        "0000000000003.tar.sha256",  # left for an operator
        "0000000000005.tar",
        "0000000000005.tar.attrs",
    ]
    for lsn in (1, 2):
        recorded = bucket.recorded(archive_key("default", 1, lsn))
        data = (bucket.root / archive_key("default", 1, lsn)).read_bytes()
        assert recorded.sha256 == hashlib.sha256(data).hexdigest()
        assert recorded.md5 == hashlib.md5(data).hexdigest()

    # The operator looks at LSN 3, finds the object sound, and removes the wrong file: the
    # original lists the bucket, and a second run has nothing to do.
    mismatched.unlink()
    assert listed_by_original(bucket.root, "default", 1) == [1, 2, 3, 5]
    again = _migrate(bucket.root.as_uri(), "--apply")
    assert again.exit_code == 0, again.output
    assert "0 migrated, 0 removed, 0 left" in again.output


def test_an_s3_bucket_has_nothing_to_migrate(s3_endpoint: S3Endpoint, s3_bucket: str) -> None:
    result = _migrate(s3_endpoint.sink_url(s3_bucket))
    assert result.exit_code == 2
    assert "filesystem buckets" in result.output


def test_one_file_that_cannot_be_migrated_does_not_end_the_run(tmp_path: Path) -> None:
    bucket = new_bucket(tmp_path / "bucket")
    archive_range(bucket, tmp_path / "wal", 1, range(1, 4))
    for lsn in range(1, 4):
        _as_earlier_release(bucket, archive_key("default", 1, lsn))
    # An empty attributes file beside LSN 1's checksum file; a name that is no object's.
    (bucket.root / (archive_key("default", 1, 1) + ".attrs")).write_bytes(b"")
    odd = bucket.root / "default" / "1" / "notes.attrs.sha256"
    odd.write_text("0" * 64)
    applied = _migrate(bucket.root.as_uri(), "--apply", "--json")
    assert applied.exit_code == 1, applied.output  # the odd one is left
    summary: dict[str, Any] = json.loads(applied.stdout)
    outcomes = {f["key"].rsplit("/", 1)[1]: f["outcome"] for f in summary["files"]}
    assert outcomes == {
        "0000000000001.tar": "migrated",  # the empty attributes written again
        "0000000000002.tar": "migrated",
        "0000000000003.tar": "migrated",
        "notes.attrs": "left",
    }
    odd.unlink()
    assert listed_by_original(bucket.root, "default", 1) == [1, 2, 3]
