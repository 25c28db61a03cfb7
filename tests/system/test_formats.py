"""Archive formats through real workers: zstd compression, and partitions holding both kinds."""

from __future__ import annotations

from pathlib import Path

from archiver.archive.catalog import partition_archives
from archiver.archive.restore import restore_partition
from archiver.core.lsn import format_lsn
from archiver.core.object_names import Compression
from tests.support import System


def test_compression_can_be_switched_on_and_both_kinds_restore(
    system: System, tmp_path: Path
) -> None:
    plain_worker = system.start_worker()
    system.start_scheduler()
    for lsn in (1, 2):
        system.write(1, lsn, {"log": b"entry %d\n" % lsn * 5000})
    system.notify(1, 1, 2)
    system.wait_acked(1, 2)
    assert plain_worker.stop() == 0
    system.start_worker(env={"ARCHIVER_COMPRESSION": "zstd"})
    for lsn in (3, 4):
        system.write(1, lsn, {"log": b"entry %d\n" % lsn * 5000})
    system.notify(1, 1, 4)
    system.wait_acked(1, 4)
    archives = partition_archives(system.sink, "default", 1)
    assert [a.compression for a in archives] == [Compression.NONE] * 2 + [Compression.ZSTD] * 2
    assert archives[2].size < archives[0].size / 10
    summary = restore_partition(system.sink, "default", 1, tmp_path / "restored")
    assert summary.entries == 4
    for lsn in range(1, 5):
        restored = tmp_path / "restored" / format_lsn(lsn) / "log"
        assert restored.read_bytes() == system.written[(1, lsn)]["log"]
    system.assert_invariants()
