"""Sending a claimed entry to the workers, without stranding the claim when sending fails."""

from __future__ import annotations

import logging
from collections.abc import Callable

from archiver.logging_setup import entry_fields
from archiver.partition import Claim
from archiver.state_store import RedisStateStore

log = logging.getLogger(__name__)

Dispatch = Callable[[str, int, int, int], None]


def dispatch_claim(
    store: RedisStateStore, dispatch: Dispatch, storage: str, partition: int, claim: Claim
) -> bool:
    """Send the task for ``claim``; if it cannot be sent, release the claim and say so.

    A released claim is picked up again by the next notification or sweep, instead of waiting
    out the dispatch timeout. A sent task is marked as sent: a claim left unmarked (its sender
    died in between) is taken over by the sweep soon after, not after the dispatch timeout.
    """
    return dispatch_claims(store, dispatch, [(storage, partition, claim)]) == 1


def dispatch_claims(
    store: RedisStateStore, dispatch: Dispatch, claims: list[tuple[str, int, Claim]]
) -> int:
    """``dispatch_claim`` for many claims, with all the sent marks in one round trip.
    Returns how many were sent."""
    sent = []
    for storage, partition, claim in claims:
        try:
            dispatch(storage, partition, claim.lsn, claim.token)
        except Exception:
            log.exception(
                "could not send archive task; releasing claim",
                extra=entry_fields(storage, partition, claim.lsn),
            )
            store.release_claim(storage, partition, claim.lsn, claim.token)
            continue
        sent.append((storage, partition, claim.token))
    store.mark_dispatched_many(sent)
    return len(sent)
