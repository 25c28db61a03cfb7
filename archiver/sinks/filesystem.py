"""A bucket on a local or mounted filesystem.

Writes go to a hidden temporary file which is fsynced and then hard-linked to its final name:
the link fails if the name exists, so an archive is never overwritten, and a crash leaves at
most a hidden temporary file, which listings skip.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

from archiver.sinks.base import SinkError, StoredObject, WriteOutcome, WriteResult

TEMP_PREFIX = ".tmp-"


class FilesystemSink:
    def __init__(self, root: Path) -> None:
        if not root.is_absolute():
            raise ValueError(f"filesystem bucket path must be absolute: {root}")
        self.root = root

    def describe(self) -> str:
        return str(self.root)

    def _path(self, key: str) -> Path:
        parts = key.split("/")
        if any(p in ("", ".", "..") or p.startswith(TEMP_PREFIX) for p in parts):
            raise ValueError(f"unsafe object key {key!r}")
        return self.root.joinpath(*parts)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def write(self, key: str, chunks: Iterable[bytes]) -> WriteResult:
        final = self._path(key)
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SinkError(f"cannot create {final.parent}: {exc}") from exc
        temp = final.with_name(f"{TEMP_PREFIX}{final.name}.{uuid.uuid4().hex}")
        size = 0
        try:
            with open(temp, "xb") as f:
                for chunk in chunks:
                    f.write(chunk)
                    size += len(chunk)
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(temp, final)
            except FileExistsError:
                return WriteResult(WriteOutcome.ALREADY_EXISTS, final.stat().st_size)
            _fsync_directory(final.parent)
        except OSError as exc:
            raise SinkError(f"writing {final}: {exc}") from exc
        finally:
            with contextlib.suppress(FileNotFoundError):
                temp.unlink()
        return WriteResult(WriteOutcome.CREATED, size)

    def list(self, prefix: str) -> Iterator[StoredObject]:
        directory, _, name_prefix = prefix.rpartition("/")
        base = self._path(directory) if directory else self.root
        try:
            entries = sorted(os.scandir(base), key=lambda e: e.name)
        except FileNotFoundError:
            return
        for entry in entries:
            if entry.name.startswith(TEMP_PREFIX) or not entry.name.startswith(name_prefix):
                continue
            if entry.is_file(follow_symlinks=False):
                key = f"{directory}/{entry.name}" if directory else entry.name
                yield StoredObject(key, entry.stat(follow_symlinks=False).st_size)

    def sha256(self, key: str) -> str:
        try:
            with open(self._path(key), "rb") as f:
                return hashlib.file_digest(f, "sha256").hexdigest()
        except OSError as exc:
            raise SinkError(f"reading {key}: {exc}") from exc

    def list_directories(self, prefix: str) -> Iterator[str]:
        base = self._path(prefix.rstrip("/")) if prefix else self.root
        try:
            entries = sorted(os.scandir(base), key=lambda e: e.name)
        except FileNotFoundError:
            return
        for entry in entries:
            if entry.is_dir(follow_symlinks=False) and not entry.name.startswith(TEMP_PREFIX):
                yield entry.name

    def read(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except OSError as exc:
            raise SinkError(f"reading {key}: {exc}") from exc


def _fsync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
