"""What the archive holds for a partition, from one listing."""

from __future__ import annotations

from dataclasses import dataclass

from archiver.core.object_names import (
    ArchiveForm,
    Compression,
    parse_archive_name,
    partition_prefix,
)
from archiver.sinks import Sink


@dataclass(frozen=True)
class Archive:
    lsn: int
    key: str
    size: int
    compression: Compression
    encrypted: bool = False

    @property
    def form(self) -> ArchiveForm:
        return ArchiveForm(self.compression, self.encrypted)


def partition_archives(sink: Sink, storage: str, partition: int) -> list[Archive]:
    """Every archive object of a partition in LSN order; one listing, paginated by the sink."""
    archives = []
    for obj in sink.list(partition_prefix(storage, partition)):
        name = parse_archive_name(obj.key)
        if name is not None:
            archives.append(Archive(name.lsn, obj.key, obj.size, name.compression, name.encrypted))
    archives.sort(key=lambda a: (a.lsn, a.key))
    return archives
