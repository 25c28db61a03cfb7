"""One archiving attempt in-process (``archiver.runtime.entry_archiver``), against a real Redis."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import threading
import time

import pytest

from archiver.core.object_names import PartitionId
from archiver.runtime.entry_archiver import EXIT_OVERRUN, LeaseKeeper
from archiver.store.keys import RedisKeys
from archiver.store.state_store import RedisStateStore
from tests.store_calls import apply_notification, claim_next_entry
from tests.support import wait_for


def test_the_lease_keeper_renews_a_long_attempt_and_notices_when_it_is_fenced(
    store: RedisStateStore,
) -> None:
    # Renewed every third of it: long enough that a loaded machine's scheduling delays
    # cannot let it lapse between renewals.
    lease = 3.0
    claim = apply_notification(store, "s", 1, 1, 1, lease).claim
    assert claim is not None
    keeper = LeaseKeeper(store, lease, attempt_limit=3600)
    first = store.records.load(PartitionId("s", 1))
    assert first is not None
    assert first.state.lease_expires_ms is not None
    with keeper.keep("s", 1, claim) as held:
        # Well past the first lease, the grant is still ours: it was renewed.
        wait_for(
            lambda: store.server_time_ms() > first.state.lease_expires_ms + 1000,  # type: ignore[operator]
            timeout=10,
            what="the first lease to be long over",
        )
        assert claim_next_entry(store, "s", 1, lease) is None
        assert not held.lost.is_set()
        # An operator breaks the lease: the keeper's next renewal is refused.
        assert store.admin.release(PartitionId("s", 1), "ops", "test").done
        wait_for(held.lost.is_set, timeout=10, what="the keeper to see the grant lost")
    # Between attempts the same thread renews nothing.
    second = claim_next_entry(store, "s", 1, 3600)
    assert second is not None
    with keeper.keep("s", 1, second) as held_again:
        assert not held_again.lost.is_set()


def test_the_lease_keeper_renews_every_attempt_running_in_its_process(
    store: RedisStateStore,
) -> None:
    # A threads pool runs several attempts in one process, under one keeper.
    lease = 3.0
    claims = [apply_notification(store, "s", p, 1, 1, lease).claim for p in (1, 2, 3)]
    keeper = LeaseKeeper(store, lease, attempt_limit=3600)
    first = store.records.load(PartitionId("s", 1))
    assert first is not None
    assert first.state.lease_expires_ms is not None
    with contextlib.ExitStack() as running:
        held = [
            running.enter_context(keeper.keep("s", p, claim))
            for p, claim in zip((1, 2, 3), claims, strict=True)
            if claim is not None
        ]
        assert len(held) == 3
        wait_for(
            lambda: store.server_time_ms() > first.state.lease_expires_ms + 1000,  # type: ignore[operator]
            timeout=10,
            what="the first leases to be long over",
        )
        for partition in (1, 2, 3):
            assert claim_next_entry(store, "s", partition, lease) is None, partition
        # One fenced: only its attempt hears of it.
        assert store.admin.release(PartitionId("s", 2), "ops", "test").done
        wait_for(held[1].lost.is_set, timeout=10, what="the keeper to see grant 2 lost")
        assert not held[0].lost.is_set()
        assert not held[2].lost.is_set()


def test_an_attempt_past_its_time_limit_is_no_longer_renewed(store: RedisStateStore) -> None:
    # No pool kills it (Celery's threads pool has no hard time limit): its grant lapses, so
    # the partition goes to another worker, and the attempt hears it has lost its grant.
    lease = 3.0
    claim = apply_notification(store, "s", 1, 1, 1, lease).claim
    assert claim is not None
    keeper = LeaseKeeper(store, lease, attempt_limit=1.5)
    with keeper.keep("s", 1, claim) as held:
        wait_for(held.lost.is_set, timeout=10, what="the keeper to give the attempt up")
        taken_over = wait_for(
            lambda: claim_next_entry(store, "s", 1, lease), timeout=10, what="a new grant"
        )
        assert taken_over.token > claim.token


# An attempt run in a child process, as in a prefork pool process: its main thread runs it.
# With "obey" the attempt ends when interrupted; with "ignore" it goes on waiting.
_POOL_PROCESS = """
import sys, time
from archiver.core.partition import Claim
from archiver.runtime.entry_archiver import AttemptInterrupted, LeaseKeeper
from archiver.store.client import connect
from archiver.store.keys import RedisKeys
from archiver.store.state_store import RedisStateStore

url, prefix, lsn, token, mode = sys.argv[1:]
store = RedisStateStore(connect(url), RedisKeys(prefix))
keeper = LeaseKeeper(store, 30.0, attempt_limit=1.0, grace=2.0)
keeper.end_overruns()
with keeper.keep("s", 1, Claim(int(lsn), int(token))):
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            time.sleep(deadline - time.monotonic())
        except AttemptInterrupted:
            print("interrupted", flush=True)
            if mode == "obey":
                break
print("attempt over", flush=True)
"""


@pytest.mark.parametrize("mode", ["obey", "ignore"])
def test_a_pool_process_interrupts_an_overrun_attempt_and_ends_if_it_goes_on(
    store: RedisStateStore, redis_url: str, keys: RedisKeys, mode: str
) -> None:
    claim = apply_notification(store, "s", 1, 1, 1, 30.0).claim
    assert claim is not None
    args = [redis_url, keys.prefix, str(claim.lsn), str(claim.token), mode]
    started = time.monotonic()
    child = subprocess.run(
        [sys.executable, "-c", _POOL_PROCESS, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    took = time.monotonic() - started
    assert "interrupted" in child.stdout, child.stderr
    if mode == "obey":
        # Interrupted once, at the limit; the process carries on.
        assert child.returncode == 0, child.stderr
        assert "attempt over" in child.stdout
        assert "ending this pool process" not in child.stderr
        assert took < 20
    else:
        # Still running two seconds after the interruption: the process ends, long before
        # the attempt's own 30 s would.
        assert child.returncode == EXIT_OVERRUN, child.stderr
        assert "attempt over" not in child.stdout
        assert "ending this pool process" in child.stderr
        assert took < 20
    # The grant was not renewed past the limit either way.
    assert "no longer renewed" in child.stderr


def test_an_overrun_attempt_off_the_main_thread_is_only_fenced(store: RedisStateStore) -> None:
    # A threads pool runs attempts off the main thread, where no signal can raise, beside
    # other attempts: the keeper lets the grant lapse and never ends the process.
    claim = apply_notification(store, "s", 1, 1, 1, 30.0).claim
    assert claim is not None
    keeper = LeaseKeeper(store, 30.0, attempt_limit=0.5, grace=0.5)
    keeper.ends_overruns = True  # even so (without the signal handler of end_overruns)
    ended: list[bool] = []
    keeper.exit_process = lambda: ended.append(True)
    finished = threading.Event()

    def attempt() -> None:
        with keeper.keep("s", 1, claim) as held:
            wait_for(held.lost.is_set, timeout=10, what="the grant to be given up")
            # Still running well past the limit and its grace.
            wait_for(
                lambda: time.monotonic() > held.give_up_at + 3.0,
                timeout=10,
                what="the grace to be long over",
            )
            assert held.overran
        finished.set()

    thread = threading.Thread(target=attempt)
    thread.start()
    thread.join(30)
    assert finished.is_set()
    assert ended == []


# The main thread logs without pause while another thread logs through the same handler and
# then interrupts it, as the lease keeper does, many times over. An exception raised where
# logging has taken its handler's lock and not yet entered its ``try`` would leave the lock
# held for good, and every later log call, the keeper's included, would hang.
_INTERRUPTED_WHILE_LOGGING = """
import io, logging, signal, sys, threading, time
from archiver.runtime import entry_archiver
from archiver.runtime.entry_archiver import INTERRUPT_SIGNAL, AttemptInterrupted

signal.signal(INTERRUPT_SIGNAL, entry_archiver._raise_interrupted)
handler = logging.StreamHandler(io.StringIO())
logging.getLogger().addHandler(handler)
logging.getLogger().setLevel(logging.INFO)
log = logging.getLogger("attempt")
main = threading.get_ident()
interrupted = leaked = 0
for _ in range(int(sys.argv[1])):
    go = threading.Event()

    def keeper():
        go.wait()
        log.error("interrupting the attempt")
        entry_archiver._INTERRUPTION.wanted = True
        signal.pthread_kill(main, INTERRUPT_SIGNAL)

    thread = threading.Thread(target=keeper)
    thread.start()
    try:
        go.set()
        end = time.monotonic() + 0.02
        while time.monotonic() < end:
            log.info("uploading")
    except AttemptInterrupted:
        interrupted += 1
    thread.join()
    entry_archiver._INTERRUPTION.wanted = False
    if not handler.lock.acquire(timeout=0.5):
        leaked += 1
        break
    handler.lock.release()
print(interrupted, leaked)
"""


def test_an_interruption_never_lands_inside_logging() -> None:
    child = subprocess.run(
        [sys.executable, "-c", _INTERRUPTED_WHILE_LOGGING, "300"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    interrupted, leaked = map(int, child.stdout.split())
    assert leaked == 0
    # Interruptions still land, between log calls.
    assert interrupted > 0
