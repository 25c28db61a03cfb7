"""What the archiver needs from an object store: write-once objects and ordered listings."""

from __future__ import annotations

import enum
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol


class SinkError(Exception):
    """The object store failed; the attempt is retried."""


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


class Sink(Protocol):
    def exists(self, key: str) -> bool: ...

    def write(self, key: str, chunks: Iterable[bytes]) -> WriteResult:
        """Store ``chunks`` under ``key`` unless an object is already there.

        Either the whole object appears or none does: a failed or aborted write leaves nothing.
        """
        ...

    def list(self, prefix: str) -> Iterator[StoredObject]:
        """Objects under ``prefix`` in key order, without temporary or partial objects."""
        ...

    def list_directories(self, prefix: str) -> Iterator[str]:
        """Names of the "directories" directly under ``prefix`` (which is empty or ends in /)."""
        ...

    def read(self, key: str) -> bytes: ...

    def sha256(self, key: str) -> str:
        """Hex SHA-256 of an object's bytes, read in bounded memory."""
        ...

    def describe(self) -> str:
        """Where the objects are, for people."""
        ...
