"""Names of everything the archiver keeps in Redis.

Per-partition keys carry the hash tag ``{storage/partition}`` so that each script touches one
cluster slot. Stream names are part of the public contract.
"""

from __future__ import annotations

from dataclasses import dataclass

from archiver.core.object_names import PartitionId, check_partition, check_storage

_GAPS = ":gaps"
_MARKS = ":marks"


@dataclass(frozen=True)
class RedisKeys:
    prefix: str = "archiver"

    def partition_id(self, pid: PartitionId) -> str:
        return f"{check_storage(pid.storage)}/{check_partition(pid.partition)}"

    def partition(self, pid: PartitionId) -> str:
        return f"{self.prefix}:partition:{{{self.partition_id(pid)}}}"

    def gaps(self, pid: PartitionId) -> str:
        return self.partition(pid) + _GAPS

    def marks(self, pid: PartitionId) -> str:
        """When recent high-water marks were announced: the age of the oldest waiting entry."""
        return self.partition(pid) + _MARKS

    def partition_keys(self, pid: PartitionId) -> list[str]:
        """The partition's hash, gaps and marks, which most scripts take, named at once."""
        key = self.partition(pid)
        return [key, key + _GAPS, key + _MARKS]

    def mirror(self, name: str, pid: PartitionId) -> str:
        """A mirror's progress on the partition, in the partition's slot."""
        return f"{self.prefix}:mirror:{name}:{{{self.partition_id(pid)}}}"

    def audit(self, pid: PartitionId) -> str:
        """Operators' actions on the partition, newest last."""
        return self.partition(pid) + ":audit"

    @property
    def partitions_index(self) -> str:
        """A set of every known ``storage/partition``, kept for scans and sweeps."""
        return f"{self.prefix}:partitions"

    @property
    def due(self) -> str:
        """A sorted set of partitions that may need the sweep, scored by when to look next
        (milliseconds, Redis's clock): every partition with work is in it."""
        return f"{self.prefix}:due"

    @property
    def fleet(self) -> str:
        return f"{self.prefix}:fleet"

    @property
    def replication_probe(self) -> str:
        """Written only to wait for the replicas to hold it (see ``store.replication``)."""
        return f"{self.prefix}:replication-probe"

    @property
    def leader(self) -> str:
        return f"{self.prefix}:scheduler:leader"

    @property
    def stats(self) -> str:
        return f"{self.prefix}:stats"

    @property
    def notifications(self) -> str:
        return f"{self.prefix}:notifications"

    @property
    def rejected_notifications(self) -> str:
        return f"{self.prefix}:notifications:rejected"

    @property
    def acks(self) -> str:
        return f"{self.prefix}:acks"

    @property
    def acks_published(self) -> str:
        """The newest LSN published per partition; its hash tag is the stream's whole name, so
        both share a cluster slot and one script keeps them together."""
        return f"{{{self.acks}}}:published"


def split_partition_id(member: str) -> PartitionId:
    storage, _, partition = member.rpartition("/")
    return PartitionId(check_storage(storage), check_partition(int(partition)))
