"""Sending claimed entries to the workers, without stranding a claim when sending fails."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import NamedTuple

from archiver.core.object_names import PartitionId
from archiver.core.partition import Claim
from archiver.observability.logs import entry_fields
from archiver.store.state_store import RedisStateStore

log = logging.getLogger("archiver.dispatch")


class ArchiveTask(NamedTuple):
    """What a task message carries: the entry to archive and the grant to do it under."""

    storage: str
    partition: int
    lsn: int
    token: int


# Sends tasks, several at once where the broker allows; one result per task, in order: None
# once it is sent, else why it may not have been.
Dispatch = Callable[[Sequence[ArchiveTask]], list[Exception | None]]


def dispatch_claim(
    store: RedisStateStore, dispatch: Dispatch, storage: str, partition: int, claim: Claim
) -> bool:
    """Send the task for ``claim``; if it cannot be sent, release the claim and say so.

    A released claim is picked up again by the next notification or sweep, instead of waiting
    out the dispatch timeout. A sent task is marked as sent: a claim left unmarked (its sender
    died in between) is taken over by the sweep soon after, not after the dispatch timeout.
    A task released although it did reach the broker is harmless: its grant is gone, so the
    worker that takes it is fenced off.
    """
    return dispatch_claims(store, dispatch, [(storage, partition, claim)]) == 1


def dispatch_claims(
    store: RedisStateStore, dispatch: Dispatch, claims: list[tuple[str, int, Claim]]
) -> int:
    """``dispatch_claim`` for many claims: the tasks sent together, and all the sent marks in
    one round trip. Returns how many were sent."""
    if not claims:
        return 0
    tasks = [ArchiveTask(s, p, claim.lsn, claim.token) for s, p, claim in claims]
    sent = []
    for task, error in zip(tasks, dispatch(tasks), strict=True):
        if error is not None:
            log.error(
                "could not send archive task; releasing claim: %s",
                error,
                exc_info=error,
                extra=entry_fields(task.storage, task.partition, task.lsn),
            )
            store.transitions.release_claim(
                PartitionId(task.storage, task.partition), task.lsn, task.token
            )
            continue
        sent.append((PartitionId(task.storage, task.partition), task.token))
    store.transitions.mark_dispatched_many(sent)
    return len(sent)
