"""One archiving attempt, without Celery: paths, existing objects, conflicts."""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from archiver.archive.catalog import Archive
from archiver.archive.checks import ObjectCheck, check_archive
from archiver.core.encryption import Keyring, SealedStream, new_key_text, new_sealed_stream
from archiver.core.object_names import ArchiveForm, Compression, archive_key, sealed_identity
from archiver.core.object_stream import encoded
from archiver.core.tarball import entry_tar_chunks
from archiver.core.wal_layout import entry_path
from archiver.dev.producer import write_entry
from archiver.errors import ArchiveConflict, SinkError, UnsafeEntry, UnverifiableArchive
from archiver.runtime.archiving import _resumable, copy_entry
from archiver.sinks import FilesystemSink
from tests.archive_factory import new_bucket
from tests.original_bucket import archive_as_original


def test_an_entry_path_outside_the_storage_root_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "storage"
    root.mkdir()
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "wal").mkdir(parents=True)
    (root / "7").symlink_to(elsewhere)  # the partition directory points out of the root
    with pytest.raises(UnsafeEntry, match="outside storage root"):
        entry_path(root, 7, 1)
    assert entry_path(root, 8, 1) == root / "8" / "wal" / "0000000000001"


def test_existing_archives_are_compared_by_content_under_either_name(tmp_path: Path) -> None:
    sink = new_bucket(tmp_path / "bucket")
    write_entry(tmp_path / "wal", 1, 1, {"f": b"data" * 1000})
    first = copy_entry(sink, "s", tmp_path / "wal", 1, 1, Compression.ZSTD)
    assert first.uploaded
    # Compression switched off since: the compressed archive still counts, nothing is added.
    again = copy_entry(sink, "s", tmp_path / "wal", 1, 1, Compression.NONE)
    assert (again.uploaded, again.key) == (False, archive_key("s", 1, 1, Compression.ZSTD))
    assert not sink.exists(archive_key("s", 1, 1))
    # The entry on disk changed: the archive is kept and the conflict reported.
    (tmp_path / "wal" / "1" / "wal" / "0000000000001" / "f").write_bytes(b"other")
    with pytest.raises(ArchiveConflict):
        copy_entry(sink, "s", tmp_path / "wal", 1, 1, Compression.NONE)


class LookupsCounted(FilesystemSink):
    """A real filesystem bucket that records which keys were looked up."""

    looked_up: list[str]

    def exists(self, key: str) -> bool:
        self.looked_up.append(key)
        return super().exists(key)


def test_a_retried_attempt_looks_only_under_the_other_name(tmp_path: Path) -> None:
    """The create-only write finds an archive under the preferred name by itself: an attempt
    that may follow an earlier one (not ``fresh``) looks up the other name only, and both
    names only when the entry is gone from disk."""
    (tmp_path / "bucket").mkdir()
    sink = LookupsCounted(tmp_path / "bucket")
    sink.looked_up = []
    write_entry(tmp_path / "wal", 1, 1, {"f": b"data"})
    others = [
        archive_key("s", 1, 1, Compression.ZSTD),
        archive_key("s", 1, 1, encrypted=True),
        archive_key("s", 1, 1, Compression.ZSTD, encrypted=True),
    ]
    assert copy_entry(sink, "s", tmp_path / "wal", 1, 1).uploaded
    assert sink.looked_up == others
    # An earlier attempt archived it and crashed before committing: found by the write.
    sink.looked_up = []
    again = copy_entry(sink, "s", tmp_path / "wal", 1, 1)
    assert (again.uploaded, again.key) == (False, archive_key("s", 1, 1))
    assert sink.looked_up == others
    # The entry is gone (acknowledged, then deleted): found by looking under both names, and
    # accepted because it verifies on its own.
    shutil.rmtree(entry_path(tmp_path / "wal", 1, 1))
    sink.looked_up = []
    gone = copy_entry(sink, "s", tmp_path / "wal", 1, 1, acknowledged_through=lambda: 1)
    assert (gone.uploaded, gone.key) == (False, archive_key("s", 1, 1))
    assert sink.looked_up == [archive_key("s", 1, 1)]
    # A fresh attempt looks nowhere.
    write_entry(tmp_path / "wal", 1, 2, {"f": b"more"})
    sink.looked_up = []
    assert copy_entry(sink, "s", tmp_path / "wal", 1, 2, fresh=True).uploaded
    assert sink.looked_up == []


def test_an_undecodable_object_at_the_name_is_a_conflict_not_a_retry(tmp_path: Path) -> None:
    """Not a zstd frame at all: it cannot hold the entry's tar, so it is a conflict (the
    partition stops, the object stays), not a failure retried for ever."""
    sink = new_bucket(tmp_path / "bucket")
    write_entry(tmp_path / "wal", 1, 1, {"f": b"data"})
    sink.write(archive_key("s", 1, 1, Compression.ZSTD), lambda: iter([b"not zstd"]))
    with pytest.raises(ArchiveConflict, match="cannot be decoded"):
        copy_entry(sink, "s", tmp_path / "wal", 1, 1, Compression.ZSTD)
    assert sink.read(archive_key("s", 1, 1, Compression.ZSTD)) == b"not zstd"


def test_an_object_the_original_wrote_is_accepted_by_its_md5(tmp_path: Path) -> None:
    sink = new_bucket(tmp_path / "bucket")
    wal = tmp_path / "wal"
    for lsn in (1, 2):
        write_entry(wal, 1, lsn, {"f": b"entry %d" % lsn})
    archive_as_original(sink.root, wal, "s", 1, [1, 2])
    # The entry still on disk: compared with it, and its SHA-256 recorded beside the MD5.
    kept = copy_entry(sink, "s", wal, 1, 1)
    assert not kept.uploaded
    assert sink.recorded(archive_key("s", 1, 1)).sha256 is not None
    # The entry deleted after its acknowledgement: the MD5 alone vouches for the object.
    shutil.rmtree(entry_path(wal, 1, 2))
    gone = copy_entry(sink, "s", wal, 1, 2, acknowledged_through=lambda: 2)
    assert (gone.uploaded, gone.key) == (False, archive_key("s", 1, 2))
    # With no checksum at all, it is not accepted.
    (sink.root / (archive_key("s", 1, 2) + ".attrs")).unlink()
    with pytest.raises(UnverifiableArchive, match="cannot be verified"):
        copy_entry(sink, "s", wal, 1, 2, acknowledged_through=lambda: 2)


def test_an_encrypted_retry_compares_plaintext_and_keeps_the_first_object(tmp_path: Path) -> None:
    """Each attempt seals with a fresh data key, so the bytes differ every time: the object
    already there is compared by its plaintext, accepted, and never replaced."""
    keyring = Keyring.parse(f"k1:{new_key_text()}")
    sink = FilesystemSink(new_bucket(tmp_path / "bucket").root, keyring)
    write_entry(tmp_path / "wal", 1, 1, {"f": b"secret data" * 500})
    first = copy_entry(sink, "s", tmp_path / "wal", 1, 1, Compression.ZSTD, encrypt=True)
    key = archive_key("s", 1, 1, Compression.ZSTD, encrypted=True)
    assert (first.uploaded, first.key) == (True, key)
    stored = sink.read(key)
    assert b"secret data" not in stored
    again = copy_entry(sink, "s", tmp_path / "wal", 1, 1, Compression.ZSTD, encrypt=True)
    assert (again.uploaded, again.key) == (False, key)
    assert sink.read(key) == stored
    # Encryption switched off since: the sealed archive still counts, nothing is added.
    plain = copy_entry(sink, "s", tmp_path / "wal", 1, 1, Compression.NONE)
    assert (plain.uploaded, plain.key) == (False, key)
    assert [o.key for o in sink.list("s/1/")] == [key]
    # The entry changed: a conflict, compared through the decryption.
    (tmp_path / "wal" / "1" / "wal" / "0000000000001" / "f").write_bytes(b"other")
    with pytest.raises(ArchiveConflict):
        copy_entry(sink, "s", tmp_path / "wal", 1, 1, Compression.ZSTD, encrypt=True)
    assert sink.read(key) == stored


def test_an_encrypted_object_is_checked_through_its_decryption(tmp_path: Path) -> None:
    keyring = Keyring.parse(f"k1:{new_key_text()}")
    sink = FilesystemSink(new_bucket(tmp_path / "bucket").root, keyring)
    write_entry(tmp_path / "wal", 1, 1, {"f": b"x" * 5000})
    archived = copy_entry(sink, "s", tmp_path / "wal", 1, 1, encrypt=True)
    archive = Archive(1, archived.key, 0, Compression.NONE, encrypted=True)
    assert check_archive(sink, archive) == ObjectCheck()
    other_keys = FilesystemSink(sink.root, Keyring.parse(f"k2:{new_key_text()}"))
    found = check_archive(other_keys, archive)
    assert found.problem is None
    assert found.refusal() is not None
    assert "'k1', which is not among the keys given" in (found.unopened or "")
    # Re-sealed by someone holding the bucket, its checksum recorded anew: the checksum
    # passes, the decryption does not.
    metadata = dict(sink.metadata(archived.key))
    path = sink.root / archived.key
    data = bytearray(path.read_bytes())
    data[200] ^= 1
    path.unlink()
    (sink.root / (archived.key + ".attrs")).unlink()
    sink.write(archived.key, lambda: iter([bytes(data)]), metadata)
    found = check_archive(sink, archive)
    assert "chunk 0 does not authenticate" in (found.problem or ""), found


def test_an_encrypted_write_cut_off_before_its_object_is_taken_up_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker killed after linking an object's attributes and before linking the object
    leaves the attributes. (The kill is stood in for by a failing link of the object: a
    process cannot be killed at that exact point from a test.) The retry seals with the data
    key those attributes hold, so its bytes are the same and it goes on at once, rather than
    wait for the attributes to age into an interrupted write's."""
    keyring = Keyring.parse(f"k1:{new_key_text()}")
    sink = FilesystemSink(new_bucket(tmp_path / "bucket").root, keyring)
    write_entry(tmp_path / "wal", 1, 1, {"f": b"sealed" * 1000})
    key = archive_key("s", 1, 1, encrypted=True)
    real_link = os.link

    def killed_before_the_object(src: object, dst: object, *args: object, **kwargs: object) -> None:
        if str(dst).endswith(key.rsplit("/", 1)[-1]):
            raise OSError(errno.EIO, "killed")
        real_link(src, dst, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "link", killed_before_the_object)
    with pytest.raises(SinkError):
        copy_entry(sink, "s", tmp_path / "wal", 1, 1, encrypt=True)
    monkeypatch.setattr(os, "link", real_link)
    assert not sink.exists(key)
    assert sink.pending_metadata(key)
    again = copy_entry(sink, "s", tmp_path / "wal", 1, 1, encrypt=True)
    assert (again.uploaded, again.key) == (True, key)
    assert (
        check_archive(sink, Archive(1, key, 0, Compression.NONE, encrypted=True)) == ObjectCheck()
    )


def test_a_cut_off_write_is_taken_up_with_its_data_key_only_for_the_same_bytes(
    tmp_path: Path,
) -> None:
    """One data key must never seal two plaintexts (AES-GCM with its nonces used twice): if
    the entry is not what the cut-off write sealed, the retry gets a fresh key."""
    keyring = Keyring.parse(f"k1:{new_key_text()}")
    sink = FilesystemSink(new_bucket(tmp_path / "bucket").root, keyring)
    write_entry(tmp_path / "wal", 1, 1, {"f": b"first" * 1000})
    path = entry_path(tmp_path / "wal", 1, 1)
    key = archive_key("s", 1, 1, encrypted=True)
    form = ArchiveForm(Compression.NONE, encrypted=True)
    stream = new_sealed_stream(keyring, sealed_identity(key))
    sealed = b"".join(encoded(entry_tar_chunks(path, "0000000000001"), form, stream))
    pending = {**stream.metadata, "sha256": hashlib.sha256(sealed).hexdigest()}

    def sealing(s: SealedStream) -> Iterator[bytes]:
        return encoded(entry_tar_chunks(path, "0000000000001"), form, s)

    resumed = _resumable(sink, key, form, pending, sealing)
    assert resumed is not None
    assert resumed.data_key == stream.data_key
    (path / "f").write_bytes(b"changed since")
    assert _resumable(sink, key, form, pending, sealing) is None
