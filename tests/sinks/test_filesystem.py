from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from archiver.errors import SinkError, SinkUnusable
from archiver.sinks import FilesystemSink, WriteOutcome, open_sink
from archiver.sinks.filesystem import _make_directories
from tests.support import source


def test_write_is_atomic_and_write_once(tmp_path: Path) -> None:
    sink = FilesystemSink(tmp_path)
    assert not sink.exists("s/1/a.tar")
    result = sink.write("s/1/a.tar", source(b"one", b"two"))
    assert (result.outcome, result.size) == (WriteOutcome.CREATED, 6)
    again = sink.write("s/1/a.tar", source(b"different"))
    assert again.outcome is WriteOutcome.ALREADY_EXISTS
    assert sink.read("s/1/a.tar") == b"onetwo"
    assert sorted(p.name for p in (tmp_path / "s" / "1").iterdir()) == ["a.tar", "a.tar.sha256"]


def test_a_failed_write_leaves_nothing(tmp_path: Path) -> None:
    sink = FilesystemSink(tmp_path)

    def chunks() -> Iterator[bytes]:
        yield b"partial"
        raise RuntimeError("tar failed")

    with pytest.raises(RuntimeError):
        sink.write("s/1/a.tar", chunks)
    assert not sink.exists("s/1/a.tar")
    assert list((tmp_path / "s" / "1").iterdir()) == []


def test_listing_skips_temp_files_and_other_partitions(tmp_path: Path) -> None:
    sink = FilesystemSink(tmp_path)
    sink.write("s/1/0000000000001.tar", source(b"a"))
    sink.write("s/10/0000000000001.tar", source(b"b"))
    (tmp_path / "s" / "1" / ".tmp-0000000000002.tar.123").write_bytes(b"crash leftover")
    assert [o.key for o in sink.list("s/1/")] == [
        "s/1/0000000000001.tar",
        "s/1/0000000000001.tar.sha256",
    ]
    assert sink.leftovers("s/1/") == ["s/1/.tmp-0000000000002.tar.123"]
    assert list(sink.list("nothing/here/")) == []


def test_unsafe_keys_are_refused(tmp_path: Path) -> None:
    sink = FilesystemSink(tmp_path)
    for key in ("../x", "s//x", "s/./x", "s/.tmp-x"):
        with pytest.raises(ValueError):
            sink.write(key, source(b""))


def test_unwritable_bucket_is_a_sink_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"")
    sink = FilesystemSink(tmp_path / "file")
    with pytest.raises(SinkError):
        sink.write("s/1/a.tar", source(b"x"))


def test_the_probe_needs_the_root_and_leaves_nothing(tmp_path: Path) -> None:
    (tmp_path / "bucket").mkdir()
    FilesystemSink(tmp_path / "bucket").probe()
    assert list((tmp_path / "bucket").iterdir()) == []
    # Not made on the spot: it could stand where a volume is not mounted.
    with pytest.raises(SinkUnusable, match="is not a directory"):
        FilesystemSink(tmp_path / "unmounted").probe()
    assert not (tmp_path / "unmounted").exists()


def test_a_root_gone_between_check_and_write_is_not_made_again(tmp_path: Path) -> None:
    # The window between write()'s check of the root and the directories it makes below it.
    root = tmp_path / "bucket"
    with pytest.raises(SinkUnusable, match="not a directory any more"):
        _make_directories(root / "s" / "1", root)
    assert not root.exists()


def test_open_sink_urls(tmp_path: Path) -> None:
    sink = open_sink(tmp_path.as_uri())
    assert isinstance(sink, FilesystemSink)
    assert sink.root == tmp_path
    for bad in ("file://host/x", "ftp://x", "relative/path"):
        with pytest.raises(ValueError):
            open_sink(bad)


def test_checksums_sit_beside_objects_and_can_be_repaired(tmp_path: Path) -> None:
    sink = FilesystemSink(tmp_path)
    result = sink.write("s/1/a.tar", source(b"abc"))
    assert sink.recorded_sha256("s/1/a.tar") == result.sha256 == hashlib.sha256(b"abc").hexdigest()
    (tmp_path / "s" / "1" / "a.tar.sha256").unlink()  # a crash between object and checksum
    assert sink.recorded_sha256("s/1/a.tar") is None
    sink.confirm_archived("s/1/a.tar", result.sha256)
    assert sink.recorded_sha256("s/1/a.tar") == result.sha256
    sink.confirm_archived("s/1/a.tar", "0" * 64)  # never replaces one
    assert sink.recorded_sha256("s/1/a.tar") == result.sha256
