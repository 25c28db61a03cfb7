"""The two public streams: watermark notifications in, acknowledgements out.

Any program may ``XADD`` a notification; the producer reads acknowledgements to learn which
entries it may delete.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

import redis

from archiver.core.notification import Notification, RawFields
from archiver.store.keys import RedisKeys
from archiver.store.scripts import LuaScripts

# The scripts over the streams; the state store loads them too, so that its pipelines, which
# carry acknowledgements, find them after a restart.
STREAM_SCRIPTS = ("publish_acks", "done_with_notifications")

SCHEDULER_GROUP = "scheduler"
# Every scheduler reads as the same consumer, so a successor re-reads its predecessor's
# pending notifications (ID 0) before new ones.
SCHEDULER_CONSUMER = "scheduler"
# Acknowledgements are positional and repeated, so an old one can be trimmed safely.
ACKS_MAXLEN = 100_000
REJECTED_MAXLEN = 10_000


@dataclass(frozen=True)
class Acknowledgement:
    storage: str
    partition: int
    lsn: int


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class Streams:
    def __init__(self, client: redis.Redis, keys: RedisKeys) -> None:
        self.client = client
        self.keys = keys
        self._lua = LuaScripts(client, STREAM_SCRIPTS)

    def publish_notification(self, notification: Notification) -> str:
        return _text(self.client.xadd(self.keys.notifications, cast(Any, notification.fields())))

    def publish_ack(
        self, storage: str, partition: int, lsn: int, pipe: redis.client.Pipeline | None = None
    ) -> None:
        """Append an acknowledgement unless a newer one of the partition is already out (see
        publish_acks.lua); with ``pipe``, as part of the caller's round trip."""
        self.publish_acks([(storage, partition, lsn)], pipe)

    def publish_acks(
        self, acks: list[tuple[str, int, int]], pipe: redis.client.Pipeline | None = None
    ) -> None:
        """``publish_ack`` for many (storage, partition, lsn), in one script call."""
        if not acks:
            return
        self._lua(
            "publish_acks",
            keys=[self.keys.acks, self.keys.acks_published],
            args=[ACKS_MAXLEN, *(str(v) for ack in acks for v in ack)],
            client=pipe,
        )

    def newest_published(self, storage: str, partition: int) -> int | None:
        """The newest LSN of the partition ever acknowledged on the stream."""
        value = self.client.hget(self.keys.acks_published, f"{storage}/{partition}")
        return None if value is None else int(value)

    def read_acks(
        self, after_id: str, count: int = 1000, block_ms: int | None = None
    ) -> tuple[str, list[Acknowledgement]]:
        """Acknowledgements after ``after_id``; returns the last ID read and the acks."""
        reply: Any = self.client.xread({self.keys.acks: after_id}, count=count, block=block_ms)
        acks = []
        last_id = after_id
        for _stream, messages in reply or []:
            for message_id, raw in messages:
                last_id = _text(message_id)
                fields = {_text(k): _text(v) for k, v in raw.items()}
                acks.append(
                    Acknowledgement(fields["storage"], int(fields["partition"]), int(fields["lsn"]))
                )
        return last_id, acks

    def recent_acks(
        self, storage: str, partition: int, limit: int = 5, scan: int = 2000
    ) -> list[dict[str, Any]]:
        """The partition's newest acknowledgements among the stream's last ``scan`` messages,
        newest first; a bounded read, so a quiet partition may show none."""
        entries: Any = self.client.xrevrange(self.keys.acks, count=scan)
        found: list[dict[str, Any]] = []
        for message_id, raw in entries:
            fields = {_text(k): _text(v) for k, v in raw.items()}
            if fields.get("storage") == storage and fields.get("partition") == str(partition):
                # A stream ID starts with the server's time in milliseconds.
                at_ms = int(_text(message_id).split("-")[0])
                found.append({"lsn": int(fields["lsn"]), "at_ms": at_ms})
                if len(found) >= limit:
                    break
        return found

    def queued_notifications(self) -> int:
        """Notifications published and not yet handled by a scheduler."""
        return int(self.client.xlen(self.keys.notifications))

    def rejected_count(self) -> int:
        return int(self.client.xlen(self.keys.rejected_notifications))

    def ensure_scheduler_group(self) -> None:
        """Create the consumer group from the stream's start, so nothing published earlier is
        missed, even before the first scheduler ever ran."""
        try:
            self.client.xgroup_create(
                self.keys.notifications, SCHEDULER_GROUP, id="0", mkstream=True
            )
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def read_notifications(
        self, pending: bool, count: int, block_ms: int | None
    ) -> list[tuple[str, RawFields]]:
        """Our pending notifications (``pending=True``) or new ones, fields as read: checking
        and decoding them is ``parse_notification``'s job."""
        reply: Any = self.client.xreadgroup(
            SCHEDULER_GROUP,
            SCHEDULER_CONSUMER,
            {self.keys.notifications: "0" if pending else ">"},
            count=count,
            block=None if pending else block_ms,
        )
        messages: list[tuple[str, RawFields]] = []
        for _stream, entries in reply or []:
            for message_id, raw in entries:
                # A notification deleted while pending has no fields.
                messages.append((_text(message_id), raw or {}))
        return messages

    def done_with_notifications(self, message_ids: list[str]) -> None:
        """Acknowledge handled notifications and trim every handled one from the stream (see
        done_with_notifications.lua): the trim costs Redis a small fraction of deleting each
        entry by ID."""
        if not message_ids:
            return
        self._lua(
            "done_with_notifications",
            keys=[self.keys.notifications],
            args=[SCHEDULER_GROUP, *message_ids],
        )

    def rejected_notifications(self, limit: int) -> list[dict[str, Any]]:
        """The newest dead-lettered notifications, newest first."""
        entries: Any = self.client.xrevrange(self.keys.rejected_notifications, count=limit)
        rejected = []
        for message_id, raw in entries:
            fields = {_text(k): _text(v) for k, v in raw.items()}
            rejected.append(
                {
                    "id": _text(message_id),
                    "reason": fields.pop("reason", ""),
                    "fields": {k.removeprefix("field:"): v for k, v in fields.items()},
                }
            )
        return rejected

    def reject_notification(self, fields: Mapping[str, str], reason: str) -> None:
        record = {f"field:{k}"[:64]: v[:256] for k, v in list(fields.items())[:16]}
        record["reason"] = reason
        self.client.xadd(
            self.keys.rejected_notifications,
            cast(Any, record),
            maxlen=REJECTED_MAXLEN,
            approximate=True,
        )
