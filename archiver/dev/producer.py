"""A reference producer: writes WAL entries, announces them, and prunes acknowledged ones.

It stands in for a storage node's partition log manager in the demo, tests and benchmarks, and
follows the same rule: an entry is deleted only once the archiver has acknowledged it.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from pathlib import Path

from archiver.core.lsn import format_lsn
from archiver.core.notification import Notification
from archiver.core.wal_layout import entries_on_disk, wal_dir
from archiver.store.streams import Streams

# Beside a partition's wal/ directory: its newest LSN, so that a restarted producer goes on.
HIGH_FILE = "high"


def write_entry(storage_root: Path, partition: int, lsn: int, files: Mapping[str, bytes]) -> Path:
    """Write one entry atomically: a hidden directory, renamed into place when complete."""
    wal = wal_dir(storage_root, partition)
    wal.mkdir(parents=True, exist_ok=True)
    final = wal / format_lsn(lsn)
    temp = wal / f".tmp-{format_lsn(lsn)}-{os.getpid()}"
    shutil.rmtree(temp, ignore_errors=True)
    for name, data in files.items():
        path = temp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    temp.mkdir(exist_ok=True)
    os.rename(temp, final)
    return final


def _write_high(storage_root: Path, partition: int, lsn: int) -> None:
    path = wal_dir(storage_root, partition).parent / HIGH_FILE
    temp = path.with_name(f".{HIGH_FILE}.{os.getpid()}")
    temp.write_text(str(lsn))
    os.replace(temp, path)


class ReferenceLogManager:
    def __init__(self, storage: str, root: Path, streams: Streams, acks_after: str = "0") -> None:
        self.storage = storage
        self.root = root
        self.streams = streams
        self._acks_after = acks_after
        # The newest LSN written per partition.
        self.high: dict[int, int] = {}
        # The newest LSN acknowledged per partition.
        self.acknowledged: dict[int, int] = {}

    def append(self, partition: int, files: Mapping[str, bytes], notify: bool = True) -> int:
        lsn = self.high.get(partition, 0) + 1
        write_entry(self.root, partition, lsn, files)
        self.high[partition] = lsn
        _write_high(self.root, partition, lsn)
        if notify:
            self.notify(partition)
        return lsn

    def resume(self, partition: int) -> int:
        """Continue a partition written by an earlier run; returns its newest LSN (0 if new).
        An LSN is never reused, even after every entry was acknowledged and deleted."""
        try:
            high = int((wal_dir(self.root, partition).parent / HIGH_FILE).read_text())
        except FileNotFoundError:
            high = 0
        on_disk = entries_on_disk(self.root, partition)
        self.high[partition] = max(high, on_disk[-1] if on_disk else 0)
        return self.high[partition]

    def start_at(self, partition: int, lsn: int) -> None:
        """Make the next appended entry of ``partition`` have LSN ``lsn``."""
        self.high[partition] = lsn - 1

    def notify(self, partition: int) -> Notification | None:
        on_disk = entries_on_disk(self.root, partition)
        if not on_disk:
            return None
        notification = Notification(self.storage, partition, on_disk[0], self.high[partition])
        self.streams.publish_notification(notification)
        return notification

    def process_acks(self, block_ms: int | None = None) -> int:
        """Read new acknowledgements and delete every entry they cover; returns entries deleted."""
        self._acks_after, acks = self.streams.read_acks(self._acks_after, block_ms=block_ms)
        deleted = 0
        for ack in acks:
            if ack.storage != self.storage:
                continue
            if ack.lsn > self.acknowledged.get(ack.partition, 0):
                self.acknowledged[ack.partition] = ack.lsn
            for lsn in entries_on_disk(self.root, ack.partition):
                if lsn > ack.lsn:
                    break
                shutil.rmtree(wal_dir(self.root, ack.partition) / format_lsn(lsn))
                deleted += 1
        return deleted
