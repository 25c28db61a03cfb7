"""The ``.attrs`` format: what fileblob writes is read, what is written here fileblob reads."""

from __future__ import annotations

import base64
import hashlib
import json

import pytest

from archiver.sinks.attributes import new_attributes, recorded_in, with_checksums
from tests.original_bucket import fileblob_attributes

SHA256 = hashlib.sha256(b"abc").hexdigest()
MD5 = hashlib.md5(b"abc").hexdigest()


def test_fileblobs_attributes_give_the_md5_and_unknown_keys_are_ignored() -> None:
    recorded = recorded_in(fileblob_attributes(b"abc", etag="x", parts=None))
    assert (recorded.sha256, recorded.md5, recorded.damaged) == (None, MD5, None)


def test_written_attributes_read_back_and_are_go_json() -> None:
    data = new_attributes("s/1/0000000000001.tar.zst", SHA256, MD5)
    assert data.endswith(b"}\n")
    assert b": " not in data  # compact, as Go's encoder writes it
    fields = json.loads(data)
    assert fields["user.content_type"] == "application/zstd"
    assert base64.b64decode(fields["md5"]) == hashlib.md5(b"abc").digest()
    recorded = recorded_in(data)
    assert (recorded.sha256, recorded.md5) == (SHA256, MD5)


def test_adding_checksums_keeps_everything_else() -> None:
    original = json.loads(fileblob_attributes(b"abc", etag="x"))
    updated = json.loads(with_checksums(json.dumps(original).encode(), "k.tar", SHA256, MD5))
    assert updated == {**original, "user.metadata": {"sha256": SHA256}}


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (b"not json", "not JSON"),
        (b"[1]", "not a JSON object"),
        (b'{"md5": "!!"}', "not base64"),
        (b'{"md5": "YWJj"}', "3 bytes, not 16"),
        (b'{"user.metadata": {"sha256": "short"}}', "is not a SHA-256"),
        (b'{"user.metadata": ["a"]}', "not a map"),
    ],
)
def test_damaged_attributes_are_said_to_be(data: bytes, says: str) -> None:
    damaged = recorded_in(data).damaged
    assert damaged is not None
    assert says in damaged
