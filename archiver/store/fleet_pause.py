"""The fleet-wide pause after failures of the object store (``archiver.core.fleet_backoff``,
in ``fleet_*.lua``): every worker waits its turn, so that a sick store is not hammered."""

from __future__ import annotations

import redis

from archiver.store.codec import ms as _ms
from archiver.store.keys import RedisKeys
from archiver.store.scripts import LuaScripts


class FleetPause:
    def __init__(self, scripts: LuaScripts, keys: RedisKeys) -> None:
        self.scripts = scripts
        self.keys = keys

    def failure(self, min_seconds: float, max_seconds: float) -> float:
        """Start (or join) a fleet-wide pause; returns the seconds left in it."""
        left = self.scripts(
            "fleet_failure", keys=[self.keys.fleet], args=[_ms(min_seconds), _ms(max_seconds)]
        )
        return int(left) / 1000

    def success(self, min_seconds: float, pipe: redis.client.Pipeline | None = None) -> None:
        self.scripts(
            "fleet_success",
            keys=[self.keys.fleet],
            args=[_ms(min_seconds)],
            client=pipe,
        )

    def left(self) -> float:
        return int(self.scripts("fleet_pause_left", keys=[self.keys.fleet], args=[])) / 1000
