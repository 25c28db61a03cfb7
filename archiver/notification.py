"""Watermark notifications: ``(storage, partition, low, high)`` from the producer.

They arrive from a stream anybody may write to, so every field is checked before use.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from archiver.keys import InvalidName, check_storage, parse_partition
from archiver.lsn import InvalidLSN, parse_decimal_lsn

FIELDS = ("storage", "partition", "low", "high")
MAX_FIELD_BYTES = 256
MAX_FIELDS = 16
MAX_PAYLOAD_BYTES = 1024


class InvalidNotification(ValueError):
    """A notification that cannot be applied; the message says why."""


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


def _text(value: str | bytes) -> str:
    if isinstance(value, bytes):
        if len(value) > MAX_FIELD_BYTES:
            raise InvalidNotification(f"field longer than {MAX_FIELD_BYTES} bytes")
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidNotification("field is not UTF-8") from exc
    if len(value) > MAX_FIELD_BYTES:
        raise InvalidNotification(f"field longer than {MAX_FIELD_BYTES} bytes")
    return value


def parse_notification(
    raw: Mapping[str, str] | Mapping[bytes, bytes],
    known_storages: frozenset[str] | None = None,
) -> Notification:
    """Turn stream fields into a Notification, or raise InvalidNotification with the reason."""
    if len(raw) > MAX_FIELDS:
        raise InvalidNotification(f"more than {MAX_FIELDS} fields")
    fields = {_text(k): _text(v) for k, v in raw.items()}
    size = sum(len(k.encode()) + len(v.encode()) for k, v in fields.items())
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
