"""Moving a filesystem bucket from the ``<name>.sha256`` checksum files of earlier releases to
``<name>.attrs`` attributes, after which the Go original can list it: its listing stops at any
file beside the objects other than attributes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from archiver.archive.reconcile import partitions_in, storages_in
from archiver.core.object_names import partition_prefix
from archiver.sinks.filesystem import FilesystemSink, LegacyMigration


@dataclass(frozen=True)
class MigratedChecksum:
    key: str
    outcome: LegacyMigration
    # Why it was left or removed.
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "outcome": str(self.outcome), "detail": self.detail}


def legacy_checksums(sink: FilesystemSink, storage: str | None) -> Iterator[str]:
    """Keys with an earlier release's checksum file, partition by partition."""
    for name in [storage] if storage else list(storages_in(sink)):
        for partition in partitions_in(sink, name):
            yield from sink.legacy_checksums(partition_prefix(name, partition))


def migrate_sidecars(
    sink: FilesystemSink,
    storage: str | None,
    apply: bool,
    on_key: Callable[[], None] = lambda: None,
) -> list[MigratedChecksum]:
    """Every checksum file's outcome; without ``apply`` nothing changes."""
    results = []
    for key in legacy_checksums(sink, storage):
        outcome, detail = sink.migrate_legacy_checksum(key, apply)
        results.append(MigratedChecksum(key, outcome, detail))
        on_key()
    return results
