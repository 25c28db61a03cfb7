"""A worker host's checks of its sink and storages, against real buckets."""

from __future__ import annotations

from pathlib import Path

from archiver.runtime.host_check import SinkWatch
from archiver.sinks import FilesystemSink, open_sink
from tests.faults import FaultProxy
from tests.support import S3Endpoint


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_sink_gone_for_good_is_reported_with_the_reason(tmp_path: Path) -> None:
    clock = Clock()
    bucket = tmp_path / "bucket"
    bucket.mkdir()
    watch = SinkWatch(FilesystemSink(bucket), every=30.0, clock=clock)
    assert watch.lost() is None
    bucket.rmdir()
    # Probed a moment ago: not again until ``every`` has passed.
    clock.now = 29.0
    assert watch.lost() is None
    clock.now = 30.0
    lost = watch.lost()
    assert lost is not None
    assert str(bucket) in lost
    assert "is not a directory" in lost


def test_a_sink_failing_for_now_is_not_lost(
    s3_endpoint: S3Endpoint, s3_bucket: str, proxy: FaultProxy
) -> None:
    proxy.mode = "reset"
    sink = open_sink(s3_endpoint.sink_url(s3_bucket).replace(s3_endpoint.url, proxy.url))
    assert SinkWatch(sink).lost() is None
    proxy.mode = "error"
    assert SinkWatch(sink).lost() is None
    assert proxy.injected["reset"] + proxy.injected["error"] > 0
