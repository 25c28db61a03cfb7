"""Every error the archiver raises on purpose, in one tree under ``ArchiverError``.

``InputError`` is what a user or operator can fix (a name, an LSN, a setting, a URL): the CLI
shows it as a usage error (exit status 2). The rest are failures of the world around (the store,
an entry, the destination of a restore) or refusals that protect the archive (exit status 1).
"""

from __future__ import annotations


class ArchiverError(Exception):
    """The root: the CLI turns any of these into one clear line."""


# Bad input -------------------------------------------------------------------------------------


class InputError(ArchiverError, ValueError):
    """Input that cannot be used as given; the message names what was wrong."""


class InvalidLSN(InputError):
    """A value that is not an LSN."""


class InvalidName(InputError):
    """A storage name or partition id that is unsafe as a key component."""


class InvalidNotification(InputError):
    """A notification that cannot be applied; the message says why."""


class ConfigError(InputError):
    """A setting is missing or malformed; the message names the variable."""


# The object store ------------------------------------------------------------------------------


class SinkError(ArchiverError):
    """The object store failed; the attempt is retried."""


class SinkUnusable(SinkError):
    """The store refuses this host for good, not for a moment: the bucket or its root is
    gone, or access is denied. Trying again will not help; an operator has to."""


class WriteOnceUnsupported(SinkUnusable):
    """The store replaced an object on a create-only write: nothing written there is safe."""


# The entry on the producer's disk --------------------------------------------------------------


class EntryError(ArchiverError):
    """The entry cannot be archived as it is: a failure of the entry, not of the store. It is
    retried with the partition's own backoff and, after ARCHIVER_ENTRY_FAILURES_BEFORE_STOP,
    stops the partition for an operator; the rest of the fleet does not back off for it."""


class NotYet(EntryError):
    """A condition that mends itself: retried with the partition's backoff until it does, and
    it stops nothing; the partition shows the error meanwhile."""


class EntryMissing(NotYet):
    """Not there (yet): a late rename or a disk mounted again mends it."""


class WriteUnderWay(NotYet):
    """Another write of the same name has made its attributes and not yet linked its object,
    or was cut off there: the object appears, or the attributes are replaced once they are
    old enough to be an interrupted write's."""


class MirrorBehind(NotYet):
    """ARCHIVER_ACK_POLICY=all, and a mirror cannot take the entry now (its partition is
    stopped by a conflict there): the acknowledgement waits, retried with the partition's
    backoff, until an operator resumes the mirror."""


class UnsafeEntry(EntryError):
    """Something other than regular files and directories; refused, never followed."""


class EntryChanged(EntryError):
    """A file changed size while it was being read."""


class EntryUnreadable(EntryError):
    """Reading the entry failed (permissions, an I/O error on the storage disk)."""


class AttemptOverran(EntryError):
    """The attempt ran past ARCHIVER_TASK_TIME_LIMIT_SECONDS and was ended: retried with the
    partition's backoff, and enough of them stop the partition (an entry too large for the
    limit); the fleet does not back off for it."""


class UnverifiableArchive(EntryError):
    """The entry is not on this host, and the object at its name does not verify on its own."""


class StorageUnavailable(ArchiverError):
    """The storage root is not a directory on this host (a disk not mounted, a wrong path):
    neither the entry's fault nor the object store's, so it stops no partition and pauses no
    one else."""


# Objects in the archive ------------------------------------------------------------------------


class ArchiveConflict(ArchiverError):
    """The archive object exists with content other than the entry's; it is never replaced."""


class MirrorConflict(ArchiverError):
    """A mirror holds an object at an archive's name with other content: that mirror's
    partition stops until an operator resumes it; the object is never replaced."""


class MirrorSourceUnusable(ArchiverError):
    """The primary's object cannot be copied to a mirror as it is: it fails its checksum."""


class UnsafeArchive(ArchiverError):
    """An archive that is not what the archiver writes, or tries to write outside its entry."""


class UndecodableArchive(ArchiverError):
    """The object is not what its name says: not zstd under a ``.zst`` name."""


class DecryptionFailed(UndecodableArchive):
    """An encrypted object does not open: altered, truncated, renamed, or sealed with a key of
    the same id but other bytes."""


class KeyUnavailable(ArchiverError):
    """The key an object is sealed with is not among the keys given; the message names its id.
    Nothing about the object is known from this: it is neither accepted nor called corrupt."""


class RestoreError(ArchiverError):
    """The restore cannot go on; entries restored before it stay in place."""


class Discontinuity(RestoreError):
    def __init__(self, expected: int, found: int | None) -> None:
        self.expected = expected
        self.found = found
        what = "the end of the archive" if found is None else f"LSN {found}"
        super().__init__(f"discontinuity in the archive: expected LSN {expected}, found {what}")


class NothingToRestore(RestoreError):
    """The archive holds nothing of the partition: a wrong name, or the wrong bucket."""


class ChecksumMismatch(RestoreError):
    """An object's bytes do not match the checksum recorded for them."""


class UnverifiedObject(RestoreError):
    """An object has no checksum to check its bytes against, and was not accepted as it is."""


class ForeignDestination(RestoreError):
    """The destination holds something other than an earlier run of this same restore."""


# The fleet -------------------------------------------------------------------------------------


class LeaseLost(ArchiverError):
    """This worker's claim was taken over or ran out: it may no longer write or commit."""


class HostUnusable(ArchiverError):
    """This host can archive nothing; the message says why, in one line."""


class DispatchFailed(ArchiverError):
    """The broker did not take a task; the notification stays pending."""
