"""Copying to mirrors: real filesystem buckets and a real Redis; the copier as the leading
scheduler and ``archiver mirror`` run it."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from archiver.archive.catalog import partition_archives
from archiver.archive.mirroring import MirrorCopier
from archiver.cli import main
from archiver.config import Settings
from archiver.core.encryption import Keyring, new_key_text
from archiver.core.object_names import PartitionId
from archiver.runtime.archiving import copy_entry
from archiver.runtime.background import held_acknowledgements
from archiver.sinks import FilesystemSink
from archiver.store.state_store import RedisStateStore
from archiver.store.streams import Streams
from tests.archive_factory import new_bucket
from tests.store_calls import archive_and_acknowledge

PID = PartitionId("s", 1)


def copier(store: RedisStateStore, primary: FilesystemSink, mirror: FilesystemSink) -> MirrorCopier:
    return MirrorCopier(
        primary, {"far": mirror}, store, lease_ms=60_000, retry_delay_ms=lambda n: 0
    )


def test_a_mirror_gets_the_primary_bytes_and_metadata_up_to_the_acknowledged_lsn(
    store: RedisStateStore, tmp_path: Path
) -> None:
    keyring = Keyring.parse(f"k1:{new_key_text()}")
    primary = FilesystemSink(new_bucket(tmp_path / "primary").root, keyring)
    mirror = FilesystemSink(new_bucket(tmp_path / "mirror").root, keyring)
    archive_and_acknowledge(store, primary, tmp_path / "wal", "s", 1, range(1, 6))
    done = copier(store, primary, mirror).run_pass()
    assert done.copied == {"far": 5}
    for archive in partition_archives(primary, "s", 1):
        assert archive.encrypted
        assert mirror.read(archive.key) == primary.read(archive.key)
        assert mirror.metadata(archive.key) == primary.metadata(archive.key)
    assert store.mirrors.load("far", PID).through == 5
    # Nothing more to do: a second pass copies nothing.
    assert copier(store, primary, mirror).run_pass().copied == {"far": 0}


def test_a_mirror_that_is_down_falls_behind_then_catches_up(
    store: RedisStateStore, tmp_path: Path
) -> None:
    primary = new_bucket(tmp_path / "primary")
    mirror = new_bucket(tmp_path / "mirror")
    archive_and_acknowledge(store, primary, tmp_path / "wal", "s", 1, range(1, 4))
    moved = tmp_path / "unmounted"
    mirror.root.rename(moved)  # the mirror's volume is gone
    done = copier(store, primary, mirror).run_pass()
    assert done.failed == {"far": 1}
    progress = store.mirrors.load("far", PID)
    assert (progress.through, progress.attempts) == (None, 1)
    assert "is not a directory" in (progress.last_error or "")
    # Archiving and acknowledging went on meanwhile.
    archive_and_acknowledge(store, primary, tmp_path / "wal", "s", 1, range(4, 7))
    moved.rename(mirror.root)
    done = copier(store, primary, mirror).run_pass()
    assert done.copied == {"far": 6}
    progress = store.mirrors.load("far", PID)
    assert (progress.through, progress.attempts, progress.last_error) == (6, 0, None)


def test_a_conflict_stops_only_that_mirrors_partition(
    store: RedisStateStore, tmp_path: Path
) -> None:
    primary = new_bucket(tmp_path / "primary")
    mirror = new_bucket(tmp_path / "mirror")
    archive_and_acknowledge(store, primary, tmp_path / "wal", "s", 1, range(1, 4))
    archive_and_acknowledge(store, primary, tmp_path / "wal", "s", 2, range(1, 3))
    key = partition_archives(primary, "s", 1)[1].key
    mirror.write(key, lambda: iter([b"someone else's bytes"]))
    done = copier(store, primary, mirror).run_pass()
    assert done.conflicts == {"far": 1}
    stopped = store.mirrors.load("far", PID)
    assert stopped.through == 1
    assert "other content" in (stopped.conflict or "")
    assert mirror.read(key) == b"someone else's bytes"  # never replaced
    assert store.mirrors.load("far", PartitionId("s", 2)).through == 2  # the other partition
    # Nothing is tried while stopped; once the object is moved aside and the mirror resumed,
    # it catches up.
    assert copier(store, primary, mirror).run_pass().copied == {"far": 0}
    aside = tmp_path / "aside"
    aside.mkdir()
    shutil.move(mirror.root / key, aside / "object")
    shutil.move(mirror.root / (key + ".attrs"), aside / "object.attrs")
    assert store.mirrors.resume("far", PID)
    assert copier(store, primary, mirror).run_pass().copied == {"far": 2}
    assert store.mirrors.load("far", PID).through == 3


def test_a_workers_extend_never_jumps_over_what_the_mirror_lacks(
    store: RedisStateStore, tmp_path: Path
) -> None:
    """State rebuilt by reconcile: the partition is acknowledged through 3, the mirror's
    progress is gone. A worker that copied LSN 4 may not mark the mirror as holding 1 to 4."""
    primary = new_bucket(tmp_path / "primary")
    mirror = new_bucket(tmp_path / "mirror")
    archive_and_acknowledge(store, primary, tmp_path / "wal", "s", 1, range(1, 4))
    assert not store.mirrors.extend("far", PID, 4, previous=3)
    assert store.mirrors.load("far", PID).through is None
    assert copier(store, primary, mirror).run_pass().copied == {"far": 3}
    assert store.mirrors.extend("far", PID, 4, previous=3)
    assert store.mirrors.load("far", PID).through == 4


def test_an_object_on_the_mirror_sealed_with_a_key_not_given_is_retried_not_a_conflict(
    store: RedisStateStore, tmp_path: Path
) -> None:
    """Whether it holds the entry cannot be told without its key: not a conflict, which would
    stop the mirror's partition until an operator came, but a failure retried with backoff."""
    keyring = Keyring.parse(f"k1:{new_key_text()}")
    primary = FilesystemSink(new_bucket(tmp_path / "primary").root, keyring)
    mirror = FilesystemSink(new_bucket(tmp_path / "mirror").root, keyring)
    archive_and_acknowledge(store, primary, tmp_path / "wal", "s", 1, range(1, 3))
    elsewhere = FilesystemSink(mirror.root, Keyring.parse(f"other:{new_key_text()}"))
    copy_entry(elsewhere, "s", tmp_path / "wal", 1, 1, encrypt=True)
    done = copier(store, primary, mirror).run_pass()
    assert (done.failed, done.conflicts) == ({"far": 1}, {"far": 0})
    progress = store.mirrors.load("far", PID)
    assert progress.conflict is None
    assert "'other'" in (progress.last_error or "")


def test_with_ack_policy_all_the_copier_publishes_what_was_held_back(
    store: RedisStateStore, tmp_path: Path
) -> None:
    """Entries acknowledged in the state but held back from the producer while a mirror
    lacked them (here: none was ever published) are published once the copier caught the
    mirror up, with no notification needed."""
    primary = new_bucket(tmp_path / "primary")
    mirror = new_bucket(tmp_path / "mirror")
    archive_and_acknowledge(store, primary, tmp_path / "wal", "s", 1, range(1, 4))
    settings = Settings.from_env(
        {"ARCHIVER_MIRROR_URLS": f"far={mirror.root.as_uri()}", "ARCHIVER_ACK_POLICY": "all"}
    )
    streams = Streams(store.client, store.keys)
    assert streams.newest_published("s", 1) is None
    MirrorCopier(
        primary,
        {"far": mirror},
        store,
        lease_ms=60_000,
        retry_delay_ms=lambda n: 0,
        publish_held=held_acknowledgements(settings, store),
    ).run_pass()
    assert streams.newest_published("s", 1) == 3


def test_a_primary_listing_that_shows_nothing_moves_no_progress(
    store: RedisStateStore, tmp_path: Path
) -> None:
    """The copier's host does not see the primary's objects (its bucket's volume not mounted
    there): the mirror holds none of them, and its progress must say so."""
    primary = new_bucket(tmp_path / "primary")
    mirror = new_bucket(tmp_path / "mirror")
    archive_and_acknowledge(store, primary, tmp_path / "wal", "s", 1, range(1, 4))
    unmounted = FilesystemSink(tmp_path / "not-mounted-here")
    assert copier(store, unmounted, mirror).run_pass().copied == {"far": 0}
    assert store.mirrors.load("far", PID).through is None
    assert copier(store, primary, mirror).run_pass().copied == {"far": 3}
    assert store.mirrors.load("far", PID).through == 3


def test_a_sealed_object_on_the_mirror_without_its_metadata_is_not_accepted(
    store: RedisStateStore, tmp_path: Path
) -> None:
    """The primary's bytes with no attributes (lost in a crash): it could never be opened,
    so it is a conflict for an operator, not the mirror's copy."""
    keyring = Keyring.parse(f"k1:{new_key_text()}")
    primary = FilesystemSink(new_bucket(tmp_path / "primary").root, keyring)
    mirror = FilesystemSink(new_bucket(tmp_path / "mirror").root, keyring)
    archive_and_acknowledge(store, primary, tmp_path / "wal", "s", 1, range(1, 3))
    key = partition_archives(primary, "s", 1)[0].key
    (mirror.root / key).parent.mkdir(parents=True)
    shutil.copyfile(primary.root / key, mirror.root / key)
    done = copier(store, primary, mirror).run_pass()
    assert done.conflicts == {"far": 1}
    stopped = store.mirrors.load("far", PID)
    assert stopped.through is None
    assert "metadata does not open" in (stopped.conflict or "")


def test_with_mirrors_prune_deletes_nothing_a_mirror_does_not_hold(
    redis_url: str, redis_client: Any, keys: Any, tmp_path: Path
) -> None:
    primary = new_bucket(tmp_path / "primary")
    mirror = new_bucket(tmp_path / "mirror")
    env = {
        "ARCHIVER_REDIS_URL": redis_url,
        "ARCHIVER_SINK_URL": primary.root.as_uri(),
        "ARCHIVER_MIRROR_URLS": f"far={mirror.root.as_uri()}",
    }
    settings = Settings.from_env(env)
    bound = RedisStateStore(redis_client, keys, mirror_targets=settings.mirror_targets)
    archive_and_acknowledge(bound, primary, tmp_path / "wal", "s", 1, range(1, 6))
    assert bound.mirrors.claim("far", PID, "copier", 60_000)
    assert bound.mirrors.advance("far", PID, "copier", 2, 60_000)
    refused = CliRunner().invoke(main, ["prune", "s", "1", "--before", "5", "--yes"], env=env)
    assert refused.exit_code == 1
    assert "only through LSN 2" in refused.output
    assert len(partition_archives(primary, "s", 1)) == 5
    allowed = CliRunner().invoke(main, ["prune", "s", "1", "--before", "3", "--yes"], env=env)
    assert allowed.exit_code == 0, allowed.output
    assert [a.lsn for a in partition_archives(primary, "s", 1)] == [3, 4, 5]
