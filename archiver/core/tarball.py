"""Deterministic tar streams of WAL entry directories.

The layout stays compatible with the original archiver: a directory entry ``<lsn>/`` and then
``<lsn>/<files>``, only regular files and directories, files mode 0666, directories and
executables 0777. Names are sorted, owner and timestamps fixed, so archiving the same entry
twice yields the same bytes: a re-upload after a crash can be told apart from a conflict.
"""

from __future__ import annotations

import os
import stat
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from archiver.errors import EntryChanged, EntryMissing, EntryUnreadable, UnsafeArchive, UnsafeEntry

BLOCK_SIZE = tarfile.BLOCKSIZE
READ_SIZE = 1024 * 1024
FILE_MODE = 0o666
EXECUTABLE_MODE = 0o777
DIRECTORY_MODE = 0o777


def _header(name: str, kind: bytes, mode: int, size: int = 0) -> bytes:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.size = size
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info.tobuf(format=tarfile.PAX_FORMAT, encoding="utf-8", errors="surrogateescape")


def _file_chunks(path: Path, name: str, st: os.stat_result) -> Iterator[bytes]:
    mode = EXECUTABLE_MODE if st.st_mode & 0o111 else FILE_MODE
    yield _header(name, tarfile.REGTYPE, mode, st.st_size)
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise UnsafeEntry(f"{path} is no longer a regular file")
        remaining = st.st_size
        while remaining:
            chunk = f.read(min(READ_SIZE, remaining))
            if not chunk:
                raise EntryChanged(f"{path} shrank while being archived")
            remaining -= len(chunk)
            yield chunk
        if f.read(1):
            raise EntryChanged(f"{path} grew while being archived")
    padding = -st.st_size % BLOCK_SIZE
    if padding:
        yield b"\0" * padding


def _directory_chunks(directory: Path, name: str) -> Iterator[bytes]:
    yield _header(name + "/", tarfile.DIRTYPE, DIRECTORY_MODE)
    for child in sorted(os.listdir(directory)):
        path = directory / child
        child_name = f"{name}/{child}"
        st = os.lstat(path)
        if stat.S_ISDIR(st.st_mode):
            yield from _directory_chunks(path, child_name)
        elif stat.S_ISREG(st.st_mode):
            yield from _file_chunks(path, child_name, st)
        else:
            raise UnsafeEntry(
                f"{path} is neither a regular file nor a directory; refusing to archive it"
            )


def entry_tar_chunks(entry_dir: Path, name: str) -> Iterator[bytes]:
    """Stream ``entry_dir`` as a tar whose top directory is ``name``.

    Chunks are produced lazily, so an entry of any size is archived in bounded memory.
    """
    try:
        try:
            st = os.lstat(entry_dir)
        except FileNotFoundError as exc:
            raise EntryMissing(f"entry directory {entry_dir} does not exist") from exc
        if not stat.S_ISDIR(st.st_mode):
            raise UnsafeEntry(f"{entry_dir} is not a directory")
        yield from _directory_chunks(entry_dir, name)
    except FileNotFoundError as exc:
        raise EntryMissing(f"entry {entry_dir} vanished while it was read: {exc}") from exc
    except OSError as exc:  # a failure of the storage host's disk, not of the object store
        raise EntryUnreadable(f"reading entry {entry_dir}: {exc}") from exc
    yield b"\0" * (2 * BLOCK_SIZE)


READ_CHUNK = 1024 * 1024


def _relative_member_path(member_name: str, name: str) -> str:
    """The member's path inside the entry directory; refuses anything that could escape it."""
    if member_name.startswith("/") or "\\" in member_name or "\0" in member_name:
        raise UnsafeArchive(f"member {member_name!r} has an absolute or unsafe path")
    path = member_name.rstrip("/")
    parts = path.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise UnsafeArchive(f"member {member_name!r} has an unsafe path component")
    if parts[0] != name:
        raise UnsafeArchive(f"member {member_name!r} is outside the entry directory {name}/")
    return "/".join(parts[1:])


def read_entry_tar(
    stream: BinaryIO,
    name: str,
    on_directory: Callable[[str], None] = lambda _path: None,
    on_file: Callable[[str, int, Iterator[bytes]], None] | None = None,
) -> int:
    """Walk an entry's tar, checking every member; returns the number of regular files.

    Only regular files and directories under ``name/`` are accepted: absolute paths, ``..``,
    links, devices and FIFOs raise UnsafeArchive before anything is handed on. Each file's
    contents are handed to ``on_file`` as chunks (and read through, if it has no handler).
    """
    files = 0
    seen: set[str] = set()
    try:
        with tarfile.open(fileobj=stream, mode="r|") as tar:
            for member in tar:
                relative = _relative_member_path(member.name, name)
                if relative in seen:
                    raise UnsafeArchive(f"member {member.name!r} appears twice")
                seen.add(relative)
                if member.isdir():
                    if relative:
                        on_directory(relative)
                    continue
                if not member.isreg():
                    raise UnsafeArchive(
                        f"member {member.name!r} is a {_kind(member)}, not a regular file or "
                        "directory"
                    )
                if not relative:
                    raise UnsafeArchive(f"member {member.name!r} replaces the entry directory")
                data = tar.extractfile(member)
                assert data is not None
                chunks = iter(lambda d=data: d.read(READ_CHUNK), b"")  # type: ignore[misc]
                if on_file is None:
                    for _chunk in chunks:
                        pass
                else:
                    on_file(relative, member.mode, chunks)
                files += 1
    except tarfile.TarError as exc:
        raise UnsafeArchive(f"not a readable tar: {exc}") from exc
    if "" not in seen:
        raise UnsafeArchive(f"no {name}/ directory entry")
    return files


def _kind(member: tarfile.TarInfo) -> str:
    if member.issym():
        return "symbolic link"
    if member.islnk():
        return "hard link"
    if member.ischr() or member.isblk():
        return "device"
    if member.isfifo():
        return "FIFO"
    return f"member of type {member.type!r}"


def extract_entry(stream: BinaryIO, name: str, destination: Path) -> int:
    """Extract an entry's tar into ``destination`` (a new, empty directory standing for
    ``<name>/``). Nothing is written outside it, and nothing is followed."""

    made = {destination}

    def make_directory(relative: str) -> None:
        path = destination / relative
        if path not in made:
            path.mkdir(parents=True, exist_ok=True)
            made.add(path)

    def write_file(relative: str, mode: int, chunks: Iterator[bytes]) -> None:
        target = destination / relative
        if target.parent not in made:
            target.parent.mkdir(parents=True, exist_ok=True)
            made.add(target.parent)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
        fd = os.open(target, flags, EXECUTABLE_MODE if mode & 0o111 else FILE_MODE)
        with os.fdopen(fd, "wb") as out:
            for chunk in chunks:
                out.write(chunk)

    return read_entry_tar(stream, name, make_directory, write_file)
