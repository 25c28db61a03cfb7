"""The paths beside the archiving loop keep its guarantees: reconcile, a worker host that cannot
read an entry, a worker host's start, restore into a used directory. Each runs through the
``archiver`` command against real processes, a real Redis and a real bucket."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from click.testing import CliRunner, Result

from archiver.cli import main
from archiver.core.lsn import format_lsn
from archiver.core.object_names import PartitionId, archive_key
from archiver.core.wal_layout import entry_path, wal_dir
from archiver.dev.producer import write_entry
from archiver.runtime.archiving import copy_entry
from tests.archive_factory import archive_range
from tests.faults import FaultProxy
from tests.store_calls import apply_notification
from tests.support import S3Endpoint, System, gap_pairs, source, wait_for


def archiver(system: System, *args: str, **env: str) -> Result:
    """``archiver ARGS`` as an operator runs it, against the system's Redis and bucket."""
    return CliRunner().invoke(main, list(args), env={**system.env(), **env})


def state_json(system: System, partition: int) -> dict[str, Any]:
    result = archiver(system, "inspect", "partition", system.storage, str(partition), "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def notifications_handled(system: System) -> bool:
    """Every notification published so far was applied (and trimmed from the stream)."""
    return system.streams.queued_notifications() == 0


def test_reconcile_leaves_a_conflicted_partition_alone(system: System) -> None:
    # Another entry's sound tar sits at LSN 3, with its checksum recorded: only the conflict
    # mark stands between reconcile and an acknowledgement of it.
    elsewhere = system.tmp / "elsewhere"
    write_entry(elsewhere, 1, 3, {"MANIFEST": b"someone else's entry 3\n"})
    copy_entry(system.sink, system.storage, elsewhere, 1, 3)
    system.start()
    for lsn in range(1, 4):
        system.write(1, lsn)
    system.notify(1, 1, 3)
    state = wait_for(
        lambda: (s := system.maybe_state(1)) and s["conflicted"] and s, what="the conflict"
    )
    assert (state["next_lsn"], state["acknowledged_lsn"]) == (3, 2)

    result = archiver(system, "reconcile", "--json")
    assert result.exit_code == 1, result.output
    (report,) = json.loads(result.stdout)
    assert report["changed"] is False
    assert "conflicted" in report["refused"]
    state = state_json(system, 1)
    assert (state["state"], state["next_lsn"], state["acknowledged_lsn"]) == ("conflicted", 3, 2)
    text = archiver(system, "reconcile")
    assert text.exit_code == 1
    assert "REFUSED default/1: the partition is conflicted" in text.stdout

    # The producer's next notification is not stale: nothing past 2 is acknowledged.
    system.notify(1, 1, 3)
    wait_for(lambda: notifications_handled(system), what="the notification to be applied")
    assert system.acks(1) == [1, 2]
    system.assert_invariants()


def test_reconcile_stops_before_an_object_it_cannot_verify(system: System) -> None:
    system.start()
    for lsn in range(1, 4):
        system.write(1, lsn)
    system.notify(1, 1, 3)
    system.wait_acked(1, 3)
    for process in system.processes:
        assert process.stop() == 0
    # Partition 2: 1 and 2 sound, garbage without a checksum at 3, a sound 4 above it.
    archive_range(system.sink, system.tmp / "elsewhere", 2, [1, 2, 4])
    garbage = system.tmp / "bucket" / archive_key(system.storage, 2, 3)
    garbage.write_bytes(b"not a tar")
    # Partition 3: entry 1 archived and acknowledged, then 2-4 pruned away and 5-7 archived
    # (a state rolled back to an old snapshot): the hole from the old position is a gap.
    archive_range(system.sink, system.tmp / "elsewhere", 3, [5, 6, 7])
    # The producer's disk holds both partitions, their entries deleted after acknowledgement;
    # partition 2's entry 5 is still there, waiting.
    wal_dir(system.root, 3).mkdir(parents=True)
    system.write(2, 5)
    system.client.flushall()  # Redis state is lost...
    apply_notification(system.store, system.storage, 3, 2, 9, 60)  # ...and 3 restored old

    result = archiver(system, "reconcile", "--json")
    assert result.exit_code == 1, result.output
    by_partition = {r["partition"]: r for r in json.loads(result.stdout)}
    assert by_partition[1]["next_lsn"] == 4
    assert by_partition[1]["refused_object"] is None
    refused = by_partition[2]["refused_object"]
    assert (refused["lsn"], refused["key"]) == (3, archive_key(system.storage, 2, 3))
    assert "bad tar" in refused["reason"]
    assert by_partition[2]["next_lsn"] == 3
    assert by_partition[3]["holes"] == [{"expected": 2, "actual": 5}]
    assert by_partition[3]["next_lsn"] == 8

    two = state_json(system, 2)
    assert (two["next_lsn"], two["acknowledged_lsn"]) == (3, 2)
    three = state_json(system, 3)
    assert (three["next_lsn"], three["acknowledged_lsn"]) == (8, 7)
    assert gap_pairs(three) == [(2, 5)]
    assert three["in_flight_lsn"] is None
    # Run again: nothing more changes, and the refusal is reported again.
    again = archiver(system, "reconcile", "--json")
    assert again.exit_code == 1
    assert not any(r["changed"] for r in json.loads(again.stdout))


def test_reconcile_never_acknowledges_entries_that_were_not_archived(system: System) -> None:
    # Healthy state: entries 1-3 announced, none archived yet (no worker runs). Another
    # entry's sound tar, checksum and all, sits at LSN 3.
    elsewhere = system.tmp / "elsewhere"
    write_entry(elsewhere, 1, 3, {"MANIFEST": b"someone else's entry 3\n"})
    copy_entry(system.sink, system.storage, elsewhere, 1, 3)
    for lsn in range(1, 4):
        system.write(1, lsn)
    apply_notification(system.store, system.storage, 1, 1, 3, 60)

    result = archiver(system, "reconcile", "--json")
    assert result.exit_code == 1, result.output
    (report,) = json.loads(result.stdout)
    assert report["changed"] is False
    refused = report["refused_object"]
    assert refused["lsn"] == 1
    assert "entry 1 is still on disk and was never archived" in refused["reason"]
    state = state_json(system, 1)
    assert (state["next_lsn"], state["acknowledged_lsn"], state["gaps"]) == (1, None, [])
    assert system.acks(1) == []
    # With 1 and 2 archived, the object at 3 is compared with entry 3, and is not it.
    for lsn in (1, 2):
        copy_entry(system.sink, system.storage, system.root, 1, lsn)
    again = archiver(system, "reconcile", "--json")
    assert again.exit_code == 1
    (report,) = json.loads(again.stdout)
    assert report["refused_object"]["lsn"] == 3
    assert "someone else's archive" in report["refused_object"]["reason"]
    assert report["next_lsn"] == 3
    assert state_json(system, 1)["acknowledged_lsn"] == 2
    # Where the storage cannot be read, reconcile does not guess.
    blind = archiver(system, "reconcile", "--json", ARCHIVER_STORAGES="")
    assert blind.exit_code == 1
    (report,) = json.loads(blind.stdout)
    assert "cannot read the partition's entries" in report["refused_object"]["reason"]
    assert state_json(system, 1)["acknowledged_lsn"] == 2
    # A partition an operator paused is theirs.
    paused = archiver(system, "admin", "pause", system.storage, "1", "--reason", "looking")
    assert paused.exit_code == 0, paused.output
    (report,) = json.loads(archiver(system, "reconcile", "--json").stdout)
    assert "paused by an operator" in report["refused"]


def test_reconcile_accepts_no_object_the_producer_may_not_have_written_yet(
    system: System,
) -> None:
    elsewhere = system.tmp / "elsewhere"
    for partition in (1, 2):
        write_entry(elsewhere, partition, 4, {"MANIFEST": b"someone else's entry 4\n"})
        copy_entry(system.sink, system.storage, elsewhere, partition, 4)
        for lsn in range(1, 4):
            system.write(partition, lsn)
    # Partition 1 has no state: acknowledging 4 would acknowledge 1-3 as well.
    # Partition 2: 1-3 archived, announced through 3; 4 is not written yet.
    for lsn in range(1, 4):
        copy_entry(system.sink, system.storage, system.root, 2, lsn)
    apply_notification(system.store, system.storage, 2, 1, 3, 60)

    result = archiver(system, "reconcile", "--json")
    assert result.exit_code == 1, result.output
    by_partition = {r["partition"]: r for r in json.loads(result.stdout)}
    one = by_partition[1]
    assert (one["changed"], one["refused_object"]["lsn"]) == (False, 1)
    assert "entry 1 is still on disk and was never archived" in one["refused_object"]["reason"]
    assert system.maybe_state(1) is None
    two = by_partition[2]
    assert (two["next_lsn"], two["refused_object"]["lsn"]) == (4, 4)
    assert "not known to have written it" in two["refused_object"]["reason"]
    assert state_json(system, 2)["acknowledged_lsn"] == 3


def test_an_unreadable_entry_with_an_unverifiable_object_stops_its_partition(
    system: System,
) -> None:
    system.env_overrides["ARCHIVER_ENTRY_FAILURES_BEFORE_STOP"] = "3"
    # Garbage with no recorded checksum at partition 1's LSN 1, whose entry directory is not
    # on this worker host (a shared disk not mounted here, say).
    garbage = system.tmp / "bucket" / archive_key(system.storage, 1, 1)
    garbage.parent.mkdir(parents=True)
    garbage.write_bytes(b"garbage")
    # At partition 3's LSN 1, someone else's sound archive, checksum and all: it verifies on
    # its own, and is still not this host's to accept, since it cannot be compared.
    archive_range(system.sink, system.tmp / "elsewhere", 3, [1])
    system.start()
    system.notify(1, 1, 1)
    system.notify(3, 1, 1)
    system.write(2, 1)
    system.notify(2, 1, 1)
    state = system.wait_state(1, "stopped")
    assert state["acknowledged_lsn"] is None
    assert state["attempts"] == 3
    assert "is missing on this host and LSN 1 was never acknowledged" in state["last_error"]
    assert "default/1/0000000000001.tar cannot be compared with it" in state["last_error"]
    three = system.wait_state(3, "stopped")
    assert three["acknowledged_lsn"] is None
    assert system.acks(3) == []
    # The rest of the fleet carried on, and never backed off for it.
    system.wait_acked(2, 1)
    assert system.store.fleet.left() == 0
    assert "until_ms" not in system.client.hgetall(system.keys.fleet)  # no pause, ever
    assert "stopped for an operator" in system.logs()

    # Operators see it: inspect, the summary, the filter.
    assert state_json(system, 1)["state"] == "stopped"
    summary = archiver(system, "inspect", "summary", "--json")
    assert json.loads(summary.stdout)["partitions"]["stopped"] == 2
    listed = archiver(system, "inspect", "partitions", "--state", "stopped", "--json")
    assert sorted(p["partition"] for p in json.loads(listed.stdout)) == [1, 3]
    # Nothing claims it: the sweep leaves it alone.
    tokens = state["fencing_token"]
    system.notify(1, 1, 1)
    wait_for(lambda: notifications_handled(system), what="the notification to be applied")
    assert system.state(1)["fencing_token"] == tokens

    # The operator moves the object aside, the disk comes back, and a requeue archives it.
    garbage.rename(system.tmp / "quarantined.tar")
    system.write(1, 1)
    result = archiver(system, "admin", "requeue", "default", "1", "--reason", "disk mounted")
    assert result.exit_code == 0, result.output
    system.wait_acked(1, 1)
    system.assert_archive_matches_source(1, 1)
    assert system.acks(1) == [1]
    system.assert_invariants()


def _archived_deleted_and_forgotten(system: System) -> None:
    """Entry 1 of partition 1 archived and acknowledged, deleted by the producer; then the
    partition's state lost or rolled back (an old snapshot)."""
    system.start()
    system.write(1, 1)
    system.notify(1, 1, 1)
    system.wait_acked(1, 1)
    shutil.rmtree(entry_path(system.root, 1, 1))
    system.client.delete(*system.keys.partition_keys(PartitionId(system.storage, 1)))


def test_an_acknowledged_entry_gone_from_disk_is_accepted_once_its_archive_verifies(
    system: System,
) -> None:
    _archived_deleted_and_forgotten(system)  # and the entry is announced again
    system.notify(1, 1, 1)
    wait_for(lambda: system.acks(1) == [1, 1], what="the entry acknowledged again")
    assert "entry is gone; its archive verified" in system.logs()
    system.assert_invariants()


def test_an_acknowledged_entry_gone_from_disk_is_not_accepted_from_an_object_that_rotted(
    system: System,
) -> None:
    system.env_overrides["ARCHIVER_ENTRY_FAILURES_BEFORE_STOP"] = "2"
    _archived_deleted_and_forgotten(system)
    # The archive's bytes change on the bucket's disk; its recorded checksum stays.
    stored = system.tmp / "bucket" / archive_key(system.storage, 1, 1)
    rotted = bytearray(stored.read_bytes())
    rotted[600] ^= 0xFF
    stored.write_bytes(rotted)
    system.notify(1, 1, 1)
    state = system.wait_state(1, "stopped")
    assert "UnverifiableArchive" in state["last_error"]
    assert "does not verify" in state["last_error"]
    assert system.acks(1) == [1]  # never acknowledged again
    assert stored.read_bytes() == rotted  # and never replaced
    system.assert_invariants()


def worker_start(system: System, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``archiver worker`` that is expected to exit by itself."""
    return subprocess.run(
        [sys.executable, "-m", "archiver", "worker", "--concurrency", "1"],
        env={**system.env(), **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_worker_host_with_an_unusable_sink_exits_with_one_clear_line(system: System) -> None:
    done = worker_start(system, {"ARCHIVER_SINK_URL": "s3x://bucket"})
    assert done.returncode == 2  # a setting: a usage error
    assert "Traceback" not in done.stderr
    assert "ready" not in done.stdout + done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert "ARCHIVER_SINK_URL: 's3x://bucket' is not supported" in line
    # A filesystem bucket whose parent is not there (a volume not mounted).
    missing = system.tmp / "not-mounted" / "bucket"
    done = worker_start(system, {"ARCHIVER_SINK_URL": missing.as_uri()})
    assert done.returncode == 1
    assert "is not usable" in done.stderr
    assert not missing.exists()


def test_a_worker_stops_with_the_reason_once_its_sink_is_gone(system: System) -> None:
    system.start(concurrency=2)
    system.write(1, 1)
    system.notify(1, 1, 1)
    system.wait_acked(1, 1)
    system.watcher.check()  # before the archive it checks against goes away
    # The bucket's volume is unmounted under the running worker.
    bucket = Path(system.sink.describe())
    unmounted = system.tmp / "unmounted"
    bucket.rename(unmounted)
    worker = system.processes[0]
    system.write(1, 2)
    system.notify(1, 2, 2)
    wait_for(lambda: worker.popen.poll() is not None, timeout=60, what="the worker to stop")
    assert worker.popen.returncode == 1, worker.output()
    assert f"the sink {bucket} is no longer usable" in worker.output()
    assert system.acks(1) == [1]
    # Mounted again, the next worker archives what the first could not.
    unmounted.rename(bucket)
    system.start_worker()
    system.wait_acked(1, 2)
    system.assert_archive_matches_source(1, 2)
    system.assert_invariants()


def test_a_worker_stops_with_the_reason_once_its_bucket_is_deleted(
    s3_system: System, s3_endpoint: S3Endpoint, s3_bucket: str
) -> None:
    s3_system.start()
    s3_system.write(1, 1)
    s3_system.notify(1, 1, 1)
    s3_system.wait_acked(1, 1)
    s3_system.watcher.check()  # before the archive it checks against goes away
    client = s3_endpoint.client()
    for listed in client.list_objects_v2(Bucket=s3_bucket)["Contents"]:
        client.delete_object(Bucket=s3_bucket, Key=listed["Key"])
    client.delete_bucket(Bucket=s3_bucket)
    worker = s3_system.processes[0]
    s3_system.write(1, 2)
    s3_system.notify(1, 2, 2)
    wait_for(lambda: worker.popen.poll() is not None, timeout=60, what="the worker to stop")
    assert worker.popen.returncode == 1, worker.output()
    assert "is no longer usable" in worker.output()
    assert "NoSuchBucket" in worker.output() or "404" in worker.output()
    assert s3_system.acks(1) == [1]
    # A worker started now refuses at once, with the same reason.
    done = worker_start(s3_system, {})
    assert done.returncode == 1
    assert "is not usable" in done.stderr
    assert s3_system.acks(1) == [1]


def test_a_worker_host_does_not_consume_a_storage_it_cannot_read(system: System) -> None:
    missing = system.tmp / "not-mounted"
    done = worker_start(system, {"ARCHIVER_STORAGES": f"gone={missing}"})
    assert done.returncode == 1
    assert f"storage 'gone': storage root {missing} does not exist on this host" in done.stderr
    assert "no storage of this host can be read" in done.stderr

    storages = f"{system.storage}={system.root},gone={missing}"
    system.env_overrides["ARCHIVER_STORAGES"] = storages
    worker = system._spawn(
        "worker", [sys.executable, "-m", "archiver", "worker", "--concurrency", "1"]
    )
    wait_for(lambda: "ready." in worker.output(), timeout=60, what="the worker to start")
    banner = worker.output()
    assert "not consuming archiver.gone" in banner
    assert ".> archiver.default" in banner
    assert ".> archiver.gone" not in banner
    system.start_scheduler()
    system.write(1, 1)
    system.notify(1, 1, 1)
    system.wait_acked(1, 1)
    system.assert_invariants()


def test_a_store_that_ignores_if_none_match_is_refused(
    s3_system: System, s3_endpoint: S3Endpoint, proxy: FaultProxy
) -> None:
    # The proxy renames the header on its way, as a store that ignores it would.
    proxy.strip_conditional_writes = True
    url = s3_system.sink_url.replace(s3_endpoint.url, proxy.url)
    done = worker_start(s3_system, {"ARCHIVER_SINK_URL": url})
    assert done.returncode == 1, done.stdout + done.stderr
    assert "ignores If-None-Match" in done.stderr
    assert "Traceback" not in done.stderr
    # The same store, honouring it (moto does), is taken; the probe leaves nothing behind.
    proxy.strip_conditional_writes = False
    s3_system.start()
    s3_system.write(1, 1)
    s3_system.notify(1, 1, 1)
    s3_system.wait_acked(1, 1)
    listed = s3_endpoint.client().list_objects_v2(Bucket=url.split("/")[2].split("?")[0])
    assert [o["Key"] for o in listed["Contents"]] == ["wal/" + archive_key("default", 1, 1)]
    s3_system.assert_invariants()


def test_restore_refuses_a_directory_holding_another_partition(system: System) -> None:
    archive_range(system.sink, system.tmp / "elsewhere", 4, range(1, 4))
    archive_range(system.sink, system.tmp / "elsewhere", 5, range(1, 6))
    dest = system.tmp / "restored"
    first = archiver(system, "restore", "default", "4", "--dest", str(dest), "--json")
    assert first.exit_code == 0, first.output
    before = {p.name: sorted(q.name for q in p.rglob("*")) for p in dest.iterdir()}

    second = archiver(system, "restore", "default", "5", "--dest", str(dest))
    assert second.exit_code == 1
    assert "holds a restore of partition default/4" in second.output
    assert "not of partition default/5" in second.output
    assert {p.name: sorted(q.name for q in p.rglob("*")) for p in dest.iterdir()} == before
    # The same restore resumes; an unrelated directory is refused.
    again = archiver(system, "restore", "default", "4", "--dest", str(dest), "--json")
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["skipped"] == 3
    used = system.tmp / "used"
    (used / format_lsn(1)).mkdir(parents=True)
    refused = archiver(system, "restore", "default", "4", "--dest", str(used))
    assert refused.exit_code == 1
    assert "holds no restore journal" in refused.output
    assert sorted(p.name for p in used.iterdir()) == [format_lsn(1)]


def test_restore_resumes_a_journal_written_before_it_named_its_partition(
    system: System,
) -> None:
    archive_range(system.sink, system.tmp / "elsewhere", 4, range(1, 4))
    dest = system.tmp / "restored"
    assert archiver(system, "restore", "default", "4", "--dest", str(dest)).exit_code == 0
    journal = dest / ".restored"
    journal.write_text("".join(journal.read_text().splitlines(keepends=True)[1:]))
    again = archiver(system, "restore", "default", "4", "--dest", str(dest), "--json")
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["skipped"] == 3
    archive_range(system.sink, system.tmp / "elsewhere", 5, range(1, 2))
    other = archiver(system, "restore", "default", "5", "--dest", str(dest))
    assert other.exit_code == 1
    assert "holds a restore of objects such as default/4/" in other.output


def test_a_poison_entry_stops_its_partition_and_pauses_no_one(system: System) -> None:
    """An entry holding a symbolic link can never be archived: it is retried with its
    partition's backoff a few times, then the partition stops; the fleet never backs off."""
    system.env_overrides["ARCHIVER_ENTRY_FAILURES_BEFORE_STOP"] = "3"
    system.start()
    system.write(1, 1)
    (entry_path(system.root, 1, 1) / "link").symlink_to("/etc/passwd")
    system.notify(1, 1, 1)
    for lsn in range(1, 4):
        system.write(2, lsn)
    system.notify(2, 1, 3)
    state = system.wait_state(1, "stopped")
    assert "UnsafeEntry" in state["last_error"]
    assert state["attempts"] == 3
    assert system.archived(1) == []
    assert system.acks(1) == []
    system.wait_acked(2, 3)
    assert "until_ms" not in system.client.hgetall(system.keys.fleet)  # no pause, ever
    system.assert_invariants()


def test_a_requeued_conflict_is_archived_and_acknowledged(system: System) -> None:
    planted = b"someone else's bytes"
    system.sink.write(archive_key(system.storage, 1, 2), source(planted))
    system.start()
    for lsn in range(1, 4):
        system.write(1, lsn)
    system.notify(1, 1, 3)
    wait_for(lambda: (system.maybe_state(1) or {}).get("conflicted"), what="partition 1 to stop")
    assert system.acks(1) == [1]
    # The operator looks at the foreign object, moves it and its attributes out of the way,
    # and requeues.
    foreign = Path(system.sink.describe()) / archive_key(system.storage, 1, 2)
    foreign.rename(system.tmp / "kept-aside.tar")
    attributes = foreign.with_name(foreign.name + ".attrs")
    attributes.rename(system.tmp / "kept-aside.tar.attrs")
    done = archiver(system, "admin", "requeue", system.storage, "1", "--reason", "moved aside")
    assert done.exit_code == 0, done.output
    system.wait_acked(1, 3)
    assert system.acks(1) == [1, 2, 3]
    for lsn in (2, 3):
        system.assert_archive_matches_source(1, lsn)
    assert not system.state(1)["conflicted"]
    system.assert_invariants()
