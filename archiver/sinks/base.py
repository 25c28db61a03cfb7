"""What the archiver needs from an object store: write-once objects with a recorded SHA-256,
ordered listings, streaming downloads that check what was recorded, and batch deletes."""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from archiver.core.encryption import Keyring
from archiver.core.integrity import Integrity, Recorded, judge

# Objects per delete request: the S3 limit.
DELETE_BATCH = 1000

# A fresh stream of an object's bytes each time it is called.
Source = Callable[[], Iterator[bytes]]


class Writable(Protocol):
    def write(self, data: bytes, /) -> object: ...


class Digest(Protocol):
    def update(self, data: bytes, /) -> None: ...


class WriteOutcome(enum.StrEnum):
    CREATED = "created"
    # The object was already there; it was not touched.
    ALREADY_EXISTS = "already_exists"


@dataclass(frozen=True)
class StoredObject:
    key: str
    size: int


@dataclass(frozen=True)
class WriteResult:
    outcome: WriteOutcome
    # Bytes written, or the existing object's size where known.
    size: int | None
    # SHA-256 of the bytes we wrote (whether or not they were stored).
    sha256: str


@dataclass(frozen=True)
class Download:
    size: int
    # SHA-256 of the bytes received.
    sha256: str
    # MD5 of the bytes received, computed only where no SHA-256 is recorded.
    md5: str | None
    # What the store recorded when the object was written.
    recorded: Recorded
    # The object's user metadata (an encrypted object's wrapped data key is there).
    metadata: Mapping[str, str] = field(default_factory=dict)

    def integrity(self) -> Integrity:
        return judge(self.recorded, self.sha256, self.md5)


class Sink(Protocol):
    # The keys that open the encrypted objects here, and seal new ones.
    keyring: Keyring

    def exists(self, key: str) -> bool: ...

    def write(
        self, key: str, source: Source, metadata: Mapping[str, str] | None = None
    ) -> WriteResult:
        """Store the bytes of ``source()`` under ``key`` unless an object is already there.

        Either the whole object appears, with its SHA-256 and ``metadata`` recorded, or none
        does: a failed or aborted write leaves nothing. ``source`` may be called more than
        once; every call must yield the same bytes.
        """
        ...

    def metadata(self, key: str) -> Mapping[str, str]:
        """The object's user metadata (the SHA-256 among it)."""
        ...

    def pending_metadata(self, key: str) -> Mapping[str, str] | None:
        """The metadata of a write of ``key`` cut off before its object appeared, where the
        store keeps it (a filesystem bucket's attributes, linked first); None elsewhere."""
        ...

    def replace_metadata(self, key: str, updates: Mapping[str, str]) -> None:
        """Set ``updates`` in the object's metadata, atomically, keeping its bytes and its
        recorded checksum: where the store cannot change metadata alone, by a copy of the
        object onto itself made by the store, never by uploading its bytes again."""
        ...

    def list(self, prefix: str) -> Iterator[StoredObject]:
        """Objects under ``prefix`` in key order, without temporary or partial objects."""
        ...

    def list_directories(self, prefix: str) -> Iterator[str]:
        """Names of the "directories" directly under ``prefix`` (which is empty or ends in /)."""
        ...

    def download(self, key: str, out: Writable) -> Download:
        """Stream an object into ``out``, hashing it on the way (the SHA-256 always, the MD5
        where the record holds no SHA-256)."""
        ...

    def recorded(self, key: str) -> Recorded:
        """What was recorded of the object's bytes when it was written."""
        ...

    def confirm_archived(self, key: str, download: Download | None) -> None:
        """Called when an existing object is accepted as an entry's archive: make it durable,
        and record the SHA-256 of ``download`` where the store can and none is recorded
        (an object written elsewhere). Never replaces a recorded checksum."""
        ...

    def delete(self, keys: Sequence[str]) -> None:
        """Delete up to DELETE_BATCH objects (and their attributes) in one request."""
        ...

    def leftovers(self, prefix: str) -> Sequence[str]:
        """Partial writes under ``prefix``: temporary files, incomplete multipart uploads."""
        ...

    def read(self, key: str) -> bytes: ...

    def probe(self) -> None:
        """Check that objects can be written here, once: the bucket or root is there and
        writable, and a second create of the same name is refused. Raises SinkError saying
        what is wrong. Leaves nothing that listings show."""
        ...

    def describe(self) -> str:
        """Where the objects are, for people."""
        ...


class _HashOnly:
    """A file that keeps nothing: downloads into it only hash."""

    def write(self, data: bytes) -> int:
        return len(data)


def hashed_download(sink: Sink, key: str) -> Download:
    """An object read whole and only hashed: its digests, record and metadata."""
    return sink.download(key, _HashOnly())


def computed_sha256(sink: Sink, key: str) -> str:
    return hashed_download(sink, key).sha256


class Digests:
    """The SHA-256 of a stream, and its MD5 when asked for."""

    def __init__(self, md5: bool) -> None:
        self._sha256 = hashlib.sha256()
        self._md5 = hashlib.md5(usedforsecurity=False) if md5 else None

    def update(self, data: bytes) -> None:
        self._sha256.update(data)
        if self._md5 is not None:
            self._md5.update(data)

    @property
    def sha256(self) -> str:
        return self._sha256.hexdigest()

    @property
    def md5(self) -> str | None:
        return None if self._md5 is None else self._md5.hexdigest()


def hashing(chunks: Iterator[bytes], digest: Digest) -> Iterator[bytes]:
    for chunk in chunks:
        digest.update(chunk)
        yield chunk
