"""Whether an object's bytes are the bytes its store recorded when they were written.

Objects the archiver writes record their SHA-256. Objects from elsewhere (the Go original
writes through go-cloud) may record only an MD5: in a filesystem bucket's ``.attrs`` file, or
as the ETag of a single-part S3 upload. Either is checked, the SHA-256 first. An object with
neither cannot be verified: that is its own verdict, never mistaken for a pass.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

NOTHING_RECORDED = "no checksum was recorded for it"


@dataclass(frozen=True)
class Recorded:
    """What the store recorded of an object's bytes (hex digests)."""

    sha256: str | None = None
    md5: str | None = None
    # A second SHA-256 on record that disagrees with the first (a checksum file of an earlier
    # release beside newer attributes): bytes matching either are the bytes written, since
    # damage cannot match a SHA-256; which record is stale is for an operator to clear up.
    other_sha256: str | None = None
    # Why nothing usable is recorded, for people.
    missing: str = NOTHING_RECORDED
    # The record itself is damaged (an ``.attrs`` file that does not parse): the object is
    # treated as corrupt, since its store could not read it either.
    damaged: str | None = None

    @property
    def needs_md5(self) -> bool:
        """Whether a reader must compute the MD5 too: only when no SHA-256 is recorded."""
        return self.sha256 is None


class Verdict(enum.StrEnum):
    VERIFIED = "verified"
    CORRUPT = "corrupt"
    UNVERIFIABLE = "unverifiable"


@dataclass(frozen=True)
class Integrity:
    verdict: Verdict
    # What was compared, or why nothing could be.
    detail: str


def judge(recorded: Recorded, sha256: str, md5: str | None) -> Integrity:
    """The verdict on bytes whose digests are ``sha256`` and ``md5`` (None: not computed)."""
    if recorded.damaged is not None:
        return Integrity(Verdict.CORRUPT, recorded.damaged)
    if recorded.sha256 is not None:
        if sha256 == recorded.sha256:
            return Integrity(Verdict.VERIFIED, "SHA-256 matches")
        if sha256 == recorded.other_sha256:
            return Integrity(
                Verdict.VERIFIED,
                f"SHA-256 matches one record; another records {recorded.sha256}",
            )
        return Integrity(
            Verdict.CORRUPT, f"SHA-256 {sha256} does not match recorded {recorded.sha256}"
        )
    if recorded.md5 is not None and md5 is not None:
        if md5 == recorded.md5:
            return Integrity(Verdict.VERIFIED, "MD5 matches (no SHA-256 recorded)")
        return Integrity(Verdict.CORRUPT, f"MD5 {md5} does not match recorded {recorded.md5}")
    return Integrity(Verdict.UNVERIFIABLE, recorded.missing)
