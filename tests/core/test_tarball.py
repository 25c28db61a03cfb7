"""Tar streams, read back with Python's tarfile and GNU tar."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from archiver.core.tarball import entry_tar_chunks
from archiver.errors import EntryChanged, EntryMissing, UnsafeEntry
from tests.support import read_tar


def _entry(tmp_path: Path) -> Path:
    entry = tmp_path / "wal" / "0000000000001"
    (entry / "objects" / "pack").mkdir(parents=True)
    (entry / "MANIFEST").write_bytes(b"manifest")
    (entry / "objects" / "pack" / "a.pack").write_bytes(os.urandom(70_000))
    (entry / "empty").write_bytes(b"")
    hook = entry / "hook.sh"
    hook.write_bytes(b"#!/bin/sh\n")
    hook.chmod(0o750)
    (entry / "objects" / "private").write_bytes(b"secret")
    (entry / "objects" / "private").chmod(0o600)
    return entry


def test_layout_modes_and_contents(tmp_path: Path) -> None:
    entry = _entry(tmp_path)
    data = b"".join(entry_tar_chunks(entry, "0000000000001"))
    assert len(data) % 512 == 0
    import io
    import tarfile

    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert names == [
        "0000000000001",
        "0000000000001/MANIFEST",
        "0000000000001/empty",
        "0000000000001/hook.sh",
        "0000000000001/objects",
        "0000000000001/objects/pack",
        "0000000000001/objects/pack/a.pack",
        "0000000000001/objects/private",
    ]
    modes = {m.name.rsplit("/", 1)[-1]: m.mode for m in members}
    assert modes["0000000000001"] == 0o777
    assert modes["objects"] == 0o777
    assert modes["hook.sh"] == 0o777
    assert modes["MANIFEST"] == 0o666
    assert modes["private"] == 0o666
    assert all(m.uid == 0 and m.gid == 0 and m.mtime == 0 for m in members)
    contents = read_tar(data)
    assert (
        contents["0000000000001/objects/pack/a.pack"]
        == (entry / "objects/pack/a.pack").read_bytes()
    )


def test_same_entry_gives_same_bytes(tmp_path: Path) -> None:
    entry = _entry(tmp_path)
    first = b"".join(entry_tar_chunks(entry, "0000000000001"))
    copy = tmp_path / "copy"
    shutil.copytree(entry, copy)
    os.utime(copy / "MANIFEST", (1, 1))
    assert b"".join(entry_tar_chunks(copy, "0000000000001")) == first


def test_gnu_tar_extracts_it(tmp_path: Path) -> None:
    entry = _entry(tmp_path)
    archive = tmp_path / "x.tar"
    archive.write_bytes(b"".join(entry_tar_chunks(entry, "0000000000001")))
    out = tmp_path / "out"
    out.mkdir()
    subprocess.run(["tar", "-xf", str(archive), "-C", str(out)], check=True)
    extracted = out / "0000000000001"
    assert (extracted / "objects/pack/a.pack").read_bytes() == (
        entry / "objects/pack/a.pack"
    ).read_bytes()
    assert (extracted / "MANIFEST").read_bytes() == b"manifest"


def test_missing_entry(tmp_path: Path) -> None:
    with pytest.raises(EntryMissing):
        b"".join(entry_tar_chunks(tmp_path / "nope", "0000000000001"))


def test_symlinks_are_refused_not_followed(tmp_path: Path) -> None:
    entry = _entry(tmp_path)
    (tmp_path / "outside").write_bytes(b"not yours")
    (entry / "link").symlink_to(tmp_path / "outside")
    with pytest.raises(UnsafeEntry, match="link"):
        b"".join(entry_tar_chunks(entry, "0000000000001"))


def test_fifos_and_sockets_are_refused(tmp_path: Path) -> None:
    entry = _entry(tmp_path)
    os.mkfifo(entry / "fifo")
    with pytest.raises(UnsafeEntry, match="fifo"):
        b"".join(entry_tar_chunks(entry, "0000000000001"))
    (entry / "fifo").unlink()
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(entry / "sock"))
        with pytest.raises(UnsafeEntry, match="sock"):
            b"".join(entry_tar_chunks(entry, "0000000000001"))


def test_a_file_that_grows_while_read_fails_the_attempt(tmp_path: Path) -> None:
    entry = tmp_path / "e"
    entry.mkdir()
    target = entry / "grows"
    target.write_bytes(b"x" * 100)
    chunks = entry_tar_chunks(entry, "0000000000001")
    next(chunks)  # the directory header
    header = next(chunks)  # the file header, written with the size seen by lstat
    assert header
    with open(target, "ab") as f:
        f.write(b"more")
    with pytest.raises(EntryChanged):
        list(chunks)
