"""What the archive holds for a partition, from one listing."""

from __future__ import annotations

from dataclasses import dataclass
from typing import IO, BinaryIO, cast

from archiver.core.object_names import (
    ArchiveForm,
    Compression,
    parse_archive_name,
    partition_prefix,
)
from archiver.core.object_stream import opened_tar
from archiver.sinks import Download, Sink


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


def opened_archive(sink: Sink, archive: Archive, raw: IO[bytes], download: Download) -> BinaryIO:
    """The tar in ``archive``, whose bytes ``download`` put in ``raw`` (rewound): decrypted
    with the sink's keys where it is sealed, decompressed where compressed. Read it to its
    end (``read_to_end``) for the last chunk and checksum to be checked."""
    return opened_tar(
        cast(BinaryIO, raw), archive.key, archive.form, download.metadata, sink.keyring
    )
