from __future__ import annotations

from pathlib import Path

from archiver.core.wal_layout import entries_on_disk
from archiver.dev.producer import ReferenceLogManager
from archiver.store.streams import Streams
from tests.support import stream_entries


def test_entries_are_announced_and_pruned_only_once_acknowledged(
    streams: Streams, tmp_path: Path
) -> None:
    producer = ReferenceLogManager("default", tmp_path, streams)
    producer.start_at(4, 11)
    for _ in range(3):
        producer.append(4, {"f": b"x"})
    notifications = [
        fields for _id, fields in stream_entries(streams.client, "archiver:notifications")
    ]
    assert notifications[-1] == {"storage": "default", "partition": "4", "low": "11", "high": "13"}
    assert entries_on_disk(tmp_path, 4) == [11, 12, 13]
    streams.publish_ack("other", 4, 13)  # another storage's acknowledgement
    streams.publish_ack("default", 4, 12)
    assert producer.process_acks() == 2
    assert entries_on_disk(tmp_path, 4) == [13]
    assert producer.acknowledged == {4: 12}
    producer.notify(4)
    assert stream_entries(streams.client, "archiver:notifications")[-1][1]["low"] == "13"
    (tmp_path / "4" / "wal" / ".tmp-junk").mkdir()
    assert entries_on_disk(tmp_path, 4) == [13]
