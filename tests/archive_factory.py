"""Filling a bucket with real archives, the way workers write them, for restore and verify."""

from __future__ import annotations

import random
from pathlib import Path

from archiver.core.object_names import Compression
from archiver.dev.producer import write_entry
from archiver.runtime.archiving import copy_entry
from archiver.sinks import FilesystemSink, Sink


def new_bucket(root: Path) -> FilesystemSink:
    """A filesystem bucket in a new directory (a bucket's root must exist)."""
    root.mkdir(parents=True, exist_ok=True)
    return FilesystemSink(root)


def entry_files(partition: int, lsn: int, size: int = 2000) -> dict[str, bytes]:
    rng = random.Random(partition * 100_003 + lsn)
    return {"MANIFEST": f"{partition} {lsn}\n".encode(), "objects/data": rng.randbytes(size)}


def archive_range(
    sink: Sink,
    root: Path,
    partition: int,
    lsns: range | list[int],
    storage: str = "default",
    compression: Compression = Compression.NONE,
    size: int = 2000,
) -> None:
    for lsn in lsns:
        write_entry(root, partition, lsn, entry_files(partition, lsn, size))
        copy_entry(sink, storage, root, partition, lsn, compression)
