"""Where an archived entry lives in a bucket: ``<storage>/<partition>/<lsn>.tar``."""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import NamedTuple

from archiver.core.lsn import format_lsn, parse_lsn
from archiver.errors import InvalidLSN, InvalidName

ARCHIVE_SUFFIX = ".tar"
MAX_NAME_LENGTH = 64
_STORAGE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
MAX_PARTITION = 2**64 - 1


# Names already found valid: a deployment has a handful, and the scheduler checks one per
# notification.
_valid_storages: set[str] = set()
_VALID_STORAGES_KEPT = 1024


def check_storage(storage: str) -> str:
    """Storage names become path and key components, so only a safe alphabet is allowed."""
    if type(storage) is str and storage in _valid_storages:
        return storage
    if not isinstance(storage, str) or not storage:
        raise InvalidName("storage name must be a non-empty string")
    if len(storage) > MAX_NAME_LENGTH:
        raise InvalidName(f"storage name longer than {MAX_NAME_LENGTH} characters")
    if not _STORAGE_NAME.fullmatch(storage) or ".." in storage:
        raise InvalidName(
            f"storage name {storage!r} must use letters, digits, '_', '.', '-' "
            "and start with a letter or digit"
        )
    if type(storage) is str and len(_valid_storages) < _VALID_STORAGES_KEPT:
        _valid_storages.add(storage)
    return storage


def check_partition(partition: int) -> int:
    """Partition ids are positive 64-bit integers, written in decimal in names."""
    if isinstance(partition, bool) or not isinstance(partition, int):
        raise InvalidName(f"partition id must be an integer, got {partition!r}")
    if not 1 <= partition <= MAX_PARTITION:
        raise InvalidName(f"partition id must be between 1 and 2**64-1, got {partition}")
    return partition


def parse_partition(text: str) -> int:
    text = text.strip()
    if not text.isascii() or not text.isdigit():
        raise InvalidName(f"partition id must be a positive decimal integer, got {text!r}")
    return check_partition(int(text))


class PartitionId(NamedTuple):
    """One partition of one storage: what most of the state store is keyed by."""

    storage: str
    partition: int

    def __str__(self) -> str:
        return f"{self.storage}/{self.partition}"


def partition_prefix(storage: str, partition: int) -> str:
    """The listing prefix of one partition; the trailing slash keeps 1 apart from 10."""
    return f"{check_storage(storage)}/{check_partition(partition)}/"


class Compression(enum.StrEnum):
    NONE = "none"
    ZSTD = "zstd"


SUFFIXES = {Compression.NONE: ARCHIVE_SUFFIX, Compression.ZSTD: ARCHIVE_SUFFIX + ".zst"}


@dataclass(frozen=True)
class ArchiveName:
    lsn: int
    compression: Compression


def archive_key(
    storage: str, partition: int, lsn: int, compression: Compression = Compression.NONE
) -> str:
    return f"{partition_prefix(storage, partition)}{format_lsn(lsn)}{SUFFIXES[compression]}"


def parse_archive_name(key: str) -> ArchiveName | None:
    """What an archive object's name says, or None for anything else (temp files, strays)."""
    name = key.rsplit("/", 1)[-1]
    for compression, suffix in SUFFIXES.items():
        if name.endswith(suffix):
            try:
                return ArchiveName(parse_lsn(name[: -len(suffix)]), compression)
            except InvalidLSN:
                return None
    return None


def archive_lsn(key: str) -> int | None:
    """The LSN of an archive object, or None for anything else."""
    parsed = parse_archive_name(key)
    return None if parsed is None else parsed.lsn
