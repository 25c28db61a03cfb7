"""The sealed stream format and the keyring, on real AES-256-GCM (the cryptography package)."""

from __future__ import annotations

import io
import os
import tracemalloc
from collections.abc import Iterator

import pytest

from archiver.core.encryption import (
    HEADER_SIZE,
    KEY_ID_METADATA,
    TAG_SIZE,
    Keyring,
    new_key_text,
    new_sealed_stream,
    opened,
    seal,
)
from archiver.errors import ConfigError, DecryptionFailed, KeyUnavailable

CHUNK = 1024


def keyring(*ids: str, current: str | None = None) -> Keyring:
    return Keyring.parse(",".join(f"{i}:{new_key_text()}" for i in ids), current=current)


def sealed_bytes(
    plain: bytes, ring: Keyring, identity: str = "s/1/0000000000001"
) -> tuple[bytes, dict[str, str]]:
    stream = new_sealed_stream(ring, identity)
    chunks = iter([plain[i : i + 700] for i in range(0, len(plain), 700)] or [b""])
    return b"".join(seal(chunks, stream, chunk_size=CHUNK)), stream.metadata


def open_all(
    data: bytes, metadata: dict[str, str], ring: Keyring, identity: str = "s/1/0000000000001"
) -> bytes:
    key = ring.open_key(metadata, identity)
    return opened(io.BytesIO(data), key, identity).read()


@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK, 3 * CHUNK + 17])
def test_round_trip_at_every_boundary(size: int) -> None:
    ring = keyring("k1")
    plain = os.urandom(size)
    data, metadata = sealed_bytes(plain, ring)
    assert open_all(data, metadata, ring) == plain
    if size >= 16:  # a shorter run could turn up in random ciphertext by chance
        assert plain[:64] not in data


def test_the_same_stream_seals_the_same_bytes_each_read() -> None:
    """A writer may read its source twice (S3 multipart: hash, then upload)."""
    ring = keyring("k1")
    stream = new_sealed_stream(ring, "x")
    plain = os.urandom(5 * CHUNK)
    first = b"".join(seal(iter([plain]), stream, CHUNK))
    assert first == b"".join(seal(iter([plain[:10], plain[10:]]), stream, CHUNK))
    assert first != b"".join(seal(iter([plain]), new_sealed_stream(ring, "x"), CHUNK))


def _sealed_chunks(data: bytes) -> tuple[bytes, list[bytes]]:
    body = data[HEADER_SIZE:]
    step = CHUNK + TAG_SIZE
    return data[:HEADER_SIZE], [body[i : i + step] for i in range(0, len(body), step)]


@pytest.mark.parametrize(
    "damage",
    [
        "truncated at a chunk boundary",
        "truncated mid-chunk",
        "chunks swapped",
        "chunk dropped",
        "byte flipped",
        "chunk appended",
        "header altered",
        "empty",
    ],
)
def test_damage_fails_to_open(damage: str) -> None:
    ring = keyring("k1")
    data, metadata = sealed_bytes(os.urandom(4 * CHUNK + 100), ring)
    header, chunks = _sealed_chunks(data)
    assert len(chunks) == 5
    damaged = {
        "truncated at a chunk boundary": header + b"".join(chunks[:3]),
        "truncated mid-chunk": data[:-50],
        "chunks swapped": header + chunks[1] + chunks[0] + b"".join(chunks[2:]),
        "chunk dropped": header + chunks[0] + b"".join(chunks[2:]),
        "byte flipped": data[:2000] + bytes([data[2000] ^ 1]) + data[2001:],
        "chunk appended": data + chunks[1],
        "header altered": header[:-1] + bytes([header[-1] ^ 1]) + b"".join(chunks),
        "empty": b"",
    }[damage]
    with pytest.raises(DecryptionFailed):
        open_all(damaged, metadata, ring)


def test_a_data_key_opens_only_under_its_own_name_and_key() -> None:
    ring = keyring("k1")
    data, metadata = sealed_bytes(b"entry", ring, identity="s/1/0000000000001")
    with pytest.raises(DecryptionFailed, match="does not open with encryption key 'k1'"):
        open_all(data, metadata, ring, identity="s/1/0000000000002")
    same_id_other_bytes = keyring("k1")
    with pytest.raises(KeyUnavailable, match="key given under that id here is another one"):
        open_all(data, metadata, same_id_other_bytes)
    unchecked = {k: v for k, v in metadata.items() if k != "archiver-key-check"}
    with pytest.raises(DecryptionFailed, match="'k1'"):
        open_all(data, unchecked, same_id_other_bytes)
    with pytest.raises(KeyUnavailable, match="key 'k1', which is not among the keys given"):
        open_all(data, metadata, keyring("k2"))
    with pytest.raises(DecryptionFailed, match="no wrapped key"):
        open_all(data, {}, ring)


def test_rotation_old_objects_open_new_ones_use_the_current_key() -> None:
    text = f"old:{new_key_text()},new:{new_key_text()}"
    before = Keyring.parse(text, current="old")
    data, metadata = sealed_bytes(b"sealed before", before)
    after = Keyring.parse(text, current="new")
    assert open_all(data, metadata, after) == b"sealed before"
    assert new_sealed_stream(after, "x").metadata[KEY_ID_METADATA] == "new"
    # Re-wrapping: the same data key under the new key, the bytes untouched.
    rewrapped = after.seal_key(after.open_key(metadata, "s/1/0000000000001"), "s/1/0000000000001")
    assert rewrapped[KEY_ID_METADATA] == "new"
    only_new = Keyring.parse(text.split(",")[1])
    assert open_all(data, rewrapped, only_new) == b"sealed before"


def test_keys_never_show() -> None:
    secret = new_key_text()
    ring = Keyring.parse(f"k1:{secret}")
    for shown in (str(ring), repr(ring), f"{ring!r} {ring}"):
        assert secret not in shown
        assert "k1" in shown


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("k1", "id:base64-key"),
        ("k1:notbase64!!", "not base64"),
        (f"k1:{new_key_text()[:20]}", "AES-256 needs 32"),
        (f"k1:{new_key_text()},k1:{new_key_text()}", "given twice"),
        (f"bad id:{new_key_text()}", "must be 1 to 64"),
        ("", "no encryption key"),
    ],
)
def test_bad_keys_are_refused_clearly(text: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        Keyring.parse(text)


def test_a_key_written_where_its_id_belongs_is_not_shown() -> None:
    key = new_key_text()
    with pytest.raises(ConfigError) as refused:
        Keyring.parse(f"{key}:k1")
    assert key not in str(refused.value)


def test_memory_stays_flat_for_a_large_stream() -> None:
    """128 MiB sealed and opened in real 1 MiB chunks with a few MiB traced at most."""
    ring = keyring("k1")
    stream = new_sealed_stream(ring, "big")
    block = os.urandom(256 * 1024)

    def plain() -> Iterator[bytes]:
        for _ in range(512):
            yield block

    class Pipe(io.RawIOBase):
        def __init__(self) -> None:
            self.source = seal(plain(), stream)
            self.left = b""

        def readable(self) -> bool:
            return True

        def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
            while not self.left:
                self.left = next(self.source, b"")
                if not self.left:
                    return 0
            n = min(len(buffer), len(self.left))
            buffer[:n] = self.left[:n]
            self.left = self.left[n:]
            return n

    tracemalloc.start()
    try:
        reader = opened(io.BufferedReader(Pipe()), stream.data_key, "big")
        total = 0
        while part := reader.read(1024 * 1024):
            total += len(part)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert total == 512 * len(block)
    assert peak < 16 * 1024 * 1024, peak
