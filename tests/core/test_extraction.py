"""Reading entry tars back: crafted archives are refused and write nothing outside."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from archiver.core.tarball import entry_tar_chunks, extract_entry, read_entry_tar
from archiver.errors import UnsafeArchive

NAME = "0000000000001"


def _tar(*members: tuple[tarfile.TarInfo, bytes | None]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return out.getvalue()


def _dir(name: str) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    return info, None


def _file(name: str, data: bytes = b"x") -> tuple[tarfile.TarInfo, bytes]:
    return tarfile.TarInfo(name), data


def _link(name: str, kind: bytes, target: str) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info, None


CRAFTED = {
    "absolute path": _tar(_dir(NAME + "/"), _file("/tmp/evil")),
    "dot-dot": _tar(_dir(NAME + "/"), _file(f"{NAME}/../../evil")),
    "outside the entry": _tar(_dir(NAME + "/"), _file("0000000000002/evil")),
    "symlink": _tar(_dir(NAME + "/"), _link(f"{NAME}/link", tarfile.SYMTYPE, "/etc/passwd")),
    "hard link": _tar(_dir(NAME + "/"), _link(f"{NAME}/link", tarfile.LNKTYPE, "/etc/passwd")),
    "device": _tar(_dir(NAME + "/"), _link(f"{NAME}/dev", tarfile.CHRTYPE, "")),
    "fifo": _tar(_dir(NAME + "/"), _link(f"{NAME}/fifo", tarfile.FIFOTYPE, "")),
    "duplicate member": _tar(_dir(NAME + "/"), _file(f"{NAME}/a"), _file(f"{NAME}/a", b"y")),
    "no entry directory": _tar(_file(f"{NAME}/a")),
    "not a tar": b"\x00garbage" * 100,
}


@pytest.mark.parametrize("case", sorted(CRAFTED))
def test_crafted_archives_are_refused_and_write_nothing_outside(case: str, tmp_path: Path) -> None:
    destination = tmp_path / "restore" / NAME
    destination.mkdir(parents=True)
    with pytest.raises(UnsafeArchive):
        extract_entry(io.BytesIO(CRAFTED[case]), NAME, destination)
    outside = [p for p in tmp_path.rglob("*") if not str(p).startswith(str(destination))]
    assert sorted(str(p.relative_to(tmp_path)) for p in outside) == ["restore"]
    assert not Path("/tmp/evil").exists()


def test_a_symlinked_destination_subdirectory_is_not_followed(tmp_path: Path) -> None:
    """A file is opened with O_NOFOLLOW, so a link planted at its path is not written through."""
    destination = tmp_path / NAME
    destination.mkdir()
    target = tmp_path / "target"
    (destination / "a").symlink_to(target)
    with pytest.raises(OSError):
        extract_entry(io.BytesIO(_tar(_dir(NAME + "/"), _file(f"{NAME}/a"))), NAME, destination)
    assert not target.exists()


def test_extraction_round_trips_an_entry_byte_for_byte(tmp_path: Path) -> None:
    entry = tmp_path / "wal" / NAME
    (entry / "objects").mkdir(parents=True)
    (entry / "MANIFEST").write_bytes(b"m")
    (entry / "objects" / "pack").write_bytes(os.urandom(100_000))
    (entry / "run.sh").write_bytes(b"#!/bin/sh\n")
    (entry / "run.sh").chmod(0o755)
    archived = b"".join(entry_tar_chunks(entry, NAME))
    restored = tmp_path / "restored" / NAME
    restored.mkdir(parents=True)
    assert extract_entry(io.BytesIO(archived), NAME, restored) == 3
    assert (restored / "objects" / "pack").read_bytes() == (entry / "objects" / "pack").read_bytes()
    assert os.stat(restored / "run.sh").st_mode & 0o111
    # Re-archiving what was restored gives the same bytes.
    assert b"".join(entry_tar_chunks(restored, NAME)) == archived
    assert read_entry_tar(io.BytesIO(archived), NAME) == 3
