"""Watermark notifications: ``(storage, partition, low, high)`` from the producer.

They arrive from a stream anybody may write to, so every field is checked before use.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from archiver.core.lsn import parse_decimal_lsn
from archiver.core.object_names import check_storage, parse_partition
from archiver.errors import InvalidLSN, InvalidName, InvalidNotification

FIELDS = ("storage", "partition", "low", "high")
MAX_FIELD_BYTES = 256
MAX_FIELDS = 16
MAX_PAYLOAD_BYTES = 1024


@dataclass(frozen=True)
class Notification:
    storage: str
    partition: int
    # The oldest LSN the producer still has on disk.
    low: int
    # The newest LSN the producer has written.
    high: int

    def fields(self) -> dict[str, str]:
        return {
            "storage": self.storage,
            "partition": str(self.partition),
            "low": str(self.low),
            "high": str(self.high),
        }


# A stream entry's fields as redis-py returns them: bytes, or text from a client that decodes.
RawFields = Mapping[str, str] | Mapping[bytes, bytes]


def _encoded(value: str | bytes) -> bytes:
    encoded = value if isinstance(value, bytes) else value.encode("utf-8", "surrogatepass")
    if len(encoded) > MAX_FIELD_BYTES:
        raise InvalidNotification(f"field longer than {MAX_FIELD_BYTES} bytes")
    return encoded


def readable_fields(raw: RawFields) -> dict[str, str]:
    """Fields as text, whatever their bytes: for logs and the dead-letter stream."""
    return {
        (k.decode("utf-8", "replace") if isinstance(k, bytes) else k): (
            v.decode("utf-8", "replace") if isinstance(v, bytes) else v
        )
        for k, v in raw.items()
    }


def parse_notification(
    raw: RawFields, known_storages: frozenset[str] | None = None
) -> Notification:
    """Turn stream fields into a Notification, or raise InvalidNotification with the reason."""
    if len(raw) > MAX_FIELDS:
        raise InvalidNotification(f"more than {MAX_FIELDS} fields")
    encoded = {_encoded(k): _encoded(v) for k, v in raw.items()}
    size = sum(len(k) + len(v) for k, v in encoded.items())
    if size > MAX_PAYLOAD_BYTES:
        raise InvalidNotification(f"payload of {size} bytes is over {MAX_PAYLOAD_BYTES}")
    try:
        fields = {k.decode(): v.decode() for k, v in encoded.items()}
    except UnicodeDecodeError as exc:
        raise InvalidNotification("field is not UTF-8") from exc
    if size > MAX_PAYLOAD_BYTES:
        raise InvalidNotification(f"payload of {size} bytes is over {MAX_PAYLOAD_BYTES}")
    missing = [name for name in FIELDS if name not in fields]
    if missing:
        raise InvalidNotification(f"missing field(s): {', '.join(missing)}")
    try:
        storage = check_storage(fields["storage"])
        partition = parse_partition(fields["partition"])
        low = parse_decimal_lsn(fields["low"])
        high = parse_decimal_lsn(fields["high"])
    except (InvalidName, InvalidLSN) as exc:
        raise InvalidNotification(str(exc)) from exc
    if low > high:
        raise InvalidNotification(f"low water mark {low} is above high water mark {high}")
    if known_storages is not None and storage not in known_storages:
        raise InvalidNotification(f"unknown storage {storage!r}")
    return Notification(storage, partition, low, high)
