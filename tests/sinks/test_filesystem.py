from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from archiver.sinks import FilesystemSink, SinkError, WriteOutcome, open_sink


def test_write_is_atomic_and_write_once(tmp_path: Path) -> None:
    sink = FilesystemSink(tmp_path)
    assert not sink.exists("s/1/a.tar")
    result = sink.write("s/1/a.tar", [b"one", b"two"])
    assert (result.outcome, result.size) == (WriteOutcome.CREATED, 6)
    again = sink.write("s/1/a.tar", [b"different"])
    assert again.outcome is WriteOutcome.ALREADY_EXISTS
    assert sink.read("s/1/a.tar") == b"onetwo"
    assert [p.name for p in (tmp_path / "s" / "1").iterdir()] == ["a.tar"]


def test_a_failed_write_leaves_nothing(tmp_path: Path) -> None:
    sink = FilesystemSink(tmp_path)

    def chunks() -> Iterator[bytes]:
        yield b"partial"
        raise RuntimeError("tar failed")

    with pytest.raises(RuntimeError):
        sink.write("s/1/a.tar", chunks())
    assert not sink.exists("s/1/a.tar")
    assert list((tmp_path / "s" / "1").iterdir()) == []


def test_listing_skips_temp_files_and_other_partitions(tmp_path: Path) -> None:
    sink = FilesystemSink(tmp_path)
    sink.write("s/1/0000000000001.tar", [b"a"])
    sink.write("s/10/0000000000001.tar", [b"b"])
    (tmp_path / "s" / "1" / ".tmp-0000000000002.tar.123").write_bytes(b"crash leftover")
    assert [o.key for o in sink.list("s/1/")] == ["s/1/0000000000001.tar"]
    assert list(sink.list("nothing/here/")) == []


def test_unsafe_keys_are_refused(tmp_path: Path) -> None:
    sink = FilesystemSink(tmp_path)
    for key in ("../x", "s//x", "s/./x", "s/.tmp-x"):
        with pytest.raises(ValueError):
            sink.write(key, [b""])


def test_unwritable_bucket_is_a_sink_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"")
    sink = FilesystemSink(tmp_path / "file")
    with pytest.raises(SinkError):
        sink.write("s/1/a.tar", [b"x"])


def test_open_sink_urls(tmp_path: Path) -> None:
    sink = open_sink(tmp_path.as_uri())
    assert isinstance(sink, FilesystemSink)
    assert sink.root == tmp_path
    for bad in ("file://host/x", "ftp://x", "relative/path"):
        with pytest.raises(ValueError):
            open_sink(bad)
