"""Where an archived entry lives in a bucket: ``<storage>/<partition>/<lsn>.tar``, with
``.zst`` after it when compressed and ``.enc`` last when encrypted."""

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


ENCRYPTED_SUFFIX = ".enc"


@dataclass(frozen=True)
class ArchiveForm:
    """How an entry's tar is stored: compressed or not, then encrypted or not."""

    compression: Compression = Compression.NONE
    encrypted: bool = False

    @property
    def suffix(self) -> str:
        compressed = ".zst" if self.compression is Compression.ZSTD else ""
        return ARCHIVE_SUFFIX + compressed + (ENCRYPTED_SUFFIX if self.encrypted else "")


FORMS = tuple(ArchiveForm(c, e) for e in (False, True) for c in Compression)


@dataclass(frozen=True)
class ArchiveName:
    lsn: int
    compression: Compression
    encrypted: bool = False

    @property
    def form(self) -> ArchiveForm:
        return ArchiveForm(self.compression, self.encrypted)


def archive_key(
    storage: str,
    partition: int,
    lsn: int,
    compression: Compression = Compression.NONE,
    encrypted: bool = False,
) -> str:
    suffix = ArchiveForm(compression, encrypted).suffix
    return f"{partition_prefix(storage, partition)}{format_lsn(lsn)}{suffix}"


def form_key(storage: str, partition: int, lsn: int, form: ArchiveForm) -> str:
    return archive_key(storage, partition, lsn, form.compression, form.encrypted)


def sealed_identity(key: str) -> str:
    """What an encrypted object's data key is bound to: its name without the form's suffix,
    the same under every form and in every bucket (a mirror's too)."""
    for form in FORMS:
        if form.encrypted and key.endswith(form.suffix):
            return key[: -len(form.suffix)]
    return key


def parse_archive_name(key: str) -> ArchiveName | None:
    """What an archive object's name says, or None for anything else (temp files, strays)."""
    name = key.rsplit("/", 1)[-1]
    for form in FORMS:
        if name.endswith(form.suffix):
            try:
                return ArchiveName(
                    parse_lsn(name[: -len(form.suffix)]), form.compression, form.encrypted
                )
            except InvalidLSN:
                return None
    return None


def archive_lsn(key: str) -> int | None:
    """The LSN of an archive object, or None for anything else."""
    parsed = parse_archive_name(key)
    return None if parsed is None else parsed.lsn
