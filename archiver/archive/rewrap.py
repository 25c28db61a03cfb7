"""Re-wrapping encrypted objects' data keys under the current key, so that an old key can be
retired. Only the wrapped key in an object's metadata changes, atomically (a rename of its
``.attrs`` file; on S3, a copy the store makes of the object onto itself): its bytes, and so
its checksum, stay as they are, and it opens under either key throughout."""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from archiver.archive.catalog import partition_archives
from archiver.archive.reconcile import partitions_in, storages_in
from archiver.core.encryption import KEY_ID_METADATA
from archiver.core.object_names import sealed_identity
from archiver.errors import ArchiverError, SinkError
from archiver.sinks import Sink


class RewrapOutcome(enum.StrEnum):
    REWRAPPED = "rewrapped"
    # Under the current key already: nothing to do.
    CURRENT = "current"
    # Its data key did not open, or the store refused: left as it was.
    LEFT = "left"


@dataclass(frozen=True)
class RewrapResult:
    key: str
    outcome: RewrapOutcome
    # The key it was wrapped with before.
    was: str | None
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "outcome": str(self.outcome),
            "was": self.was,
            "detail": self.detail,
        }


def rewrap_one(sink: Sink, key: str, apply: bool) -> RewrapResult:
    keyring = sink.keyring
    identity = sealed_identity(key)
    was = None
    try:
        metadata = sink.metadata(key)
        was = metadata.get(KEY_ID_METADATA)
        if was == keyring.current:
            return RewrapResult(key, RewrapOutcome.CURRENT, was)
        data_key = keyring.open_key(metadata, identity)
        if apply:
            wrapping = keyring.seal_key(data_key, identity)
            sink.replace_metadata(key, wrapping)
            # Read back: the store must hold the new wrapping (not the old one, which the old
            # key still opens), and it must open to the same data key.
            stored = sink.metadata(key)
            if any(stored.get(k) != v for k, v in wrapping.items()):
                return RewrapResult(
                    key, RewrapOutcome.LEFT, was, "read back, the old wrapping is still there"
                )
            if keyring.open_key(stored, identity) != data_key:
                return RewrapResult(key, RewrapOutcome.LEFT, was, "read back, it did not open")
    except SinkError as exc:
        return RewrapResult(key, RewrapOutcome.LEFT, was, f"the store: {exc}")
    except ArchiverError as exc:  # the key not given, or the wrapped key does not open
        return RewrapResult(key, RewrapOutcome.LEFT, was, str(exc))
    return RewrapResult(key, RewrapOutcome.REWRAPPED, was)


def rewrap_archives(
    sink: Sink,
    storage: str | None,
    partition: int | None,
    apply: bool,
    on_object: Callable[[RewrapResult], None] = lambda _r: None,
) -> Iterator[RewrapResult]:
    """Every encrypted archive of the selection not wrapped by the current key, re-wrapped
    (with ``apply``) or only looked at."""
    if sink.keyring.current is None:
        raise ArchiverError("no current encryption key is set (ARCHIVER_ENCRYPTION_KEY_ID)")
    for name in [storage] if storage else list(storages_in(sink)):
        partitions = [partition] if partition is not None else list(partitions_in(sink, name))
        for number in partitions:
            for archive in partition_archives(sink, name, number):
                if archive.encrypted:
                    result = rewrap_one(sink, archive.key, apply)
                    on_object(result)
                    yield result
