"""Where a producer keeps a partition's entries: ``<storage root>/<partition>/wal/<lsn>/``.

Workers read entries from there, reconcile compares the archive with what is there, and the
reference producer writes there.
"""

from __future__ import annotations

import os
from pathlib import Path

from archiver.core.lsn import format_lsn, parse_lsn
from archiver.core.object_names import check_partition
from archiver.errors import InvalidLSN, UnsafeEntry


def wal_dir(storage_root: Path, partition: int) -> Path:
    return storage_root / str(check_partition(partition)) / "wal"


def entry_path(storage_root: Path, partition: int, lsn: int) -> Path:
    """Refused if it resolves outside the root (a symbolic link in the partition's path)."""
    path = wal_dir(storage_root, partition) / format_lsn(lsn)
    root = os.path.realpath(storage_root)
    resolved = os.path.realpath(path)
    if os.path.commonpath([root, resolved]) != root:
        raise UnsafeEntry(f"entry {path} resolves to {resolved}, outside storage root {root}")
    return path


def entries_on_disk(storage_root: Path, partition: int) -> list[int]:
    """LSNs of the complete entries on disk, oldest first (entries being written are hidden)."""
    try:
        names = os.listdir(wal_dir(storage_root, partition))
    except FileNotFoundError:
        return []
    lsns = []
    for name in names:
        try:
            lsns.append(parse_lsn(name))
        except InvalidLSN:
            continue
    return sorted(lsns)
