"""Each mirror's progress per partition, in Redis (see ``archiver.core.mirror_progress``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from archiver.core.mirror_progress import MirrorProgress
from archiver.core.object_names import PartitionId
from archiver.store.keys import RedisKeys
from archiver.store.scripts import LuaScripts

# Longest error text kept; the rest is in the log.
_ERROR_CHARS = 500


class MirrorProgressStore:
    """``targets`` binds each mirror's progress to where the mirror is (its name and the
    fingerprint of its location): a name given to another bucket, or a list of unnamed
    mirrors renumbered, starts from nothing rather than from another bucket's progress."""

    def __init__(
        self,
        client: Any,
        scripts: LuaScripts,
        keys: RedisKeys,
        targets: Mapping[str, str] | None = None,
    ) -> None:
        self.client = client
        self.scripts = scripts
        self.keys = keys
        self.targets = dict(targets or {})

    def _key(self, name: str, pid: PartitionId) -> str:
        target = self.targets.get(name)
        return self.keys.mirror(name if target is None else f"{name}~{target}", pid)

    def _run(self, name: str, pid: PartitionId, *args: Any) -> bool:
        return bool(self.scripts("mirror_progress", [self._key(name, pid)], list(args)))

    def claim(self, name: str, pid: PartitionId, token: str, ttl_ms: int) -> bool:
        return self._run(name, pid, "claim", token, ttl_ms)

    def advance(self, name: str, pid: PartitionId, token: str, lsn: int, ttl_ms: int) -> bool:
        return self._run(name, pid, "advance", token, str(lsn), ttl_ms)

    def extend(self, name: str, pid: PartitionId, lsn: int, previous: int | None) -> bool:
        return self._run(name, pid, "extend", str(lsn), "" if previous is None else str(previous))

    def fail(self, name: str, pid: PartitionId, token: str, error: str, delay_ms: int) -> bool:
        return self._run(name, pid, "fail", token, error[:_ERROR_CHARS], delay_ms)

    def conflict(self, name: str, pid: PartitionId, token: str, message: str) -> bool:
        return self._run(name, pid, "conflict", token, message[:_ERROR_CHARS])

    def stop(self, name: str, pid: PartitionId, message: str) -> bool:
        return self._run(name, pid, "stop", message[:_ERROR_CHARS])

    def release(self, name: str, pid: PartitionId, token: str) -> bool:
        return self._run(name, pid, "release", token)

    def resume(self, name: str, pid: PartitionId) -> bool:
        return self._run(name, pid, "resume")

    def load(self, name: str, pid: PartitionId) -> MirrorProgress:
        return progress_from(self.client.hgetall(self._key(name, pid)))

    def held_through(self, names: list[str], pids: list[PartitionId]) -> list[int | None]:
        """Per partition, the newest LSN up to which every mirror named holds everything."""
        lows: list[int | None] = [2**64 if names else None] * len(pids)
        for name in names:
            for i, progress in enumerate(self.load_many(name, pids)):
                low = lows[i]
                lows[i] = (
                    None if low is None or progress.through is None else min(low, progress.through)
                )
        return lows

    def load_many(self, name: str, pids: list[PartitionId]) -> list[MirrorProgress]:
        def fill(pipe: Any) -> None:
            for pid in pids:
                pipe.hgetall(self._key(name, pid))

        return [progress_from(raw) for raw in self.scripts.pipelined(fill)] if pids else []


def progress_from(raw: dict[Any, Any]) -> MirrorProgress:
    fields = {
        (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
        for k, v in raw.items()
    }

    def number(name: str) -> int | None:
        value = fields.get(name)
        return None if value is None else int(value)

    return MirrorProgress(
        through=number("through"),
        attempts=number("attempts") or 0,
        last_error=fields.get("last_error"),
        retry_ms=number("retry_ms"),
        conflict=fields.get("conflict"),
        holder=fields.get("holder"),
        lease_until=number("lease_until"),
    )
