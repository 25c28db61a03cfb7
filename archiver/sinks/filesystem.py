"""A bucket on a local or mounted filesystem, in the layout of go-cloud's ``fileblob`` driver,
so that the Go original reads what is written here and the other way round.

An object is written to a hidden temporary file, fsynced, and hard-linked to its name: the
link fails if the name exists, so an archive is never overwritten, and a crash leaves at most
a hidden temporary file, which listings skip. Its attributes (``<name>.attrs``: the SHA-256
and the MD5) are written before that link and claimed create-once too, and only a writer whose
bytes they describe links the object: no object appears with attributes that do not match it
(attributes left without their object by an interrupted write are replaced once they are an
hour old). One fsync of the directory then makes both names durable before anything is
acknowledged. A crash before it could, on a filesystem that reorders directory updates, keep
the object but not its attributes; the entry was not acknowledged, so its retry compares the
object with the entry and records them (``confirm_archived``).

``<name>.sha256`` files written by earlier releases are still read; ``archiver
migrate-sidecars`` turns them into attributes.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import logging
import os
import re
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path

from archiver.core.encryption import WRAPPED_KEY_METADATA, Keyring
from archiver.core.integrity import Recorded
from archiver.errors import (
    ConfigError,
    SinkError,
    SinkUnusable,
    WriteOnceUnsupported,
    WriteUnderWay,
)
from archiver.sinks.attributes import (
    ATTRIBUTES_SUFFIX,
    metadata_in,
    new_attributes,
    recorded_in,
    with_checksums,
    with_metadata,
)
from archiver.sinks.base import (
    DELETE_BATCH,
    Digests,
    Download,
    Source,
    StoredObject,
    Writable,
    WriteOutcome,
    WriteResult,
    hashing,
)

TEMP_PREFIX = ".tmp-"
# The checksum files of earlier releases: ``<name>.sha256``, holding the hex SHA-256.
LEGACY_CHECKSUM_SUFFIX = ".sha256"
# fileblob's temporary files when they are made beside the object: <name>.<hex time>.tmp
_FILEBLOB_TEMPORARY = re.compile(r".+\.[0-9a-f]+\.tmp")
READ_SIZE = 1024 * 1024
# Attributes without their object older than this are an interrupted write's: a writer makes
# its attributes and links its object a few system calls apart, and an attempt that stalls in
# between is ended by ARCHIVER_TASK_TIME_LIMIT_SECONDS (30 minutes by default) long before.
STALE_ATTRIBUTES_SECONDS = 3600

log = logging.getLogger(__name__)


def is_temporary(name: str) -> bool:
    return name.startswith(TEMP_PREFIX) or _FILEBLOB_TEMPORARY.fullmatch(name) is not None


def is_sidecar(name: str) -> bool:
    """An object's attributes, or an older release's checksum file: never an object."""
    return name.endswith(ATTRIBUTES_SUFFIX) or name.endswith(LEGACY_CHECKSUM_SUFFIX)


def _attributes_path(final: Path) -> Path:
    return final.with_name(final.name + ATTRIBUTES_SUFFIX)


def _legacy_checksum_path(final: Path) -> Path:
    return final.with_name(final.name + LEGACY_CHECKSUM_SUFFIX)


# fileblob cannot read an empty attributes file either.
_EMPTY_ATTRIBUTES = Recorded(damaged="its .attrs file is empty")


class LegacyMigration(enum.StrEnum):
    """What became of an earlier release's checksum file."""

    # Its checksum is in the object's attributes now (or would be, in a dry run).
    MIGRATED = "migrated"
    # Its object was gone: it was removed.
    REMOVED = "removed"
    # It does not match the object, or the attributes disagree: left for an operator.
    LEFT = "left"


class _Claim(enum.Enum):
    # This write made the attributes file.
    MADE = enum.auto()
    # One was there already, describing the same bytes (an interrupted or racing write).
    SHARED = enum.auto()
    # The object is there already.
    OBJECT_EXISTS = enum.auto()


class FilesystemSink:
    def __init__(self, root: Path, keyring: Keyring | None = None) -> None:
        if not root.is_absolute():
            raise ConfigError(
                f"ARCHIVER_SINK_URL: a filesystem bucket path must be absolute: {root}"
            )
        self.root = root
        self.keyring = keyring or Keyring()

    def describe(self) -> str:
        return str(self.root)

    def _path(self, key: str) -> Path:
        parts = key.split("/")
        name = parts[-1]
        if any(p in ("", ".", "..") or p.startswith(TEMP_PREFIX) for p in parts) or (
            is_temporary(name) or is_sidecar(name)
        ):
            raise ValueError(f"unsafe object key {key!r}")
        return self.root.joinpath(*parts)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def write(
        self, key: str, source: Source, metadata: Mapping[str, str] | None = None
    ) -> WriteResult:
        final = self._path(key)
        digests = Digests(md5=True)
        self._require_root()
        try:
            _make_directories(final.parent, self.root)
            temp, size = _fsynced_temporary(final, hashing(source(), digests))
            sha256, md5 = digests.sha256, digests.md5 or ""
            try:
                if os.path.lexists(final):
                    return WriteResult(WriteOutcome.ALREADY_EXISTS, final.stat().st_size, sha256)
                attributes = new_attributes(key, sha256, md5, metadata)
                claim = self._claim_attributes(final, attributes, sha256)
                if claim is _Claim.OBJECT_EXISTS:
                    return WriteResult(WriteOutcome.ALREADY_EXISTS, final.stat().st_size, sha256)
                try:
                    os.link(temp, final)
                except FileExistsError:
                    if claim is _Claim.MADE:
                        self._describe_what_is_there(final, key)
                    return WriteResult(WriteOutcome.ALREADY_EXISTS, final.stat().st_size, sha256)
            finally:
                temp.unlink()
            if (
                claim is _Claim.MADE
                and recorded_in(_read_or_empty(_attributes_path(final))).sha256 != sha256
            ):
                # Replaced meanwhile by a write that took ours for an interrupted one: the
                # object is ours, and so are its attributes.
                _replace_small_file(_attributes_path(final), attributes)
            # Both names are durable before anything can acknowledge the object.
            _fsync_directory(final.parent)
            if claim is _Claim.SHARED:
                self._add_checksums(final, key, sha256, md5)
        except OSError as exc:
            raise SinkError(f"writing {final}: {exc}") from exc
        return WriteResult(WriteOutcome.CREATED, size, sha256)

    def _claim_attributes(self, final: Path, attributes: bytes, sha256: str) -> _Claim:
        """Link the object's attributes into place, unless some are there. Those of another
        write of other bytes, with no object, are that write's until it links its object or
        they are STALE_ATTRIBUTES_SECONDS old: then they are an interrupted write's (or an
        object moved aside without them), and are replaced."""
        path = _attributes_path(final)
        temp = _write_small_file(path, attributes)
        try:
            # The bucket's own clock (a network filesystem's server's), to age what is there.
            now = temp.stat().st_mtime
            os.link(temp, path)
            return _Claim.MADE
        except FileExistsError:
            pass
        finally:
            temp.unlink()
        if os.path.lexists(final):
            return _Claim.OBJECT_EXISTS
        there = recorded_in(_read_or_none(path) or b"")
        if there.damaged is None and (
            there.sha256 == sha256
            or (there.sha256 is None and there.md5 == recorded_in(attributes).md5)
        ):
            return _Claim.SHARED
        try:
            age = now - path.stat().st_mtime
        except FileNotFoundError:  # its write gave up meanwhile: try again
            raise WriteUnderWay(f"{path} came and went while this write claimed it") from None
        if age < STALE_ATTRIBUTES_SECONDS:
            raise WriteUnderWay(
                f"{path} is there without its object and describes other bytes (SHA-256 "
                f"{there.sha256 or 'none'}; this entry's is {sha256}): another write of this "
                f"name is under way, or was cut off {age:.0f} s ago. Retried; such attributes "
                f"are replaced once {STALE_ATTRIBUTES_SECONDS // 60} minutes old"
            )
        log.warning(
            "replacing attributes left without their object by an interrupted write "
            "path=%s recorded_sha256=%s age_seconds=%.0f",
            path,
            there.sha256,
            age,
        )
        if os.path.lexists(final):
            return _Claim.OBJECT_EXISTS
        _replace_small_file(path, attributes)
        return _Claim.MADE

    def _describe_what_is_there(self, final: Path, key: str) -> None:
        """This write made the attributes, but the object's name went to a writer that makes
        none (an earlier release, another tool): make them describe the object that is there."""
        path = _attributes_path(final)
        if WRAPPED_KEY_METADATA in metadata_in(_read_or_empty(path)):
            # Attributes made for an encrypted object: only its own writer knows its data key,
            # and rewrites them once its object is linked. Made anew, they could not open it.
            return
        digests = Digests(md5=True)
        with open(final, "rb") as f:
            while chunk := f.read(READ_SIZE):
                digests.update(chunk)
        if recorded_in(_read_or_empty(path)).sha256 != digests.sha256:
            _replace_small_file(path, new_attributes(key, digests.sha256, digests.md5 or ""))
            _fsync_directory(final.parent)

    def _add_checksums(self, final: Path, key: str, sha256: str, md5: str) -> None:
        """Record the SHA-256 (and the MD5, if missing) in the object's attributes, keeping
        whatever else they hold; made if there are none."""
        path = _attributes_path(final)
        existing = _read_or_empty(path)
        if existing and recorded_in(existing).sha256 is not None:
            return
        updated = with_checksums(existing, key, sha256, md5) if existing else None
        _replace_small_file(path, updated or new_attributes(key, sha256, md5))
        _fsync_directory(final.parent)

    def recorded(self, key: str) -> Recorded:
        final = self._path(key)
        try:
            attributes = _read_or_none(_attributes_path(final))
            legacy_file = _read_or_none(_legacy_checksum_path(final))
        except OSError as exc:
            raise SinkError(f"reading the attributes of {key}: {exc}") from exc
        legacy = None if legacy_file is None else legacy_file.decode(errors="replace").strip()
        if attributes is not None:
            recorded = recorded_in(attributes) if attributes else _EMPTY_ATTRIBUTES
            if recorded.damaged is not None or not legacy:
                return recorded
            if recorded.sha256 is None:
                return Recorded(legacy, recorded.md5)
            if recorded.sha256 != legacy:
                return replace(recorded, other_sha256=legacy)
            return recorded
        if legacy:
            return Recorded(sha256=legacy)
        return Recorded(missing=f"no checksum was recorded for it (no {final.name}.attrs)")

    def confirm_archived(self, key: str, download: Download | None) -> None:
        try:
            final = self._path(key)
            if download is not None and download.recorded.sha256 is None:
                md5 = download.md5 or download.recorded.md5 or ""
                self._add_checksums(final, key, download.sha256, md5)
            # Another writer's link may not be durable yet: make it so before we acknowledge.
            _fsync_directory(final.parent)
            _fsync_directory(final.parent.parent)
        except OSError as exc:
            raise SinkError(f"confirming {key}: {exc}") from exc

    def _scan(self, prefix: str) -> Iterator[tuple[str, os.DirEntry[str]]]:
        directory, _, name_prefix = prefix.rpartition("/")
        base = self._path(directory) if directory else self.root
        try:
            entries = sorted(os.scandir(base), key=lambda e: e.name)
        except FileNotFoundError:
            return
        for entry in entries:
            if entry.name.startswith(name_prefix) and entry.is_file(follow_symlinks=False):
                yield (f"{directory}/{entry.name}" if directory else entry.name), entry

    def list(self, prefix: str) -> Iterator[StoredObject]:
        for key, entry in self._scan(prefix):
            name = entry.name
            if not (is_temporary(name) or is_sidecar(name)):
                yield StoredObject(key, entry.stat(follow_symlinks=False).st_size)

    def leftovers(self, prefix: str) -> Sequence[str]:
        """Temporary files, and attributes whose object is not there (a write or a delete
        that was interrupted)."""
        found = []
        names = set()
        attributes = []
        for key, entry in self._scan(prefix):
            names.add(entry.name)
            if is_temporary(entry.name):
                found.append(key)
            elif entry.name.endswith(ATTRIBUTES_SUFFIX):
                attributes.append((key, entry.name))
        for key, name in attributes:
            if name.removesuffix(ATTRIBUTES_SUFFIX) not in names:
                found.append(f"{key} (attributes without their object)")
        return sorted(found)

    def legacy_checksums(self, prefix: str) -> Iterator[str]:
        """Keys of the objects (there or not) with a checksum file of an earlier release."""
        for key, entry in self._scan(prefix):
            if entry.name.endswith(LEGACY_CHECKSUM_SUFFIX) and not is_temporary(entry.name):
                yield key.removesuffix(LEGACY_CHECKSUM_SUFFIX)

    def migrate_legacy_checksum(self, key: str, apply: bool) -> tuple[LegacyMigration, str]:
        """Turn the ``.sha256`` file of ``key`` into its attributes (with ``apply``; else only
        say what would happen). The object is read whole first: a checksum file that does not
        match it is left as it is, for an operator; attributes that describe other bytes than
        the object and its checksum file are rewritten from the object. Failures are the key's
        outcome, not the run's end."""
        try:
            final = self._path(key)
        except ValueError as exc:
            return LegacyMigration.LEFT, f"not an object's name ({exc})"
        try:
            return self._migrate(final, key, apply)
        except OSError as exc:
            return LegacyMigration.LEFT, f"could not be migrated: {exc}"

    def _migrate(self, final: Path, key: str, apply: bool) -> tuple[LegacyMigration, str]:
        legacy_path = _legacy_checksum_path(final)
        legacy_file = _read_or_none(legacy_path)
        if legacy_file is None:
            return LegacyMigration.REMOVED, "it went meanwhile"
        legacy = legacy_file.decode(errors="replace").strip()
        if not final.is_file():
            if apply:
                _unlink_if_unchanged(legacy_path, legacy_file)
                _fsync_directory(final.parent)
            return LegacyMigration.REMOVED, "its object is gone"
        digests = Digests(md5=True)
        with open(final, "rb") as f:
            while chunk := f.read(READ_SIZE):
                digests.update(chunk)
        sha256, md5 = digests.sha256, digests.md5 or ""
        if legacy != sha256:
            return LegacyMigration.LEFT, f"SHA-256 {sha256} does not match recorded {legacy}"
        attributes_path = _attributes_path(final)
        attributes = _read_or_none(attributes_path)
        there = None if attributes is None else recorded_in(attributes)
        wrong = there is not None and (
            there.damaged is not None
            or there.sha256 not in (None, sha256)
            or there.md5 not in (None, md5)
        )
        detail = "its .attrs file described other bytes: written again from the object"
        if not apply:
            return LegacyMigration.MIGRATED, detail if wrong else ""
        if there is None:
            temp = _write_small_file(attributes_path, new_attributes(key, sha256, md5))
            try:
                os.link(temp, attributes_path)
            except FileExistsError:
                return LegacyMigration.LEFT, "attributes appeared meanwhile: run it again"
            finally:
                temp.unlink()
        elif wrong:
            _replace_small_file(attributes_path, new_attributes(key, sha256, md5))
        elif there.sha256 is None and attributes is not None:
            _replace_small_file(attributes_path, with_checksums(attributes, key, sha256, md5))
        # The attributes are durable before the file they replace goes.
        _fsync_directory(final.parent)
        _unlink_if_unchanged(legacy_path, legacy_file)
        _fsync_directory(final.parent)
        return LegacyMigration.MIGRATED, detail if wrong else ""

    def list_directories(self, prefix: str) -> Iterator[str]:
        base = self._path(prefix.rstrip("/")) if prefix else self.root
        try:
            entries = sorted(os.scandir(base), key=lambda e: e.name)
        except FileNotFoundError:
            return
        for entry in entries:
            if entry.is_dir(follow_symlinks=False) and not entry.name.startswith(TEMP_PREFIX):
                yield entry.name

    def metadata(self, key: str) -> Mapping[str, str]:
        try:
            return metadata_in(_read_or_none(_attributes_path(self._path(key))) or b"")
        except OSError as exc:
            raise SinkError(f"reading the attributes of {key}: {exc}") from exc

    def pending_metadata(self, key: str) -> Mapping[str, str] | None:
        final = self._path(key)
        try:
            if os.path.lexists(final):
                return None
            attributes = _read_or_none(_attributes_path(final))
        except OSError as exc:
            raise SinkError(f"reading the attributes of {key}: {exc}") from exc
        return None if attributes is None else metadata_in(attributes)

    def replace_metadata(self, key: str, updates: Mapping[str, str]) -> None:
        final = self._path(key)
        path = _attributes_path(final)
        try:
            if not final.is_file():
                raise SinkError(f"{key} is not there")
            existing = _read_or_none(path)
            if existing is None:
                raise SinkError(f"{key} has no attributes to update")
            _replace_small_file(path, with_metadata(existing, updates))
            _fsync_directory(final.parent)
        except OSError as exc:
            raise SinkError(f"updating the attributes of {key}: {exc}") from exc
        except ValueError as exc:
            raise SinkError(f"the attributes of {key} cannot be read: {exc}") from exc

    def download(self, key: str, out: Writable) -> Download:
        recorded = self.recorded(key)
        metadata = self.metadata(key)
        digests = Digests(md5=recorded.needs_md5)
        size = 0
        try:
            with open(self._path(key), "rb") as f:
                while chunk := f.read(READ_SIZE):
                    digests.update(chunk)
                    out.write(chunk)
                    size += len(chunk)
        except OSError as exc:
            raise SinkError(f"reading {key}: {exc}") from exc
        return Download(size, digests.sha256, digests.md5, recorded, metadata)

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
            # The object first: a crash in between leaves attributes without an object, which
            # listings skip, rather than an object without attributes, which stops a restore.
            final = self._path(key)
            for path in (final, _attributes_path(final), _legacy_checksum_path(final)):
                try:
                    path.unlink(missing_ok=True)
                except OSError as exc:
                    raise SinkError(f"deleting {key}: {exc}") from exc


def _read_or_empty(path: Path) -> bytes:
    return _read_or_none(path) or b""


def _read_or_none(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def _unlink_if_unchanged(path: Path, content: bytes) -> None:
    """Remove a file unless it now holds something other than ``content``."""
    if _read_or_none(path) == content:
        path.unlink(missing_ok=True)


def _fsynced_temporary(beside: Path, chunks: Iterable[bytes]) -> tuple[Path, int]:
    """A hidden temporary file in ``beside``'s directory holding ``chunks``, fsynced; and its
    size. Nothing is left if writing it fails."""
    temp = beside.with_name(f"{TEMP_PREFIX}{beside.name}.{uuid.uuid4().hex}")
    size = 0
    try:
        with open(temp, "xb") as f:
            for chunk in chunks:
                f.write(chunk)
                size += len(chunk)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()
        raise
    return temp, size


def _write_small_file(beside: Path, data: bytes) -> Path:
    return _fsynced_temporary(beside, [data])[0]


def _replace_small_file(path: Path, data: bytes) -> None:
    os.replace(_write_small_file(path, data), path)


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
