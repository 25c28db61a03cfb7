"""Re-wrapping data keys on a real filesystem bucket: only the metadata changes, and a store
that does not keep the new wrapping is caught by the read-back."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from archiver.archive.catalog import partition_archives
from archiver.archive.rewrap import RewrapOutcome, rewrap_archives
from archiver.core.encryption import KEY_ID_METADATA, Keyring, new_key_text
from archiver.dev.producer import write_entry
from archiver.runtime.archiving import copy_entry
from archiver.sinks import FilesystemSink
from tests.archive_factory import new_bucket

OLD, NEW = new_key_text(), new_key_text()


def sealed_bucket(tmp_path: Path) -> FilesystemSink:
    sink = FilesystemSink(new_bucket(tmp_path / "bucket").root, Keyring.parse(f"old:{OLD}"))
    for lsn in (1, 2):
        write_entry(tmp_path / "wal", 1, lsn, {"f": b"entry %d" % lsn})
        copy_entry(sink, "s", tmp_path / "wal", 1, lsn, encrypt=True)
    return sink


def test_rewrap_changes_the_wrapping_only(tmp_path: Path) -> None:
    sink = sealed_bucket(tmp_path)
    rotated = FilesystemSink(sink.root, Keyring.parse(f"old:{OLD},new:{NEW}", current="new"))
    keys = [a.key for a in partition_archives(sink, "s", 1)]
    before = {k: (sink.root / k).read_bytes() for k in keys}
    results = list(rewrap_archives(rotated, None, None, apply=True))
    assert [r.outcome for r in results] == [RewrapOutcome.REWRAPPED] * 2
    assert {k: (sink.root / k).read_bytes() for k in keys} == before
    assert {rotated.metadata(k)[KEY_ID_METADATA] for k in keys} == {"new"}
    assert {sink.recorded(k).sha256 for k in keys} == {rotated.recorded(k).sha256 for k in keys}


class KeepsOldMetadata(FilesystemSink):
    """A real bucket that answers a metadata update without making it (as some S3-compatible
    stores answer a copy onto itself)."""

    def replace_metadata(self, key: str, updates: Mapping[str, str]) -> None:
        return None


def test_a_wrapping_the_store_did_not_keep_is_left_and_reported(tmp_path: Path) -> None:
    sink = sealed_bucket(tmp_path)
    rotated = KeepsOldMetadata(sink.root, Keyring.parse(f"old:{OLD},new:{NEW}", current="new"))
    results = list(rewrap_archives(rotated, "s", 1, apply=True))
    assert [r.outcome for r in results] == [RewrapOutcome.LEFT] * 2
    assert all("old wrapping is still there" in r.detail for r in results)
