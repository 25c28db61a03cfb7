"""A bucket on a local or mounted filesystem.

Writes go to a hidden temporary file which is fsynced and then hard-linked to its final name:
the link fails if the name exists, so an archive is never overwritten, and a crash leaves at
most a hidden temporary file, which listings skip. The SHA-256 of each object is kept beside
it in ``<name>.sha256``.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

from archiver.errors import ConfigError, SinkError, SinkUnusable, WriteOnceUnsupported
from archiver.sinks.base import (
    CHECKSUM_SUFFIX,
    DELETE_BATCH,
    Digest,
    Download,
    Source,
    StoredObject,
    Writable,
    WriteOutcome,
    WriteResult,
)

TEMP_PREFIX = ".tmp-"
READ_SIZE = 1024 * 1024


class FilesystemSink:
    def __init__(self, root: Path) -> None:
        if not root.is_absolute():
            raise ConfigError(
                f"ARCHIVER_SINK_URL: a filesystem bucket path must be absolute: {root}"
            )
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

    def _write_temp(self, final: Path, chunks: Iterator[bytes], digest: Digest) -> tuple[Path, int]:
        temp = final.with_name(f"{TEMP_PREFIX}{final.name}.{uuid.uuid4().hex}")
        size = 0
        try:
            with open(temp, "xb") as f:
                for chunk in chunks:
                    f.write(chunk)
                    digest.update(chunk)
                    size += len(chunk)
                f.flush()
                os.fsync(f.fileno())
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                temp.unlink()
            raise
        return temp, size

    def write(self, key: str, source: Source) -> WriteResult:
        final = self._path(key)
        digest = hashlib.sha256()
        self._require_root()
        try:
            _make_directories(final.parent, self.root)
            temp, size = self._write_temp(final, source(), digest)
            try:
                os.link(temp, final)
            except FileExistsError:
                return WriteResult(
                    WriteOutcome.ALREADY_EXISTS, final.stat().st_size, digest.hexdigest()
                )
            finally:
                temp.unlink()
            # The object's name is durable before anything can acknowledge it.
            _fsync_directory(final.parent)
            self._record(final, digest.hexdigest())
        except OSError as exc:
            raise SinkError(f"writing {final}: {exc}") from exc
        return WriteResult(WriteOutcome.CREATED, size, digest.hexdigest())

    def _record(self, final: Path, sha256: str) -> None:
        """Write the checksum file atomically beside the object."""
        sidecar = final.with_name(final.name + CHECKSUM_SUFFIX)
        temp = sidecar.with_name(f"{TEMP_PREFIX}{sidecar.name}.{uuid.uuid4().hex}")
        with open(temp, "x") as f:
            f.write(sha256 + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, sidecar)
        _fsync_directory(final.parent)

    def recorded_sha256(self, key: str) -> str | None:
        try:
            text = self._path(key + CHECKSUM_SUFFIX).read_text().strip()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise SinkError(f"reading checksum of {key}: {exc}") from exc
        return text or None

    def confirm_archived(self, key: str, sha256: str | None) -> None:
        try:
            final = self._path(key)
            if sha256 is not None and self.recorded_sha256(key) is None:
                self._record(final, sha256)
            # Another writer's link may not be durable yet: make it so before we acknowledge.
            _fsync_directory(final.parent)
            _fsync_directory(final.parent.parent)
        except OSError as exc:
            raise SinkError(f"confirming {key}: {exc}") from exc

    def _scan(self, prefix: str, hidden: bool) -> Iterator[tuple[str, os.DirEntry[str]]]:
        directory, _, name_prefix = prefix.rpartition("/")
        base = self._path(directory) if directory else self.root
        try:
            entries = sorted(os.scandir(base), key=lambda e: e.name)
        except FileNotFoundError:
            return
        for entry in entries:
            if entry.name.startswith(TEMP_PREFIX) != hidden:
                continue
            if entry.name.startswith(name_prefix) and entry.is_file(follow_symlinks=False):
                yield (f"{directory}/{entry.name}" if directory else entry.name), entry

    def list(self, prefix: str) -> Iterator[StoredObject]:
        for key, entry in self._scan(prefix, hidden=False):
            yield StoredObject(key, entry.stat(follow_symlinks=False).st_size)

    def leftovers(self, prefix: str) -> Sequence[str]:
        return [key for key, _entry in self._scan(prefix, hidden=True)]

    def list_directories(self, prefix: str) -> Iterator[str]:
        base = self._path(prefix.rstrip("/")) if prefix else self.root
        try:
            entries = sorted(os.scandir(base), key=lambda e: e.name)
        except FileNotFoundError:
            return
        for entry in entries:
            if entry.is_dir(follow_symlinks=False) and not entry.name.startswith(TEMP_PREFIX):
                yield entry.name

    def download(self, key: str, out: Writable) -> Download:
        digest = hashlib.sha256()
        size = 0
        try:
            with open(self._path(key), "rb") as f:
                while chunk := f.read(READ_SIZE):
                    digest.update(chunk)
                    out.write(chunk)
                    size += len(chunk)
        except OSError as exc:
            raise SinkError(f"reading {key}: {exc}") from exc
        return Download(size, digest.hexdigest(), self.recorded_sha256(key))

    def read(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except OSError as exc:
            raise SinkError(f"reading {key}: {exc}") from exc

    def _require_root(self) -> None:
        """The bucket's root must be there: made on the spot, it could stand on the local disk
        under a volume that is not mounted, and what it holds would vanish when it is."""
        try:
            is_dir = self.root.is_dir()
        except OSError as exc:  # a stale network mount, say
            raise SinkError(f"filesystem bucket {self.root} cannot be read: {exc}") from exc
        if not is_dir:
            raise SinkUnusable(
                f"filesystem bucket {self.root} is not a directory: create it (or mount its "
                "volume) first"
            )

    def probe(self) -> None:
        self._require_root()
        name = f"{TEMP_PREFIX}probe-{uuid.uuid4().hex}"
        temp, linked = self.root / name, self.root / f"{name}.linked"
        try:
            temp.write_bytes(b"probe\n")
            os.link(temp, linked)
            try:
                os.link(temp, linked)
            except FileExistsError:
                return
            raise WriteOnceUnsupported(
                f"filesystem bucket {self.root}: a second link to one name succeeded"
            )
        except (PermissionError, FileNotFoundError) as exc:
            raise SinkUnusable(f"filesystem bucket {self.root} is not writable: {exc}") from exc
        except OSError as exc:
            unusable = SinkUnusable if exc.errno == errno.EROFS else SinkError
            raise unusable(f"filesystem bucket {self.root} is not writable: {exc}") from exc
        finally:
            for path in (linked, temp):
                with contextlib.suppress(OSError):
                    path.unlink()

    def delete(self, keys: Sequence[str]) -> None:
        if len(keys) > DELETE_BATCH:
            raise ValueError(f"at most {DELETE_BATCH} keys per delete")
        for key in keys:
            # The object first: a crash in between leaves a checksum without an object, which
            # listings skip, rather than an object without a checksum, which stops a restore.
            for path in (self._path(key), self._path(key + CHECKSUM_SUFFIX)):
                try:
                    path.unlink(missing_ok=True)
                except OSError as exc:
                    raise SinkError(f"deleting {key}: {exc}") from exc


def _make_directories(path: Path, root: Path) -> None:
    """mkdir -p below ``root``, with each new directory's entry made durable in its parent.
    The root itself is never made: gone since it was checked, it is a volume unmounted."""
    missing = []
    while not path.is_dir():
        if path == root or root not in path.parents:
            raise SinkUnusable(f"filesystem bucket {root} is not a directory any more")
        missing.append(path)
        path = path.parent
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):
            directory.mkdir()
        _fsync_directory(directory.parent)


def _fsync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
