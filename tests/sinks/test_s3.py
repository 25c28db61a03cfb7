"""The S3 sink against moto's S3 server on loopback."""

from __future__ import annotations

import hashlib
import io
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from archiver.core.integrity import Verdict
from archiver.errors import EntryChanged, NotYet, SinkError, SinkUnusable, WriteUnderWay
from archiver.sinks import WriteOutcome, open_sink
from archiver.sinks.s3 import S3Sink
from archiver.sinks.urls import MIN_PART_SIZE
from tests.faults import FaultProxy
from tests.support import S3Endpoint, source


@pytest.fixture
def sink(s3_endpoint: S3Endpoint, s3_bucket: str) -> S3Sink:
    sink = open_sink(s3_endpoint.sink_url(s3_bucket, "pre/fix") + f"&part_size={MIN_PART_SIZE}")
    assert isinstance(sink, S3Sink)
    return sink


def test_small_objects_are_written_once(sink: S3Sink) -> None:
    assert not sink.exists("s/1/a.tar")
    assert sink.write("s/1/a.tar", source(b"one")).outcome is WriteOutcome.CREATED
    assert sink.exists("s/1/a.tar")
    assert sink.write("s/1/a.tar", source(b"other")).outcome is WriteOutcome.ALREADY_EXISTS
    assert sink.read("s/1/a.tar") == b"one"


def test_large_objects_go_multipart_and_are_written_once(sink: S3Sink, s3_bucket: str) -> None:
    chunk = bytes(range(256)) * 4096  # 1 MiB
    data = [chunk] * 12 + [b"tail"]
    result = sink.write("s/1/big.tar", source(*data))
    assert result.outcome is WriteOutcome.CREATED
    assert result.size == 12 * len(chunk) + 4
    assert sink.read("s/1/big.tar") == b"".join(data)
    started: list[dict[str, Any]] = []
    create_multipart_upload = sink.client.create_multipart_upload

    def recorded(**kwargs: Any) -> Any:
        started.append(kwargs)
        return create_multipart_upload(**kwargs)

    sink.client.create_multipart_upload = recorded  # type: ignore[method-assign]
    assert (
        sink.write("s/1/big.tar", source(*[b"x" * MIN_PART_SIZE] * 2)).outcome
        is WriteOutcome.ALREADY_EXISTS
    )
    assert started == []  # refused before uploading anything
    assert sink.read("s/1/big.tar") == b"".join(data)
    uploads = sink.client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", [])
    assert uploads == []


def test_a_failed_multipart_write_is_aborted_and_leaves_nothing(
    sink: S3Sink, s3_bucket: str
) -> None:
    def chunks() -> Iterator[bytes]:
        yield b"x" * (MIN_PART_SIZE + 10)
        raise OSError("entry vanished")

    with pytest.raises(OSError):
        sink.write("s/1/broken.tar", chunks)
    assert not sink.exists("s/1/broken.tar")
    assert sink.client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", []) == []


def test_a_failure_after_the_upload_started_aborts_it(sink: S3Sink, s3_bucket: str) -> None:
    big = [b"y" * MIN_PART_SIZE] * 3
    upload_part = sink.client.upload_part
    calls: list[int] = []

    def failing_second_part(**kwargs: Any) -> Any:
        calls.append(kwargs["PartNumber"])
        if kwargs["PartNumber"] == 2:
            raise sink.client.exceptions.ClientError(
                {"Error": {"Code": "InternalError", "Message": "injected"}}, "UploadPart"
            )
        return upload_part(**kwargs)

    sink.client.upload_part = failing_second_part  # type: ignore[method-assign]
    with pytest.raises(SinkError, match="injected"):
        sink.write("s/1/half.tar", source(*big))
    assert calls == [1, 2]  # the upload had started: one part was in
    assert not sink.exists("s/1/half.tar")
    assert sink.client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", []) == []


def test_an_object_made_during_a_multipart_upload_is_not_replaced(
    sink: S3Sink, s3_endpoint: S3Endpoint, s3_bucket: str
) -> None:
    # Someone else creates the object after the look before the upload, before its end:
    # only the create-once complete (If-None-Match on CompleteMultipartUpload) stands in
    # the way. moto enforces it, as AWS documents.
    theirs = b"someone else's object"
    complete = sink.client.complete_multipart_upload
    other = s3_endpoint.client()

    def racing(**kwargs: Any) -> Any:
        other.put_object(Bucket=s3_bucket, Key=kwargs["Key"], Body=theirs)
        return complete(**kwargs)

    sink.client.complete_multipart_upload = racing  # type: ignore[method-assign]
    result = sink.write("s/1/raced.tar", source(*[b"z" * MIN_PART_SIZE] * 2))
    assert result.outcome is WriteOutcome.ALREADY_EXISTS
    assert sink.read("s/1/raced.tar") == theirs
    assert sink.client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", []) == []


def test_listing_respects_prefix_and_partition_boundaries(sink: S3Sink) -> None:
    for key in ("s/1/0000000000001.tar", "s/10/0000000000001.tar", "s/1/0000000000002.tar"):
        sink.write(key, source(b"x"))
    assert [o.key for o in sink.list("s/1/")] == ["s/1/0000000000001.tar", "s/1/0000000000002.tar"]
    assert [o.size for o in sink.list("s/10/")] == [1]


def test_listing_paginates_past_1000_keys(sink: S3Sink) -> None:
    for i in range(1, 1106):
        sink.client.put_object(Bucket=sink.bucket, Key=f"pre/fix/p/1/{i:013d}.tar", Body=b"")
    assert len(list(sink.list("p/1/"))) == 1105


def test_a_missing_bucket_is_a_sink_error(s3_endpoint: S3Endpoint) -> None:
    sink = open_sink(s3_endpoint.sink_url("no-such-bucket"))
    with pytest.raises(SinkError):
        sink.write("s/1/a.tar", source(b"x"))
    with pytest.raises(SinkError):
        list(sink.list("s/1/"))


def test_the_probe_tells_a_store_gone_for_good_from_one_failing_for_now(
    sink: S3Sink, s3_endpoint: S3Endpoint, s3_bucket: str, proxy: FaultProxy
) -> None:
    sink.probe()
    assert "Contents" not in sink.client.list_objects_v2(Bucket=s3_bucket)
    with pytest.raises(SinkUnusable, match="no-such-bucket"):
        open_sink(s3_endpoint.sink_url("no-such-bucket")).probe()
    # A store answering 503 is failing, not gone: its tasks are worth retrying.
    proxy.mode = "error"
    failing = open_sink(s3_endpoint.sink_url(s3_bucket).replace(s3_endpoint.url, proxy.url))
    with pytest.raises(SinkError) as raised:
        failing.probe()
    assert not isinstance(raised.value, SinkUnusable)


def test_bad_sink_urls_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown"):
        open_sink("s3://bucket?endpoint=http://x")
    with pytest.raises(ValueError, match="no bucket"):
        open_sink("s3:///path")


def test_every_object_carries_its_sha256(sink: S3Sink) -> None:
    small = sink.write("s/1/small.tar", source(b"abc"))
    assert small.sha256 == hashlib.sha256(b"abc").hexdigest()
    assert sink.recorded("s/1/small.tar").sha256 == small.sha256
    big = [bytes([i]) * (1024 * 1024) for i in range(7)]
    result = sink.write("s/1/big.tar", source(*big))
    assert result.sha256 == hashlib.sha256(b"".join(big)).hexdigest()
    assert sink.recorded("s/1/big.tar").sha256 == result.sha256
    out = io.BytesIO()
    download = sink.download("s/1/big.tar", out)
    assert (download.sha256, download.recorded.sha256) == (result.sha256, result.sha256)
    assert download.integrity().verdict is Verdict.VERIFIED
    assert out.getvalue() == b"".join(big)


def test_an_entry_that_changes_between_passes_is_not_stored(sink: S3Sink, s3_bucket: str) -> None:
    calls = 0

    def changing() -> Iterator[bytes]:
        nonlocal calls
        calls += 1
        yield bytes([calls]) * (MIN_PART_SIZE + 1)

    # A failure of the entry, not of the store: it does not pause the fleet.
    with pytest.raises(EntryChanged, match="changed"):
        sink.write("s/1/moving.tar", changing)
    assert not sink.exists("s/1/moving.tar")
    assert sink.client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", []) == []


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ("&sse=AES256", {"ServerSideEncryption": "AES256"}),
        (
            "&sse=aws:kms&sse_kms_key_id=alias/wal",
            {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": "alias/wal"},
        ),
    ],
)
def test_server_side_encryption_is_passed_through(
    s3_endpoint: S3Endpoint, s3_bucket: str, params: str, expected: dict[str, str]
) -> None:
    sink = open_sink(s3_endpoint.sink_url(s3_bucket) + params + f"&part_size={MIN_PART_SIZE}")
    assert isinstance(sink, S3Sink)
    sink.write("small.tar", source(b"x"))
    sink.write("big.tar", source(b"y" * MIN_PART_SIZE, b"z"))
    for key in ("small.tar", "big.tar"):
        head = sink.client.head_object(Bucket=s3_bucket, Key=key)
        assert {k: head.get(k, "").split(":key/")[-1] for k in expected} == {  # type: ignore[attr-defined]
            k: v.split(":key/")[-1] for k, v in expected.items()
        }


def test_bad_encryption_settings_are_refused(s3_endpoint: S3Endpoint) -> None:
    with pytest.raises(ValueError, match="sse must be"):
        open_sink(s3_endpoint.sink_url("b") + "&sse=rot13")
    with pytest.raises(ValueError, match="needs sse=aws:kms"):
        open_sink(s3_endpoint.sink_url("b") + "&sse_kms_key_id=k")


_COUNT_MODEL_READS = """
import sys
from archiver.sinks import open_sink, preload_sink
from archiver.sinks import s3

reads = []
load_file = s3._LOADER.file_loader.load_file


def counted(path):
    data = load_file(path)
    if data is not None:  # a file read, not a probe for an optional one
        reads.append(path)
    return data


s3._LOADER.file_loader.load_file = counted
url = sys.argv[1]
if sys.argv[2] == "preload":
    preload_sink(url)
before = len(reads)
open_sink(url)
print(before, len(reads) - before)
"""


@pytest.mark.parametrize("preloaded", [True, False])
def test_a_worker_host_reads_the_s3_model_once_before_its_pool_forks(preloaded: bool) -> None:
    """workers.application preloads; a client made afterwards (in each forked worker process)
    reads no model file. Run in a fresh interpreter: this one has read them already. Making a
    client connects to nothing, so no endpoint is needed."""
    url = "s3://bucket?endpoint_url=http://127.0.0.1:9&region=us-east-1"
    mode = "preload" if preloaded else "lazy"
    output = subprocess.run(
        [sys.executable, "-c", _COUNT_MODEL_READS, url, mode],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    at_preload, at_client = (int(n) for n in output.split())
    if preloaded:
        assert at_preload > 0
        assert at_client == 0
    else:
        assert at_client > 0


def test_a_single_part_upload_does_not_wait_for_100_continue(sink: S3Sink) -> None:
    # Waiting is a round trip per entry, most of a small entry's time to a distant store.
    sent: dict[str, list[bytes | None]] = {"PutObject": [], "UploadPart": []}

    def seen(request: Any, event_name: str, **_: Any) -> None:
        sent[event_name.rsplit(".", 1)[1]].append(request.headers.get("Expect"))

    for operation in sent:
        sink.client.meta.events.register(f"before-send.s3.{operation}", seen)
    sink.write("s/1/small.tar", source(b"abc"))
    sink.write("s/1/big.tar", source(*[bytes([i]) * (1024 * 1024) for i in range(7)]))
    assert sent["PutObject"] == [None]
    assert sent["UploadPart"]
    assert all(expect == b"100-continue" for expect in sent["UploadPart"]), sent
    # Refused all the same when the object is there.
    assert sink.write("s/1/small.tar", source(b"xyz")).outcome is WriteOutcome.ALREADY_EXISTS


def test_a_conflicting_conditional_write_is_retried_without_pausing_the_fleet(
    sink: S3Sink,
) -> None:
    # AWS answers 409 ConditionalRequestConflict while another conditional write of the key
    # is under way; moto never does, so the answer is stubbed here (botocore's Stubber, on
    # the sink's own client).
    from botocore.stub import Stubber

    with Stubber(sink.client) as stubbed:
        stubbed.add_client_error(
            "put_object", service_error_code="ConditionalRequestConflict", http_status_code=409
        )
        with pytest.raises(WriteUnderWay, match="ConditionalRequestConflict"):
            sink.write("s/1/a.tar", source(b"abc"))
    assert issubclass(WriteUnderWay, NotYet)
