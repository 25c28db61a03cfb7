"""How far a mirror holds a partition's archive, and who is copying it there now.

Each mirror keeps this per partition, apart from the partition's own state: the primary gates
acknowledgements, and a mirror only follows. ``through`` moves forward only, and only for the
holder of the partition's copy lease; a conflict stops this mirror's partition alone, until an
operator resumes it. The Redis script ``mirror_progress.lua`` does the same; a test drives both.
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class MirrorProgress:
    # The newest LSN up to which the mirror holds every archive the primary holds.
    through: int | None = None
    # Failed copies since the last success, the latest one's error, and when to try again.
    attempts: int = 0
    last_error: str | None = None
    retry_ms: int | None = None
    # Why the mirror's partition is stopped: an object there with other content.
    conflict: str | None = None
    # The copy lease: its holder's token and when it ends.
    holder: str | None = None
    lease_until: int | None = None

    def standing(self, acknowledged: int | None) -> str:
        """How the mirror stands on the partition: conflicted (stopped for an operator),
        failing (copies failing, retried with backoff), behind or current."""
        if self.conflict is not None:
            return "conflicted"
        if self.attempts > 0:
            return "failing"
        return "behind" if self.lag(acknowledged) else "current"

    def lag(self, acknowledged: int | None) -> int:
        """Acknowledged entries the mirror may not hold yet (at most; gaps count too)."""
        if acknowledged is None:
            return 0
        return max(0, acknowledged - (self.through or 0))


def claim(p: MirrorProgress, token: str, now: int, ttl: int) -> tuple[MirrorProgress, bool]:
    if p.conflict is not None or (p.retry_ms is not None and p.retry_ms > now):
        return p, False
    if p.holder is not None and p.lease_until is not None and p.lease_until > now:
        return p, False
    return replace(p, holder=token, lease_until=now + ttl), True


def advance(
    p: MirrorProgress, token: str, lsn: int, now: int, ttl: int
) -> tuple[MirrorProgress, bool]:
    if p.holder != token:
        return p, False
    through = lsn if p.through is None else max(p.through, lsn)
    return (
        replace(
            p, through=through, attempts=0, last_error=None, retry_ms=None, lease_until=now + ttl
        ),
        True,
    )


def extend(p: MirrorProgress, lsn: int, previous: int | None) -> tuple[MirrorProgress, bool]:
    """A worker copied ``lsn`` to the mirror before acknowledging it (ARCHIVER_ACK_POLICY=all),
    and ``previous`` was the partition's acknowledged LSN before that commit: if the mirror
    held everything through ``previous``, it now holds everything through ``lsn``. With
    nothing acknowledged before, the primary may still hold older objects (state lost and not
    reconciled): the copier, which lists them, moves ``through`` then. Needs no lease: like
    every advance, it only moves ``through`` forward over archives the mirror holds."""
    if previous is None or p.through is None or p.through < previous:
        return p, False
    if p.through is not None and p.through >= lsn:
        return p, False
    return replace(p, through=lsn), True


def fail(
    p: MirrorProgress, token: str, error: str, now: int, delay: int
) -> tuple[MirrorProgress, bool]:
    if p.holder != token:
        return p, False
    return (
        replace(
            p,
            attempts=p.attempts + 1,
            last_error=error,
            retry_ms=now + delay,
            holder=None,
            lease_until=None,
        ),
        True,
    )


def conflict(p: MirrorProgress, token: str, message: str) -> tuple[MirrorProgress, bool]:
    if p.holder != token:
        return p, False
    return replace(p, conflict=message, holder=None, lease_until=None), True


def stop(p: MirrorProgress, message: str) -> tuple[MirrorProgress, bool]:
    """A worker found a conflict on the mirror while copying before an acknowledgement."""
    if p.conflict is not None:
        return p, False
    return replace(p, conflict=message), True


def release(p: MirrorProgress, token: str) -> tuple[MirrorProgress, bool]:
    if p.holder != token:
        return p, False
    return replace(p, holder=None, lease_until=None), True


def resume(p: MirrorProgress) -> tuple[MirrorProgress, bool]:
    """An operator's: the conflict cleared (the object moved aside) and the backoff dropped."""
    changed = p.conflict is not None or p.retry_ms is not None or p.attempts > 0
    return replace(p, conflict=None, attempts=0, last_error=None, retry_ms=None), changed
