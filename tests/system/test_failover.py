"""Redis failover: a primary with a replica, the primary killed, the replica promoted.

A failover loses what the replica had not received. ``ARCHIVER_REDIS_MIN_REPLICAS`` keeps
acknowledgements behind what the replicas hold, so that the producer never deletes an entry
whose commit a failover could take back; without it, a commit taken back is redone and finds
its object. The replica is cut off before the commits in question (it stops following the
primary), so that they reach the primary alone.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from archiver.core.object_names import archive_key
from archiver.dev.local_redis import LocalRedis
from archiver.store.client import connect
from tests.support import Process, System, wait_for


@dataclass
class Pair:
    primary: LocalRedis
    replica: LocalRedis

    def replicated(self) -> None:
        """Wait until the replica holds every write the primary has made."""
        assert connect(self.primary.url).wait(1, 10_000) >= 1

    def cut_replica_off(self) -> None:
        """The replica stops following: what the primary writes from now on reaches it no
        more, as with a replica lagging behind when the failover comes."""
        connect(self.replica.url).replicaof("NO", "ONE")

    def follow_again(self) -> None:
        connect(self.replica.url).replicaof("127.0.0.1", self.primary.port)
        _wait_linked(self.replica)

    def fail_over(self) -> None:
        """Kill the primary; the replica, already on its own, is the primary now, and a new
        replica follows it (as Sentinel would give it one)."""
        assert self.primary.process is not None
        self.primary.process.kill()
        self.primary.process.wait()
        self.primary, self.replica = self.replica, _replica_of(self.replica)


def _replica_of(primary: LocalRedis) -> LocalRedis:
    replica = LocalRedis(
        primary.directory.with_name(primary.directory.name + "-replica"),
        extra_args=["--replicaof", "127.0.0.1", str(primary.port)],
    ).start()

    _wait_linked(replica)
    return replica


def _wait_linked(replica: LocalRedis) -> None:
    def linked() -> bool:
        info = connect(replica.url).info("replication")
        return info.get("master_link_status") == "up"

    wait_for(linked, timeout=30, what="the replica to follow the primary")


@dataclass
class Archivers:
    """The archiver's processes, against the primary of the moment; every one is stopped at
    the end of the test, whatever happened."""

    pair: Pair
    tmp: Path
    systems: list[System]

    def start(self, env: dict[str, str] | None = None) -> System:
        system = System(
            redis_url=self.pair.primary.url,
            tmp=self.tmp,
            sink_url=(self.tmp / "bucket").as_uri(),
            env_overrides=env or {},
        )
        self.systems.append(system)
        return system

    def after_failover(self, before: System) -> System:
        """The same archiver, its processes started again against the new primary (as an
        operator, or Sentinel, points them there)."""
        before.close()
        after = self.start(before.env_overrides)
        after.written = before.written
        return after


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[Pair]:
    primary = LocalRedis(tmp_path / "primary").start()
    made = Pair(primary, _replica_of(primary))
    yield made
    made.replica.stop()
    made.primary.stop()


@pytest.fixture
def archivers(pair: Pair, tmp_path: Path) -> Iterator[Archivers]:
    made = Archivers(pair, tmp_path, [])
    yield made
    for system in made.systems:
        system.close()


def _second_entry_held_back(pair: Pair, archivers: Archivers) -> tuple[System, Process]:
    """With ARCHIVER_REDIS_MIN_REPLICAS=1: entry 1 acknowledged; then, the replica cut off,
    entry 2 archived and committed on the primary alone, its acknowledgement held back.
    Returns the archiver and its scheduler."""
    system = archivers.start(
        {"ARCHIVER_REDIS_MIN_REPLICAS": "1", "ARCHIVER_REDIS_REPLICA_TIMEOUT_SECONDS": "0.5"}
    )
    worker = system.start_worker()
    scheduler = system.start_scheduler()
    system.write(1, 1)
    system.notify(1, 1, 1)
    system.wait_acked(1, 1)
    pair.cut_replica_off()
    system.write(1, 2)
    system.notify(1, 1, 2)
    wait_for(
        lambda: "acknowledgement held back" in worker.output(),
        timeout=30,
        what="the worker to hold the acknowledgement back",
    )
    return system, scheduler


def test_with_min_replicas_an_acknowledgement_waits_for_the_replica(
    pair: Pair, archivers: Archivers
) -> None:
    system, _ = _second_entry_held_back(pair, archivers)
    assert system.state(1)["acknowledged_lsn"] == 2  # committed, on the primary
    assert system.acks(1) == [1]  # but the producer was not told
    # The primary dies; the replica, which never saw commit 2, takes over.
    pair.fail_over()
    system = archivers.after_failover(system)
    assert system.state(1)["acknowledged_lsn"] == 1
    assert system.acks(1) == [1]
    first_upload = system.sink.read(archive_key(system.storage, 1, 2))
    # The producer, never told of 2, still has it and announces it again: the attempt is
    # redone, finds its object, and is acknowledged now.
    system.start_worker()
    system.start_scheduler()
    system.notify(1, 1, 2)
    system.wait_acked(1, 2)
    assert system.sink.read(archive_key(system.storage, 1, 2)) == first_upload
    system.assert_archive_matches_source(1, 2)
    system.assert_invariants()


def test_without_min_replicas_a_commit_taken_back_is_redone_and_finds_its_object(
    pair: Pair, archivers: Archivers
) -> None:
    system = archivers.start()
    system.start_worker()
    system.start_scheduler()
    system.write(1, 1)
    system.notify(1, 1, 1)
    system.wait_acked(1, 1)
    pair.replicated()
    pair.cut_replica_off()
    system.write(1, 2)
    system.notify(1, 1, 2)
    system.wait_acked(1, 2)  # on the primary alone
    first_upload = system.sink.read(archive_key(system.storage, 1, 2))
    pair.fail_over()
    system = archivers.after_failover(system)
    # The failover took commit 2 and its acknowledgement back.
    assert system.state(1)["acknowledged_lsn"] == 1
    assert system.acks(1) == [1]
    # The producer had not deleted entry 2 yet: announced again, it is redone, the object
    # already there is verified and kept (not written again), and 2 is acknowledged again.
    # One commit was taken back, so the producer sees 2 again, then onwards.
    system.start_worker()
    system.start_scheduler()
    system.write(1, 3)
    system.notify(1, 1, 3)
    system.wait_acked(1, 3)
    assert system.acks(1) == [1, 2, 3]
    assert system.sink.read(archive_key(system.storage, 1, 2)) == first_upload
    system.assert_archive_matches_source(1, 2)
    system.assert_archive_matches_source(1, 3)
    system.assert_invariants()


def test_a_held_acknowledgement_goes_out_once_the_replica_is_back(
    pair: Pair, archivers: Archivers
) -> None:
    system, scheduler = _second_entry_held_back(pair, archivers)
    # Announced again while the replica is away: the scheduler holds it back too.
    system.notify(1, 1, 2)
    wait_for(
        lambda: "acknowledgements held back" in scheduler.output(),
        timeout=30,
        what="the scheduler to hold it back",
    )
    assert system.acks(1) == [1]
    # The replica follows again; the next announcement is acknowledged by the scheduler.
    pair.follow_again()
    system.notify(1, 1, 2)
    system.wait_acked(1, 2)
    system.assert_archive_matches_source(1, 2)
    system.assert_invariants()
