"""The due index: which partitions the sweep looks at, and when.

A sorted set scored by when each partition's grant ends. Entries are added when work arrives
and removed only when a look finds none, so every partition with work is in it; the scheduler
adds the whole partition index again now and then, in case an addition was lost (the index is
outside the partitions' slots, so no script keeps it).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from archiver.core.object_names import PartitionId
from archiver.store.codec import text as _text
from archiver.store.keys import RedisKeys, split_partition_id


class DueIndex:
    def __init__(self, client: Any, keys: RedisKeys) -> None:
        self.client = client
        self.keys = keys

    def mark(self, partitions: Iterable[PartitionId], at_ms: int, only_new: bool) -> None:
        """Look at ``partitions`` by ``at_ms``: sooner if already due later, or (with
        ``only_new``) only those not in the index at all."""
        members = {self.keys.partition_id(pid): at_ms for pid in partitions}
        if members:
            self.client.zadd(self.keys.due, members, nx=only_new, lt=not only_new)

    def mark_after_apply(
        self, claimed: list[PartitionId], working: list[PartitionId], at_ms: int
    ) -> None:
        """After applying notifications, in one round trip: partitions just claimed are looked
        at again by ``at_ms`` (their task may never be sent); others with work are added if
        they are not in the index yet."""
        if not claimed and not working:
            return
        pipe = self.client.pipeline(transaction=False)
        if claimed:
            members = {self.keys.partition_id(pid): at_ms for pid in claimed}
            pipe.zadd(self.keys.due, members, lt=True)
        if working:
            members = {self.keys.partition_id(pid): at_ms for pid in working}
            pipe.zadd(self.keys.due, members, nx=True)
        pipe.execute()

    def due(self, now_ms: int, limit: int) -> list[PartitionId]:
        members = self.client.zrangebyscore(self.keys.due, "-inf", now_ms, start=0, num=limit)
        return [split_partition_id(_text(m)) for m in members]

    def reschedule(self, later: dict[PartitionId, int], done: list[PartitionId]) -> None:
        """After a look: when to look again, or (``done``: nothing to do) not until new work."""
        if not later and not done:
            return
        pipe = self.client.pipeline(transaction=False)
        if later:
            pipe.zadd(self.keys.due, {self.keys.partition_id(pid): at for pid, at in later.items()})
        if done:
            pipe.zrem(self.keys.due, *(self.keys.partition_id(pid) for pid in done))
        pipe.execute()
