"""Moving between the Go original and this fleet on one filesystem bucket, through real
workers: the fleet adopts the archive the original wrote (reconcile, then archiving goes on
where the original stopped, nothing uploaded again), and the original, rolled back to, lists
everything the fleet wrote."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from click.testing import CliRunner, Result

from archiver.cli import main
from archiver.core.object_names import archive_key
from archiver.core.wal_layout import entry_path
from archiver.dev.producer import write_entry
from tests.original_bucket import archive_as_original, listed_by_original
from tests.support import System


def _archiver(system: System, *args: str) -> Result:
    return CliRunner().invoke(main, list(args), env=system.env())


def test_the_fleet_adopts_the_originals_archive_and_the_original_reads_the_fleets(
    system: System,
) -> None:
    bucket = Path(system.sink.describe())
    for lsn in range(1, 9):
        system.write(1, lsn)
    # The original archived 1-5 and acknowledged them; the producer deleted 1-3 since.
    archive_as_original(bucket, system.root, system.storage, 1, range(1, 6))
    for lsn in range(1, 4):
        shutil.rmtree(entry_path(system.root, 1, lsn))
    theirs = {lsn: os.stat(bucket / archive_key(system.storage, 1, lsn)) for lsn in range(1, 6)}

    reconciled = _archiver(system, "reconcile", "--json")
    assert reconciled.exit_code == 0, reconciled.output
    (partition,) = json.loads(reconciled.stdout)
    assert (partition["verified"], partition["next_lsn"], partition["unverified"]) == (5, 6, [])
    assert system.state(1)["acknowledged_lsn"] == 5

    system.start()
    system.notify(1, 4, 8)
    system.wait_acked(1, 8)
    assert system.acks(1) == [6, 7, 8]
    # Nothing the original archived was written again: the same files, untouched.
    for lsn, stat in theirs.items():
        now = os.stat(bucket / archive_key(system.storage, 1, lsn))
        assert (now.st_ino, now.st_mtime_ns, now.st_size) == (
            stat.st_ino,
            stat.st_mtime_ns,
            stat.st_size,
        )
    for lsn in range(4, 9):
        system.assert_archive_matches_source(1, lsn)
    # Rolled back, the original lists every LSN, whoever wrote it; and all of it verifies.
    assert listed_by_original(bucket, system.storage, 1) == list(range(1, 9))
    verified = _archiver(system, "verify", "--json")
    assert verified.exit_code == 0, verified.output
    system.assert_invariants()


def test_adopting_stops_a_partition_at_a_conflicting_object(system: System) -> None:
    bucket = Path(system.sink.describe())
    for lsn in range(1, 6):
        system.write(1, lsn)
    archive_as_original(bucket, system.root, system.storage, 1, [1, 2, 4])
    # LSN 3 in the bucket is not the entry on the producer's disk: someone else's bytes.
    elsewhere = system.tmp / "elsewhere"
    write_entry(elsewhere, 1, 3, {"MANIFEST": b"another entry 3\n"})
    archive_as_original(bucket, elsewhere, system.storage, 1, [3])

    reconciled = _archiver(system, "reconcile", "--json")
    assert reconciled.exit_code == 1, reconciled.output
    (partition,) = json.loads(reconciled.stdout)
    assert partition["refused_object"]["lsn"] == 3
    assert "someone else's archive" in partition["refused_object"]["reason"]
    assert partition["next_lsn"] == 3  # moved past 1-2 only
