"""``archiver prune``: dry run by default, batches of 1000, never the newest archive."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from archiver.archive.catalog import partition_archives
from archiver.archive.prune import plan_prune, prune
from archiver.cli import main
from archiver.core.lsn import format_lsn
from archiver.core.object_names import archive_key
from archiver.errors import SinkError
from archiver.sinks import open_sink
from tests.archive_factory import archive_range, new_bucket
from tests.support import S3Endpoint


def test_dry_run_then_delete_below_an_lsn(tmp_path: Path) -> None:
    bucket = new_bucket(tmp_path / "bucket")
    archive_range(bucket, tmp_path / "wal", 1, range(1, 11))
    archive_range(bucket, tmp_path / "wal", 10, range(1, 4))
    env = {"ARCHIVER_SINK_URL": bucket.root.as_uri()}
    dry = CliRunner().invoke(main, ["prune", "default", "1", "--before", "6"], env=env)
    assert dry.exit_code == 0, dry.output
    assert "would delete 5 archives, LSN 1 to 5" in dry.output
    assert len(partition_archives(bucket, "default", 1)) == 10
    done = CliRunner().invoke(
        main, ["prune", "default", "1", "--before", "6", "--yes", "--json"], env=env
    )
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert (summary["matched"], summary["deleted"], summary["dry_run"]) == (5, 5, False)
    assert [a.lsn for a in partition_archives(bucket, "default", 1)] == [6, 7, 8, 9, 10]
    assert not list((bucket.root / "default" / "1").glob("000000000000[1-5]*"))  # checksums too
    assert len(partition_archives(bucket, "default", 10)) == 3


def test_the_newest_archive_is_never_deleted(tmp_path: Path) -> None:
    bucket = new_bucket(tmp_path / "bucket")
    archive_range(bucket, tmp_path / "wal", 1, range(1, 4))
    assert [a.lsn for a in plan_prune(bucket, "default", 1, before=100)] == [1, 2]
    result = CliRunner().invoke(
        main,
        ["prune", "default", "1", "--before", "100", "--yes"],
        env={"ARCHIVER_SINK_URL": bucket.root.as_uri()},
    )
    assert result.exit_code == 0
    assert [a.lsn for a in partition_archives(bucket, "default", 1)] == [3]


def test_s3_deletes_go_in_batches_of_1000_past_the_first_page(
    s3_endpoint: S3Endpoint, s3_bucket: str, tmp_path: Path
) -> None:
    sink = open_sink(s3_endpoint.sink_url(s3_bucket, "p"))
    archive_range(sink, tmp_path / "wal", 1, range(1, 1502), size=10)
    doomed = plan_prune(sink, "default", 1, before=2000)
    assert len(doomed) == 1500
    batches: list[int] = []
    assert prune(sink, doomed, batches.append) == 1500
    assert batches == [1000, 500]
    assert [a.lsn for a in partition_archives(sink, "default", 1)] == [1501]


def test_a_prune_cut_short_inside_one_delete_leaves_the_rest_restorable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A crash between the two unlinks of one archive cannot be staged at that instant with a
    real process: the second unlink fails instead, which stops the delete at the same point."""
    bucket = new_bucket(tmp_path / "bucket")
    archive_range(bucket, tmp_path / "wal", 1, range(1, 4))
    unlink = Path.unlink
    unlinked: list[Path] = []

    def unlink_once(path: Path, missing_ok: bool = False) -> None:
        if unlinked:
            raise OSError("power lost")
        unlinked.append(path)
        unlink(path, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", unlink_once)
    with pytest.raises(SinkError, match="power lost"):
        bucket.delete([archive_key("default", 1, 1)])
    monkeypatch.undo()
    assert unlinked == [bucket.root / archive_key("default", 1, 1)]  # the object went first
    dest = tmp_path / "restored"
    env = {"ARCHIVER_SINK_URL": bucket.root.as_uri()}
    result = CliRunner().invoke(main, ["restore", "default", "1", "--dest", str(dest)], env=env)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in dest.iterdir() if not p.name.startswith(".")) == [
        format_lsn(2),
        format_lsn(3),
    ]
