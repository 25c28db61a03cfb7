"""Fleet-wide event counters (fenced attempts, conflicts, re-dispatches...), for ``archiver
inspect`` and the fleet-state gauges."""

from __future__ import annotations

from typing import Any

from archiver.store.codec import text as _text
from archiver.store.keys import RedisKeys


class Counters:
    def __init__(self, client: Any, keys: RedisKeys) -> None:
        self.client = client
        self.keys = keys

    def add(self, event: str, amount: int = 1) -> None:
        self.client.hincrby(self.keys.stats, event, amount)

    def read(self) -> dict[str, int]:
        return {_text(k): int(v) for k, v in self.client.hgetall(self.keys.stats).items()}
