"""The Go original's side of a shared bucket, done as it does it: objects written through
go-cloud's fileblob (the tar, then ``<key>.attrs`` with its MD5, then a rename into place) or
S3's plain ``put_object``, and a partition listed as it lists one (every name but ``.attrs``,
``.tar`` stripped, parsed as a base-36 LSN; the first that fails ends the listing)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

from archiver.core.lsn import format_lsn
from archiver.core.tarball import entry_tar_chunks
from archiver.core.wal_layout import entry_path

_BASE36 = re.compile(r"[0-9a-zA-Z]+")


def entry_tar(storage_root: Path, partition: int, lsn: int) -> bytes:
    """The tar the original makes of an entry (its layout is the one the archiver writes)."""
    return b"".join(entry_tar_chunks(entry_path(storage_root, partition, lsn), format_lsn(lsn)))


def fileblob_attributes(data: bytes, **extra: Any) -> bytes:
    """What fileblob writes beside an object the original wrote: no metadata, only the MD5."""
    fields = {
        "user.cache_control": "",
        "user.content_disposition": "",
        "user.content_encoding": "",
        "user.content_language": "",
        "user.content_type": "application/octet-stream",
        "user.metadata": None,
        "md5": base64.b64encode(hashlib.md5(data).digest()).decode(),
        **extra,
    }
    return (json.dumps(fields, separators=(",", ":")) + "\n").encode()


def write_as_fileblob(bucket: Path, key: str, data: bytes) -> Path:
    """One object, the way fileblob writes it: attributes first, then the object renamed in."""
    path = bucket / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.with_name(path.name + ".attrs").write_bytes(fileblob_attributes(data))
    temp = path.with_name(f"{path.name}.{os.getpid():x}.tmp")
    temp.write_bytes(data)
    temp.rename(path)
    return path


def archive_as_original(
    bucket: Path, storage_root: Path, storage: str, partition: int, lsns: range | list[int]
) -> None:
    """Entries on the producer's disk archived by the original into a fileblob bucket."""
    for lsn in lsns:
        key = f"{storage}/{partition}/{format_lsn(lsn)}.tar"
        write_as_fileblob(bucket, key, entry_tar(storage_root, partition, lsn))


class OriginalListingFailed(Exception):
    """The original's listing met a name that is not an archive."""


def listed_by_original(bucket: Path, storage: str, partition: int) -> list[int]:
    """The LSNs the original finds in a partition of a filesystem bucket."""
    lsns = []
    for directory, _subdirectories, files in sorted(os.walk(bucket / storage / str(partition))):
        for name in sorted(files):
            if name.endswith(".attrs"):
                continue
            raw = name.removesuffix(".tar")
            if not _BASE36.fullmatch(raw):
                raise OriginalListingFailed(f"{Path(directory) / name}: not an LSN")
            lsns.append(int(raw, 36))
    return lsns
