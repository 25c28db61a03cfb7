"""The scheduler leader lease: several schedulers may run, one acts, the others stand by.

Leadership saves work; correctness does not rest on it. Applying a notification is idempotent
and every claim is an atomic, fenced script, so two schedulers acting at once (a paused leader
waking up after its lease ran out) duplicate effort at worst. A leader also stops acting on its
own once its lease may have run out, measured on its own clock from before its last renewal.
"""

from __future__ import annotations

import os
import socket
import time
import uuid

import redis

from archiver.store.codec import ms
from archiver.store.scripts import LuaScripts


def scheduler_identity() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class LeaderLease:
    def __init__(self, client: redis.Redis, key: str, identity: str, ttl_seconds: float) -> None:
        self.client = client
        self.key = key
        self.identity = identity
        self.ttl_seconds = ttl_seconds
        self._scripts = LuaScripts(client, ("hold_leadership", "release_leadership"))
        self._valid_until = 0.0

    def hold(self) -> bool:
        """Take the lease if it is free, renew it if it is ours; True while we lead."""
        asked_at = time.monotonic()
        held = bool(
            self._scripts(
                "hold_leadership", keys=[self.key], args=[self.identity, ms(self.ttl_seconds)]
            )
        )
        self._valid_until = asked_at + self.ttl_seconds if held else 0.0
        return held

    def still_valid(self) -> bool:
        return time.monotonic() < self._valid_until

    def release(self) -> None:
        self._valid_until = 0.0
        self._scripts("release_leadership", keys=[self.key], args=[self.identity])


def current_leader(client: redis.Redis, key: str) -> str | None:
    value = client.get(key)
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)
