"""The mirror progress script and its Python model, driven side by side on a real Redis: every
operation, in random order, gives both the same answer and leaves both in the same state."""

from __future__ import annotations

import random

import pytest
import redis

from archiver.core import mirror_progress as model
from archiver.core.mirror_progress import MirrorProgress
from archiver.core.object_names import PartitionId
from archiver.store.keys import RedisKeys
from archiver.store.state_store import RedisStateStore
from tests.clock import TEST_CLOCK, Clock

PID = PartitionId("s", 1)
TTL = 1000


@pytest.mark.parametrize("seed", range(12))
def test_the_script_and_the_model_agree(redis_client: redis.Redis, seed: int) -> None:
    rng = random.Random(seed)
    keys = RedisKeys(f"mirror-model-{seed}")
    store = RedisStateStore(redis_client, keys, script_prelude=TEST_CLOCK)
    clock = Clock(redis_client)
    mirrors = store.mirrors
    ours = MirrorProgress()
    tokens = ["a", "b", "c"]
    for step in range(300):
        op = rng.choice(
            ["claim", "advance", "extend", "fail", "conflict", "stop", "release", "resume", "tick"]
        )
        token = rng.choice(tokens)
        lsn = rng.randint(1, 40)
        if op == "claim":
            ours, expected = model.claim(ours, token, clock(), TTL)
            got = mirrors.claim("m", PID, token, TTL)
        elif op == "advance":
            ours, expected = model.advance(ours, token, lsn, clock(), TTL)
            got = mirrors.advance("m", PID, token, lsn, TTL)
        elif op == "extend":
            previous = rng.choice([None, lsn - 1, lsn - 3, lsn + 2])
            previous = None if previous is not None and previous < 1 else previous
            ours, expected = model.extend(ours, lsn, previous)
            got = mirrors.extend("m", PID, lsn, previous)
        elif op == "fail":
            delay = rng.choice([0, 500, 5000])
            ours, expected = model.fail(ours, token, f"error {step}", clock(), delay)
            got = mirrors.fail("m", PID, token, f"error {step}", delay)
        elif op == "conflict":
            ours, expected = model.conflict(ours, token, f"conflict {step}")
            got = mirrors.conflict("m", PID, token, f"conflict {step}")
        elif op == "stop":
            ours, expected = model.stop(ours, f"stopped {step}")
            got = mirrors.stop("m", PID, f"stopped {step}")
        elif op == "release":
            ours, expected = model.release(ours, token)
            got = mirrors.release("m", PID, token)
        elif op == "resume":
            ours, expected = model.resume(ours)
            got = mirrors.resume("m", PID)
        else:
            clock.advance(rng.choice([100, 600, 2000]))
            continue
        assert got == expected, (step, op)
        assert mirrors.load("m", PID) == ours, (step, op)


def test_through_only_moves_forward_for_the_lease_holder(store: RedisStateStore) -> None:
    mirrors = store.mirrors
    assert mirrors.claim("m", PID, "a", 60_000)
    assert not mirrors.claim("m", PID, "b", 60_000)  # held
    assert mirrors.advance("m", PID, "a", 5, 60_000)
    assert not mirrors.advance("m", PID, "b", 9, 60_000)
    assert mirrors.advance("m", PID, "a", 3, 60_000)
    assert mirrors.load("m", PID).through == 5
    assert mirrors.conflict("m", PID, "a", "other bytes at 6")
    assert not mirrors.claim("m", PID, "b", 60_000)  # stopped until an operator resumes it
    assert mirrors.resume("m", PID)
    assert mirrors.claim("m", PID, "b", 60_000)
    assert mirrors.load("m", PID).through == 5


def test_extend_needs_the_mirror_to_hold_what_was_acknowledged_before(
    store: RedisStateStore,
) -> None:
    """A worker's copy of one entry says nothing of the entries before it: ``through`` moves
    over it only where the mirror held everything acknowledged before that commit."""
    mirrors = store.mirrors
    # Nothing acknowledged before: older objects may still be on the primary, for the copier.
    assert not mirrors.extend("m", PID, 1, previous=None)
    assert mirrors.claim("m", PID, "copier", 60_000)
    assert mirrors.advance("m", PID, "copier", 1, 60_000)
    assert not mirrors.extend("m", PID, 9, previous=None)
    assert not mirrors.extend("m", PID, 9, previous=5)  # the mirror lacks 2 to 5
    assert mirrors.extend("m", PID, 2, previous=1)
    assert mirrors.load("m", PID).through == 2


def test_progress_is_kept_per_mirror_location(redis_client: redis.Redis) -> None:
    """A mirror name given to another bucket (or unnamed mirrors renumbered) starts from
    nothing, never from the progress another bucket made."""
    keys = RedisKeys("mirror-targets")
    old = RedisStateStore(redis_client, keys, mirror_targets={"far": "aaaaaaaaaaaa"})
    assert old.mirrors.claim("far", PID, "copier", 60_000)
    assert old.mirrors.advance("far", PID, "copier", 100, 60_000)
    moved = RedisStateStore(redis_client, keys, mirror_targets={"far": "bbbbbbbbbbbb"})
    assert moved.mirrors.load("far", PID).through is None
    assert old.mirrors.load("far", PID).through == 100
