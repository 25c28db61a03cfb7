"""The fleet-wide backoff: after a failure of the object store every worker waits, so that a
sick store is not hammered; successes shorten the next wait again. The Redis scripts
``fleet_*.lua`` implement it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class FleetBackoff:
    # The next pause, once the current one is over (doubles per pause, up to the maximum).
    wait_ms: int | None = None
    # When the current pause ends (milliseconds, server clock); 0 when there has been none.
    until_ms: int = 0


def fleet_failure(fleet: FleetBackoff, now_ms: int, min_ms: int, max_ms: int) -> int:
    """Start a pause, or join the one under way: returns the milliseconds left in it."""
    if fleet.until_ms > now_ms:
        return fleet.until_ms - now_ms
    wait = min_ms if fleet.wait_ms is None else fleet.wait_ms
    fleet.until_ms = now_ms + wait
    fleet.wait_ms = min(wait * 2, max_ms)
    return wait


def fleet_success(fleet: FleetBackoff, min_ms: int) -> int:
    """Halve the next pause, down to the minimum; returns it."""
    if fleet.wait_ms is None or fleet.wait_ms <= min_ms:
        return min_ms
    fleet.wait_ms = max(fleet.wait_ms // 2, min_ms)
    return fleet.wait_ms


def fleet_pause_left(fleet: FleetBackoff, now_ms: int) -> int:
    return max(fleet.until_ms - now_ms, 0)
