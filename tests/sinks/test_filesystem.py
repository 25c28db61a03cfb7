from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from archiver.core.integrity import Verdict
from archiver.errors import SinkError, SinkUnusable, WriteUnderWay
from archiver.sinks import FilesystemSink, WriteOutcome, open_sink
from archiver.sinks.attributes import new_attributes
from archiver.sinks.filesystem import STALE_ATTRIBUTES_SECONDS, _make_directories
from tests.archive_factory import archive_range, new_bucket
from tests.original_bucket import OriginalListingFailed, listed_by_original, write_as_fileblob
from tests.support import source


def test_write_is_atomic_and_write_once(tmp_path: Path) -> None:
    sink = FilesystemSink(tmp_path)
    assert not sink.exists("s/1/a.tar")
    result = sink.write("s/1/a.tar", source(b"one", b"two"))
    assert (result.outcome, result.size) == (WriteOutcome.CREATED, 6)
    again = sink.write("s/1/a.tar", source(b"different"))
    assert again.outcome is WriteOutcome.ALREADY_EXISTS
    assert sink.read("s/1/a.tar") == b"onetwo"
    assert sorted(p.name for p in (tmp_path / "s" / "1").iterdir()) == ["a.tar", "a.tar.attrs"]


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
    (tmp_path / "s" / "1" / "0000000000003.tar.17f0a2b3c4d5e6f7.tmp").write_bytes(b"fileblob's")
    (tmp_path / "s" / "1" / "0000000000004.tar.attrs").write_bytes(b"{}")  # its object is not
    assert [o.key for o in sink.list("s/1/")] == ["s/1/0000000000001.tar"]
    assert sink.leftovers("s/1/") == [
        "s/1/.tmp-0000000000002.tar.123",
        "s/1/0000000000003.tar.17f0a2b3c4d5e6f7.tmp",
        "s/1/0000000000004.tar.attrs (attributes without their object)",
    ]
    assert list(sink.list("nothing/here/")) == []


def test_unsafe_keys_are_refused(tmp_path: Path) -> None:
    sink = FilesystemSink(tmp_path)
    for key in ("../x", "s//x", "s/./x", "s/.tmp-x", "s/1/a.tar.attrs", "s/1/a.tar.sha256"):
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
    assert sink.recorded("s/1/a.tar").sha256 == result.sha256 == hashlib.sha256(b"abc").hexdigest()
    assert sink.recorded("s/1/a.tar").md5 == hashlib.md5(b"abc").hexdigest()
    # The object's attributes lost (written by another tool, or a crash on a filesystem that
    # reorders directory updates): the first acceptance records them again.
    (tmp_path / "s" / "1" / "a.tar.attrs").unlink()
    recorded = sink.recorded("s/1/a.tar")
    assert (recorded.sha256, recorded.md5) == (None, None)
    download = sink.download("s/1/a.tar", io.BytesIO())
    assert download.integrity().verdict is Verdict.UNVERIFIABLE
    sink.confirm_archived("s/1/a.tar", download)
    assert sink.recorded("s/1/a.tar").sha256 == result.sha256
    # Never replaces a recorded one.
    other = sink.download("s/1/a.tar", io.BytesIO())
    sink.confirm_archived("s/1/a.tar", replace(other, sha256="0" * 64, md5="0" * 32))
    assert sink.recorded("s/1/a.tar").sha256 == result.sha256


def _attributes(tmp_path: Path, key: str) -> dict[str, Any]:
    return json.loads((tmp_path / (key + ".attrs")).read_bytes())  # type: ignore[no-any-return]


def test_attributes_are_in_fileblobs_format_and_linked_before_the_object(tmp_path: Path) -> None:
    seen = []

    class Watched(FilesystemSink):
        def _claim_attributes(self, final: Path, attributes: bytes, sha256: str) -> Any:
            claim = super()._claim_attributes(final, attributes, sha256)
            seen.append((final.with_name(final.name + ".attrs").exists(), final.exists()))
            return claim

    Watched(tmp_path).write("s/1/a.tar", source(b"abc"))
    assert seen == [(True, False)]
    assert _attributes(tmp_path, "s/1/a.tar") == {
        "user.cache_control": "",
        "user.content_disposition": "",
        "user.content_encoding": "",
        "user.content_language": "",
        "user.content_type": "application/x-tar",
        "user.metadata": {"sha256": hashlib.sha256(b"abc").hexdigest()},
        "md5": base64.b64encode(hashlib.md5(b"abc").digest()).decode(),
    }


def test_a_write_cut_off_after_its_attributes_is_finished_by_its_retry(tmp_path: Path) -> None:
    sink = FilesystemSink(tmp_path)
    sink.write("s/1/a.tar", source(b"abc"))
    (tmp_path / "s" / "1" / "a.tar").unlink()  # as if the crash came before the object's link
    assert sink.leftovers("s/1/") == ["s/1/a.tar.attrs (attributes without their object)"]
    assert list(sink.list("s/1/")) == []
    assert sink.write("s/1/a.tar", source(b"abc")).outcome is WriteOutcome.CREATED
    assert sink.read("s/1/a.tar") == b"abc"
    assert sink.leftovers("s/1/") == []


def test_attributes_of_other_bytes_hold_a_write_up_until_they_are_stale(tmp_path: Path) -> None:
    sink = FilesystemSink(tmp_path)
    sink.write("s/1/a.tar", source(b"someone else's"))
    (tmp_path / "s" / "1" / "a.tar").unlink()  # their write cut off before its link
    attributes = tmp_path / "s" / "1" / "a.tar.attrs"
    before = attributes.read_bytes()
    # Young: another write of this name may be about to link its object. Nothing replaced.
    with pytest.raises(WriteUnderWay, match=r"a\.tar\.attrs is there without its object"):
        sink.write("s/1/a.tar", source(b"ours"))
    assert attributes.read_bytes() == before
    assert sorted(p.name for p in (tmp_path / "s" / "1").iterdir()) == ["a.tar.attrs"]
    # A minute old: an interrupted write's, replaced by this write's own.
    old = time.time() - STALE_ATTRIBUTES_SECONDS - 1
    os.utime(attributes, (old, old))
    assert sink.write("s/1/a.tar", source(b"ours")).outcome is WriteOutcome.CREATED
    assert sink.read("s/1/a.tar") == b"ours"
    assert sink.recorded("s/1/a.tar").sha256 == hashlib.sha256(b"ours").hexdigest()


def test_attributes_replaced_under_a_write_that_stalled_are_made_its_own_again(
    tmp_path: Path,
) -> None:
    # The write stalled between its two links for longer than STALE_ATTRIBUTES_SECONDS: a
    # write of other bytes took its attributes for an interrupted write's and replaced them.
    class Stalled(FilesystemSink):
        def _claim_attributes(self, final: Path, attributes: bytes, sha256: str) -> Any:
            claim = super()._claim_attributes(final, attributes, sha256)
            theirs = new_attributes("s/1/a.tar", hashlib.sha256(b"x").hexdigest(), "0" * 32)
            final.with_name(final.name + ".attrs").write_bytes(theirs)
            return claim

    sink = Stalled(tmp_path)
    assert sink.write("s/1/a.tar", source(b"ours")).outcome is WriteOutcome.CREATED
    integrity = sink.download("s/1/a.tar", io.BytesIO()).integrity()
    assert (integrity.verdict, integrity.detail) == (Verdict.VERIFIED, "SHA-256 matches")


def test_an_older_releases_checksum_file_that_disagrees_with_the_attributes(
    tmp_path: Path,
) -> None:
    # An older release's worker wrote the object and its checksum file; a newer one had made
    # attributes for other bytes just before (the two must not run together, but did).
    sink = FilesystemSink(tmp_path)
    sink.write("s/1/a.tar", source(b"other"))
    (tmp_path / "s" / "1" / "a.tar").unlink()
    (tmp_path / "s" / "1" / "a.tar").write_bytes(b"theirs")
    legacy = tmp_path / "s" / "1" / "a.tar.sha256"
    legacy.write_text(hashlib.sha256(b"theirs").hexdigest() + "\n")
    integrity = sink.download("s/1/a.tar", io.BytesIO()).integrity()
    assert integrity.verdict is Verdict.VERIFIED
    assert "another records" in integrity.detail
    (tmp_path / "s" / "1" / "a.tar").write_bytes(b"rotted")
    assert sink.download("s/1/a.tar", io.BytesIO()).integrity().verdict is Verdict.CORRUPT


def test_an_empty_attributes_file_is_damaged_not_absent(tmp_path: Path) -> None:
    sink = FilesystemSink(tmp_path)
    sink.write("s/1/a.tar", source(b"abc"))
    (tmp_path / "s" / "1" / "a.tar.attrs").write_bytes(b"")
    integrity = sink.download("s/1/a.tar", io.BytesIO()).integrity()
    assert (integrity.verdict, integrity.detail) == (Verdict.CORRUPT, "its .attrs file is empty")


def test_storage_names_that_look_like_sidecars_or_temporary_files_still_work(
    tmp_path: Path,
) -> None:
    sink = FilesystemSink(tmp_path)
    for storage in ("pg.0.tmp", "wal.attrs", "x.sha256"):
        key = f"{storage}/1/0000000000001.tar"
        assert sink.write(key, source(b"abc")).outcome is WriteOutcome.CREATED
        assert [o.key for o in sink.list(f"{storage}/1/")] == [key]


def test_an_object_linked_meanwhile_without_attributes_gets_true_ones(tmp_path: Path) -> None:
    # A writer that makes no attributes (an earlier release, another tool) links the object
    # between this write's claim of the attributes and its own link.
    class Raced(FilesystemSink):
        def _claim_attributes(self, final: Path, attributes: bytes, sha256: str) -> Any:
            claim = super()._claim_attributes(final, attributes, sha256)
            final.write_bytes(b"theirs")
            return claim

    sink = Raced(tmp_path)
    assert sink.write("s/1/a.tar", source(b"ours")).outcome is WriteOutcome.ALREADY_EXISTS
    assert sink.read("s/1/a.tar") == b"theirs"
    recorded = sink.recorded("s/1/a.tar")
    assert recorded.sha256 == hashlib.sha256(b"theirs").hexdigest()
    assert recorded.md5 == hashlib.md5(b"theirs").hexdigest()


def test_accepting_an_object_of_the_original_adds_its_sha256_and_keeps_the_rest(
    tmp_path: Path,
) -> None:
    key = "s/1/0000000000001.tar"
    write_as_fileblob(tmp_path, key, b"abc")
    attributes = tmp_path / (key + ".attrs")
    written = json.loads(attributes.read_bytes())
    attributes.write_bytes(json.dumps({**written, "etag": "kept"}).encode())  # a newer fileblob
    sink = FilesystemSink(tmp_path)
    download = sink.download(key, io.BytesIO())
    assert download.integrity().verdict is Verdict.VERIFIED  # by its MD5
    sink.confirm_archived(key, download)
    assert _attributes(tmp_path, key) == {
        **written,
        "etag": "kept",
        "user.metadata": {"sha256": hashlib.sha256(b"abc").hexdigest()},
    }
    assert sink.download(key, io.BytesIO()).integrity().detail == "SHA-256 matches"


def test_delete_takes_the_attributes_and_old_checksum_files_too(tmp_path: Path) -> None:
    sink = FilesystemSink(tmp_path)
    sink.write("s/1/a.tar", source(b"abc"))
    (tmp_path / "s" / "1" / "a.tar.sha256").write_text(hashlib.sha256(b"abc").hexdigest())
    sink.delete(["s/1/a.tar"])
    assert list((tmp_path / "s" / "1").iterdir()) == []


def test_our_bucket_listed_the_originals_way_gives_exactly_the_archived_lsns(
    tmp_path: Path,
) -> None:
    bucket = new_bucket(tmp_path / "bucket")
    archive_range(bucket, tmp_path / "wal", 1, [1, 2, 3, 5, 36, 37])
    archive_range(bucket, tmp_path / "wal", 10, [1])
    assert listed_by_original(bucket.root, "default", 1) == [1, 2, 3, 5, 36, 37]
    assert listed_by_original(bucket.root, "default", 10) == [1]
    # The checksum files of earlier releases are what broke it.
    (bucket.root / "default" / "1" / "0000000000001.tar.sha256").write_text("0" * 64)
    with pytest.raises(OriginalListingFailed):
        listed_by_original(bucket.root, "default", 1)
