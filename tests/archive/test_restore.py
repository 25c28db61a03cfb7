"""Restore, through the CLI, from a filesystem bucket and from S3."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from archiver.cli import main
from archiver.core.lsn import format_lsn
from archiver.core.object_names import Compression, archive_key
from archiver.core.tarball import entry_tar_chunks
from archiver.sinks import FilesystemSink, Sink, open_sink
from tests.archive_factory import archive_range, entry_files, new_bucket
from tests.support import S3Endpoint


def _restore(sink_url: str, *args: str) -> Result:
    return CliRunner().invoke(
        main, ["restore", "default", "1", *args], env={"ARCHIVER_SINK_URL": sink_url}
    )


def _assert_restored(dest: Path, partition: int, lsns: range | list[int]) -> None:
    names = sorted(p.name for p in dest.iterdir() if not p.name.startswith("."))
    assert names == [format_lsn(lsn) for lsn in lsns]
    for lsn in lsns:
        for path, content in entry_files(partition, lsn).items():
            assert (dest / format_lsn(lsn) / path).read_bytes() == content


@pytest.fixture
def bucket(tmp_path: Path) -> FilesystemSink:
    return new_bucket(tmp_path / "bucket")


def test_restore_everything_with_a_json_summary(bucket: FilesystemSink, tmp_path: Path) -> None:
    archive_range(bucket, tmp_path / "wal", 1, range(3, 41))
    archive_range(bucket, tmp_path / "wal", 10, range(1, 3))  # partition 10 stays out of it
    dest = tmp_path / "restored"
    result = _restore(bucket.root.as_uri(), "--dest", str(dest), "--json", "--parallel", "4")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["entries"] == 38
    assert (summary["first_lsn"], summary["last_lsn"]) == (3, 40)
    assert summary["bytes"] > 38 * 2000
    assert summary["seconds"] >= 0
    _assert_restored(dest, 1, range(3, 41))


def test_restored_entries_re_archive_to_identical_bytes(
    bucket: FilesystemSink, tmp_path: Path
) -> None:
    archive_range(bucket, tmp_path / "wal", 1, range(1, 4))
    dest = tmp_path / "restored"
    assert _restore(bucket.root.as_uri(), "--dest", str(dest)).exit_code == 0
    for lsn in range(1, 4):
        again = b"".join(entry_tar_chunks(dest / format_lsn(lsn), format_lsn(lsn)))
        assert again == bucket.read(archive_key("default", 1, lsn))


def test_from_and_to_bound_the_restore(bucket: FilesystemSink, tmp_path: Path) -> None:
    archive_range(bucket, tmp_path / "wal", 1, range(1, 11))
    dest = tmp_path / "restored"
    result = _restore(bucket.root.as_uri(), "--dest", str(dest), "--from", "4", "--to", "6")
    assert result.exit_code == 0, result.output
    _assert_restored(dest, 1, range(4, 7))


def test_a_missing_middle_entry_stops_the_restore_with_a_clear_error(
    bucket: FilesystemSink, tmp_path: Path
) -> None:
    archive_range(bucket, tmp_path / "wal", 1, [1, 2, 3, 5, 6])
    dest = tmp_path / "restored"
    result = _restore(bucket.root.as_uri(), "--dest", str(dest))
    assert result.exit_code == 1
    assert "expected LSN 4, found LSN 5" in result.output
    _assert_restored(dest, 1, [1, 2, 3])
    beyond = _restore(
        bucket.root.as_uri(), "--dest", str(tmp_path / "x"), "--to", "9", "--from", "5"
    )
    assert "expected LSN 7, found the end of the archive" in beyond.output


def test_a_corrupted_object_is_refused(bucket: FilesystemSink, tmp_path: Path) -> None:
    archive_range(bucket, tmp_path / "wal", 1, range(1, 4))
    path = bucket.root / archive_key("default", 1, 2)
    data = bytearray(path.read_bytes())
    data[600] ^= 0xFF  # one flipped bit inside a file's contents
    path.chmod(0o644)
    path.write_bytes(bytes(data))
    dest = tmp_path / "restored"
    result = _restore(bucket.root.as_uri(), "--dest", str(dest))
    assert result.exit_code == 1
    assert "is corrupt" in result.output
    assert not (dest / format_lsn(2)).exists()


def test_a_planted_malicious_archive_is_refused(bucket: FilesystemSink, tmp_path: Path) -> None:
    import io
    import tarfile

    evil = io.BytesIO()
    with tarfile.open(fileobj=evil, mode="w") as tar:
        info = tarfile.TarInfo(format_lsn(1) + "/")
        info.type = tarfile.DIRTYPE
        tar.addfile(info)
        link = tarfile.TarInfo(format_lsn(1) + "/escape")
        link.type = tarfile.SYMTYPE
        link.linkname = "../../../outside"
        tar.addfile(link)
    # Planted with a correct checksum, so only the structure check can stop it.
    bucket.write(archive_key("default", 1, 1), lambda: iter([evil.getvalue()]))
    dest = tmp_path / "restored"
    result = _restore(bucket.root.as_uri(), "--dest", str(dest))
    assert result.exit_code == 1
    assert "symbolic link" in result.output
    assert not (tmp_path / "outside").exists()
    assert [p.name for p in dest.iterdir()] == [".restored"]
    # The journal names what it restores, and records no entry.
    assert (dest / ".restored").read_text().splitlines()[1:] == []


def test_a_restore_resumes_without_fetching_again(bucket: FilesystemSink, tmp_path: Path) -> None:
    archive_range(bucket, tmp_path / "wal", 1, range(1, 11))
    dest = tmp_path / "restored"
    assert _restore(bucket.root.as_uri(), "--dest", str(dest), "--to", "6").exit_code == 0
    # Entries already restored are not read again: even a now-corrupt object is not touched.
    (bucket.root / archive_key("default", 1, 3)).chmod(0o644)
    (bucket.root / archive_key("default", 1, 3)).write_bytes(b"rotten")
    # A half-extracted leftover of an interrupted run is replaced, and temporary
    # directories of a killed run are removed.
    (dest / format_lsn(7)).mkdir()
    (dest / format_lsn(7) / "partial").write_bytes(b"")
    (dest / ".tmp-0000000000008-deadbeef").mkdir()
    result = _restore(bucket.root.as_uri(), "--dest", str(dest), "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert (summary["entries"], summary["skipped"]) == (4, 6)
    assert not list(dest.glob(".tmp-*"))
    _assert_restored(dest, 1, range(1, 11))


def test_a_partition_may_hold_plain_and_compressed_archives(
    bucket: FilesystemSink, tmp_path: Path
) -> None:
    archive_range(bucket, tmp_path / "wal", 1, range(1, 4))
    archive_range(
        bucket, tmp_path / "wal", 1, range(4, 8), compression=Compression.ZSTD, size=50_000
    )
    compressed = bucket.root / archive_key("default", 1, 5, Compression.ZSTD)
    plain = b"".join(
        entry_tar_chunks(tmp_path / "wal" / "1" / "wal" / format_lsn(5), format_lsn(5))
    )
    assert compressed.stat().st_size < len(plain)
    listing = CliRunner().invoke(
        main, ["ls", "default", "1", "--json"], env={"ARCHIVER_SINK_URL": bucket.root.as_uri()}
    )
    keys = [row["key"] for row in json.loads(listing.output)]
    assert keys[2].endswith(".tar")
    assert keys[3].endswith(".tar.zst")
    dest = tmp_path / "restored"
    assert _restore(bucket.root.as_uri(), "--dest", str(dest)).exit_code == 0
    names = sorted(p.name for p in dest.iterdir() if not p.name.startswith("."))
    assert names == [format_lsn(n) for n in range(1, 8)]
    for lsn in range(4, 8):
        assert (dest / format_lsn(lsn) / "objects" / "data").read_bytes() == entry_files(
            1, lsn, 50_000
        )["objects/data"]


def test_restore_from_s3(s3_endpoint: S3Endpoint, s3_bucket: str, tmp_path: Path) -> None:
    url = s3_endpoint.sink_url(s3_bucket, "pre")
    sink: Sink = open_sink(url)
    archive_range(sink, tmp_path / "wal", 1, range(1, 21))
    dest = tmp_path / "restored"
    result = _restore(url, "--dest", str(dest), "--parallel", "8")
    assert result.exit_code == 0, result.output
    _assert_restored(dest, 1, range(1, 21))


def test_an_object_without_a_recorded_checksum_is_refused_unless_accepted(
    bucket: FilesystemSink, tmp_path: Path
) -> None:
    archive_range(bucket, tmp_path / "wal", 1, range(1, 3))
    (bucket.root / (archive_key("default", 1, 2) + ".attrs")).unlink()
    dest = tmp_path / "restored"
    result = _restore(bucket.root.as_uri(), "--dest", str(dest))
    assert result.exit_code == 1
    assert "cannot be verified: no checksum was recorded" in result.output
    assert "--accept-unverified" in result.output
    assert not (dest / format_lsn(2)).exists()
    accepted = _restore(bucket.root.as_uri(), "--dest", str(dest), "--accept-unverified", "--json")
    assert accepted.exit_code == 0, accepted.output
    assert f"WARNING {archive_key('default', 1, 2)} was taken unverified" in accepted.stderr
    assert json.loads(accepted.stdout)["unverified"] == 1
    _assert_restored(dest, 1, range(1, 3))
