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
from collections.abc import Iterator
from pathlib import Path

BLOCK_SIZE = tarfile.BLOCKSIZE
READ_SIZE = 1024 * 1024
FILE_MODE = 0o666
EXECUTABLE_MODE = 0o777
DIRECTORY_MODE = 0o777


class EntryError(Exception):
    """The entry directory cannot be archived as it is; the attempt fails and is retried."""


class EntryMissing(EntryError):
    pass


class UnsafeEntry(EntryError):
    """Something other than regular files and directories; refused, never followed."""


class EntryChanged(EntryError):
    """A file changed size while it was being read."""


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
        st = os.lstat(entry_dir)
    except FileNotFoundError as exc:
        raise EntryMissing(f"entry directory {entry_dir} does not exist") from exc
    if not stat.S_ISDIR(st.st_mode):
        raise UnsafeEntry(f"{entry_dir} is not a directory")
    yield from _directory_chunks(entry_dir, name)
    yield b"\0" * (2 * BLOCK_SIZE)
