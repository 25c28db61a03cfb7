"""Operators' changes: one script each, refused unless its precondition holds, and recorded in
the partition's audit trail. None acknowledges anything."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from archiver.core.object_names import PartitionId
from archiver.core.partition import Claim
from archiver.store.codec import ms as _ms
from archiver.store.codec import text as _text
from archiver.store.due_index import DueIndex
from archiver.store.keys import RedisKeys
from archiver.store.records import MAX_GAPS_KEPT
from archiver.store.scripts import LuaScripts


@dataclass(frozen=True)
class AdminResult:
    """An operator's change: done, or refused with the reason."""

    done: bool
    reason: str = ""
    claim: Claim | None = None
    lsn: int | None = None


class AdminOperations:
    def __init__(
        self, scripts: LuaScripts, keys: RedisKeys, due: DueIndex, now_ms: Callable[[], int]
    ) -> None:
        self.scripts = scripts
        self.keys = keys
        self.due = due
        self.now_ms = now_ms

    def _admin_keys(self, pid: PartitionId) -> list[str]:
        return [self.keys.partition(pid), self.keys.audit(pid)]

    def pause(self, pid: PartitionId, actor: str, reason: str, paused: bool = True) -> AdminResult:
        done, why = self.scripts(
            "admin_pause",
            keys=self._admin_keys(pid),
            args=["1" if paused else "0", actor, reason],
        )
        if int(done) and not paused:
            self._due_now(pid)
        return AdminResult(bool(int(done)), _text(why))

    def _due_now(self, pid: PartitionId) -> None:
        """After an operator's change: the sweep looks at the partition at once."""
        self.due.mark([pid], self.now_ms(), only_new=False)

    def release(self, pid: PartitionId, actor: str, reason: str) -> AdminResult:
        done, detail = self.scripts(
            "admin_release", keys=self._admin_keys(pid), args=[actor, reason]
        )
        if not int(done):
            return AdminResult(False, _text(detail))
        self._due_now(pid)
        return AdminResult(True, lsn=int(detail))

    def requeue(
        self, pid: PartitionId, actor: str, reason: str, lease_seconds: float
    ) -> AdminResult:
        reply = self.scripts(
            "admin_requeue",
            keys=self._admin_keys(pid),
            args=[_ms(lease_seconds), actor, reason],
        )
        if not int(reply[0]):
            return AdminResult(False, _text(reply[1]))
        claim = Claim(int(reply[1]), int(reply[2]))
        self._due_now(pid)
        return AdminResult(True, claim=claim, lsn=claim.lsn)

    def skip_to(self, pid: PartitionId, lsn: int, actor: str, reason: str) -> AdminResult:
        done, detail = self.scripts(
            "admin_skip_to",
            keys=[
                *self.keys.partition_keys(pid),
                self.keys.audit(pid),
            ],
            args=[lsn, MAX_GAPS_KEPT, actor, reason],
        )
        if not int(done):
            return AdminResult(False, _text(detail))
        self._due_now(pid)
        return AdminResult(True, lsn=int(detail))
