"""Buckets the Go original wrote, read through the CLI: a fileblob bucket (tars and ``.attrs``
with their MD5) and an S3 bucket of plain ``put_object`` uploads (no metadata, the ETag the
only checksum). Listed, verified and restored byte-identical; corrupt objects are caught by
their MD5, and objects with no checksum at all are named and refused unless accepted."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from archiver.cli import main
from archiver.core.integrity import Verdict, judge
from archiver.core.lsn import format_lsn
from archiver.core.object_names import archive_key
from archiver.dev.producer import write_entry
from archiver.sinks import open_sink
from archiver.sinks.s3 import S3Sink, recorded_by_s3
from tests.archive_factory import entry_files
from tests.original_bucket import archive_as_original, entry_tar
from tests.support import S3Endpoint


def _cli(sink_url: str, *args: str) -> Result:
    return CliRunner().invoke(main, list(args), env={"ARCHIVER_SINK_URL": sink_url})


def _json(result: Result) -> Any:
    return json.loads(result.stdout.strip().splitlines()[-1])


def _entries(root: Path, partition: int, lsns: range) -> None:
    for lsn in lsns:
        write_entry(root, partition, lsn, entry_files(partition, lsn))


def _assert_restored(dest: Path, partition: int, lsns: range) -> None:
    assert sorted(p.name for p in dest.iterdir() if not p.name.startswith(".")) == [
        format_lsn(lsn) for lsn in lsns
    ]
    for lsn in lsns:
        for path, content in entry_files(partition, lsn).items():
            assert (dest / format_lsn(lsn) / path).read_bytes() == content


@pytest.fixture
def fileblob_bucket(tmp_path: Path) -> Path:
    """Partition 1, LSNs 1-6, as the original's fileblob sink left them."""
    bucket, wal = tmp_path / "bucket", tmp_path / "wal"
    _entries(wal, 1, range(1, 7))
    archive_as_original(bucket, wal, "default", 1, range(1, 7))
    return bucket


def test_a_fileblob_bucket_is_listed_verified_by_md5_and_restored(
    fileblob_bucket: Path, tmp_path: Path
) -> None:
    url = fileblob_bucket.as_uri()
    listed = _cli(url, "ls", "default", "1", "--json")
    assert listed.exit_code == 0, listed.output
    assert [row["lsn"] for row in _json(listed)] == list(range(1, 7))

    verified = _cli(url, "verify", "--json")
    assert verified.exit_code == 0, verified.output
    report = _json(verified)
    assert report["problems"] == 0
    (partition,) = report["partitions"]
    assert (partition["strays"], partition["unverified"], partition["bad"]) == ([], [], [])
    assert partition["ranges"] == [{"first": 1, "last": 6}]

    dest = tmp_path / "restored"
    restored = _cli(url, "restore", "default", "1", "--dest", str(dest), "--json")
    assert restored.exit_code == 0, restored.output
    assert _json(restored)["unverified"] == 0
    _assert_restored(dest, 1, range(1, 7))
    # Reading changed nothing of the original's: its attributes are as fileblob wrote them.
    for lsn in range(1, 7):
        attributes = fileblob_bucket / (archive_key("default", 1, lsn) + ".attrs")
        assert json.loads(attributes.read_bytes())["user.metadata"] is None


def test_a_corrupted_object_of_the_original_is_flagged_and_refused(
    fileblob_bucket: Path, tmp_path: Path
) -> None:
    path = fileblob_bucket / archive_key("default", 1, 3)
    data = bytearray(path.read_bytes())
    data[700] ^= 0x01  # one bit, inside a file's contents: the tar is still sound
    path.write_bytes(bytes(data))
    url = fileblob_bucket.as_uri()

    verified = _cli(url, "verify", "--json")
    assert verified.exit_code == 1
    (partition,) = _json(verified)["partitions"]
    ((key, problem),) = [(b["key"], b["problem"]) for b in partition["bad"]]
    assert key == archive_key("default", 1, 3)
    assert problem.startswith("MD5 ")
    assert "does not match recorded" in problem
    assert f"BAD {key}: MD5" in _cli(url, "verify").output

    dest = tmp_path / "restored"
    # Accepting unverified objects does not accept a corrupt one.
    restored = _cli(url, "restore", "default", "1", "--dest", str(dest), "--accept-unverified")
    assert restored.exit_code == 1
    assert f"{key} is corrupt: MD5" in restored.output
    _assert_restored(dest, 1, range(1, 3))


def test_a_damaged_attributes_file_is_a_problem_not_a_pass(fileblob_bucket: Path) -> None:
    (fileblob_bucket / (archive_key("default", 1, 2) + ".attrs")).write_bytes(b'{"md5": 7')
    verified = _cli(fileblob_bucket.as_uri(), "verify", "--json")
    assert verified.exit_code == 1
    (partition,) = _json(verified)["partitions"]
    assert [b["key"] for b in partition["bad"]] == [archive_key("default", 1, 2)]
    assert "its .attrs file cannot be read" in partition["bad"][0]["problem"]


def test_an_object_with_no_attributes_is_unverified_listed_and_refused_unless_accepted(
    fileblob_bucket: Path, tmp_path: Path
) -> None:
    # fileblob reads an object without attributes; nothing says what its bytes should be.
    key = archive_key("default", 1, 4)
    (fileblob_bucket / (key + ".attrs")).unlink()
    url = fileblob_bucket.as_uri()
    verified = _cli(url, "verify", "--json")
    assert verified.exit_code == 1
    (partition,) = _json(verified)["partitions"]
    assert [u["key"] for u in partition["unverified"]] == [key]
    assert partition["bad"] == []
    assert _cli(url, "verify", "--accept-unverified").exit_code == 0
    assert f"UNVERIFIED {key}: no checksum was recorded" in _cli(url, "verify").output

    dest = tmp_path / "restored"
    refused = _cli(url, "restore", "default", "1", "--dest", str(dest))
    assert refused.exit_code == 1
    assert f"{key} cannot be verified" in refused.output
    accepted = _cli(url, "restore", "default", "1", "--dest", str(dest), "--accept-unverified")
    assert accepted.exit_code == 0, accepted.output
    assert accepted.stderr.count("WARNING") == 1
    assert f"WARNING {key} was taken unverified" in accepted.stderr
    _assert_restored(dest, 1, range(1, 7))


def test_an_s3_bucket_of_plain_uploads_is_verified_by_etag(
    s3_endpoint: S3Endpoint, s3_bucket: str, tmp_path: Path
) -> None:
    wal = tmp_path / "wal"
    _entries(wal, 1, range(1, 6))
    client = s3_endpoint.client()
    for lsn in range(1, 5):  # as the original's go-cloud sink: no metadata
        client.put_object(
            Bucket=s3_bucket, Key=archive_key("default", 1, lsn), Body=entry_tar(wal, 1, lsn)
        )
    # LSN 5 went up in two parts: its ETag is not an MD5.
    data = entry_tar(wal, 1, 5) + b"\0" * (6 * 1024 * 1024)  # zero blocks: still a sound tar
    key = archive_key("default", 1, 5)
    upload = client.create_multipart_upload(Bucket=s3_bucket, Key=key)["UploadId"]
    first = 5 * 1024 * 1024  # S3's smallest part
    parts = []
    for number, body in ((1, data[:first]), (2, data[first:])):
        etag = client.upload_part(
            Bucket=s3_bucket, Key=key, UploadId=upload, PartNumber=number, Body=body
        )["ETag"]
        parts.append({"ETag": etag, "PartNumber": number})
    client.complete_multipart_upload(
        Bucket=s3_bucket, Key=key, UploadId=upload, MultipartUpload={"Parts": parts}
    )
    url = s3_endpoint.sink_url(s3_bucket)
    sink = open_sink(url)
    assert isinstance(sink, S3Sink)
    assert sink.recorded(archive_key("default", 1, 1)).md5 is not None

    verified = _cli(url, "verify", "--json")
    assert verified.exit_code == 1  # LSN 5 cannot be verified
    (partition,) = _json(verified)["partitions"]
    assert partition["bad"] == []
    assert [(u["key"], "2 parts" in u["reason"]) for u in partition["unverified"]] == [(key, True)]
    assert _cli(url, "verify", "--accept-unverified").exit_code == 0

    dest = tmp_path / "restored"
    stopped = _cli(url, "restore", "default", "1", "--dest", str(dest))
    assert stopped.exit_code == 1
    _assert_restored(dest, 1, range(1, 5))  # 1-4 verified by their ETags and restored
    finished = _cli(url, "restore", "default", "1", "--dest", str(dest), "--accept-unverified")
    assert finished.exit_code == 0, finished.output
    _assert_restored(dest, 1, range(1, 6))
    # On a store whose ETags are not MD5s, none is taken as one.
    distrusted = _cli(f"{url}&etag_is_md5=false", "verify", "--json")
    (partition,) = _json(distrusted)["partitions"]
    assert len(partition["unverified"]) == 5
    assert "etag_is_md5=false" in partition["unverified"][0]["reason"]


@pytest.mark.parametrize(
    ("answer", "verdict", "says"),
    [
        ({"ETag": '"900150983cd24fb0d6963f7d28e17f72"'}, Verdict.VERIFIED, "MD5 matches"),
        (
            {"ETag": '"900150983cd24fb0d6963f7d28e17f72"', "ServerSideEncryption": "AES256"},
            Verdict.VERIFIED,
            "MD5 matches",
        ),
        (
            {"ETag": '"900150983cd24fb0d6963f7d28e17f72"', "ServerSideEncryption": "aws:kms"},
            Verdict.UNVERIFIABLE,
            "SSE-KMS",
        ),
        (
            {"ETag": '"900150983cd24fb0d6963f7d28e17f72"', "SSECustomerAlgorithm": "AES256"},
            Verdict.UNVERIFIABLE,
            "SSE-C",
        ),
        ({"ETag": '"0b9f2bd51e23b0b1a3e3ba2e8fd4a79c-3"'}, Verdict.UNVERIFIABLE, "3 parts"),
        ({"ETag": '"0b9f2bd51e23b0b1a3e3ba2e8fd4a79c"'}, Verdict.CORRUPT, "does not match"),
        ({}, Verdict.UNVERIFIABLE, "ETag (none)"),
        (
            {
                "Metadata": {
                    "sha256": "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
                },
                "ETag": '"0b9f2bd51e23b0b1a3e3ba2e8fd4a79c-3"',
            },
            Verdict.VERIFIED,
            "SHA-256 matches",
        ),
        ({"Metadata": {"sha256": "not hex"}}, Verdict.CORRUPT, "is not a SHA-256"),
    ],
)
def test_which_s3_etags_are_md5s(answer: dict[str, Any], verdict: Verdict, says: str) -> None:
    # The bytes are b"abc": MD5 900150983cd24fb0d6963f7d28e17f72.
    sha256 = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    integrity = judge(recorded_by_s3(answer), sha256, "900150983cd24fb0d6963f7d28e17f72")
    assert integrity.verdict is verdict
    assert says in integrity.detail
