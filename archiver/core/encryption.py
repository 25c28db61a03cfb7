"""Client-side envelope encryption of archive objects (``<lsn>.tar.enc``, ``<lsn>.tar.zst.enc``).

Each object gets a fresh 256-bit data key. Its bytes are the data key's AES-256-GCM stream in
fixed-size chunks: each chunk is sealed with its position and a last-chunk flag in the nonce
and the stream's header as associated data, so that a chunk altered, moved, dropped or added
after the last fails to open. The data key travels with the object, wrapped (AES-256-GCM) by
a named key-encryption key and bound to the object's name, in two metadata fields: re-wrapping
under a newer key rewrites those fields and never the object's bytes.

Keys never leave a ``Keyring``: it shows only their ids.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import io
import os
import re
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from archiver.errors import ConfigError, DecryptionFailed, KeyUnavailable

MAGIC = b"WALARENC"
VERSION = 1
CHUNK_SIZE = 1024 * 1024
TAG_SIZE = 16
KEY_SIZE = 32
# MAGIC, version, chunk size, 16 random bytes: the associated data of every chunk.
_HEADER = struct.Struct(">8sBI16s")
HEADER_SIZE = _HEADER.size
# Metadata fields (S3 ``x-amz-meta-*``; the ``user.metadata`` map of an ``.attrs`` file).
KEY_ID_METADATA = "archiver-key-id"
WRAPPED_KEY_METADATA = "archiver-wrapped-key"
# A short fingerprint of the key-encryption key: two keys given the same id are told apart.
KEY_CHECK_METADATA = "archiver-key-check"
_WRAP_CONTEXT = b"archiver wrapped data key v1\x00"
_KEY_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def _chunk_nonce(index: int, last: bool) -> bytes:
    # A fresh data key per object, so the position alone keeps nonces unique.
    return b"\x00\x00\x00" + index.to_bytes(8, "big") + (b"\x01" if last else b"\x00")


def check_key_id(key_id: str) -> str:
    if not _KEY_ID.fullmatch(key_id):
        # Not shown: it may be a key written where its id belongs.
        raise ConfigError(
            "an encryption key id must be 1 to 64 letters, digits, '_', '.', '-', starting "
            "with a letter or digit (items are id:base64-key)"
        )
    return key_id


def parse_key(key_id: str, text: str) -> bytes:
    text = text.strip()
    try:
        # Standard or URL-safe base64.
        key = base64.b64decode(text.replace("-", "+").replace("_", "/"), validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(f"encryption key {key_id!r} is not base64") from None
    if len(key) != KEY_SIZE:
        raise ConfigError(
            f"encryption key {key_id!r} holds {len(key)} bytes; AES-256 needs {KEY_SIZE} "
            "(`archiver keygen` makes one)"
        )
    return key


def new_key_text() -> str:
    return base64.b64encode(os.urandom(KEY_SIZE)).decode()


class Keyring:
    """Key-encryption keys by id, and the one new objects are sealed with (None: new objects
    are stored in the clear, old ones still open)."""

    def __init__(self, keys: Mapping[str, bytes] | None = None, current: str | None = None) -> None:
        self._keys = dict(keys or {})
        if current is not None and current not in self._keys:
            raise ConfigError(
                f"the current encryption key {current!r} is not among the keys "
                f"({', '.join(self._keys) or 'none'})"
            )
        self.current = current

    @classmethod
    def parse(cls, text: str, current: str | None = None, choose_current: bool = True) -> Keyring:
        """``id:base64[,id:base64...]`` (or one per line); with one key and no ``current``,
        that key is current (unless not ``choose_current``)."""
        keys: dict[str, bytes] = {}
        for item in filter(None, (p.strip() for p in re.split(r"[,\n]", text))):
            key_id, sep, key_text = item.partition(":")
            if not sep:
                raise ConfigError("encryption keys are id:base64-key, separated by commas")
            check_key_id(key_id.strip())
            if key_id.strip() in keys:
                raise ConfigError(f"encryption key {key_id.strip()!r} is given twice")
            keys[key_id.strip()] = parse_key(key_id.strip(), key_text)
        if not keys:
            raise ConfigError("no encryption key is given")
        if current is None and len(keys) == 1 and choose_current:
            current = next(iter(keys))
        return cls(keys, current)

    def choosing(self, current: str | None) -> Keyring:
        """The same keys, with ``current`` the one new objects are sealed with."""
        return Keyring(self._keys, current)

    @property
    def ids(self) -> list[str]:
        return sorted(self._keys)

    @property
    def encrypting(self) -> bool:
        return self.current is not None

    def __bool__(self) -> bool:
        return bool(self._keys)

    def __str__(self) -> str:
        if not self._keys:
            return "none"
        return f"{', '.join(self.ids)} (current: {self.current or 'none, new objects in clear'})"

    def __repr__(self) -> str:
        return f"Keyring(ids={self.ids!r}, current={self.current!r})"

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Keyring)
            and self._keys == other._keys
            and self.current == other.current
        )

    def __hash__(self) -> int:
        return hash((tuple(self.ids), self.current))

    def _key(self, key_id: str, name: str) -> bytes:
        try:
            return self._keys[key_id]
        except KeyError:
            known = ", ".join(self.ids) or "none is configured"
            raise KeyUnavailable(
                f"{name} is sealed with encryption key {key_id!r}, which is not among the "
                f"keys given (ARCHIVER_ENCRYPTION_KEYS: {known})"
            ) from None

    def seal_key(self, data_key: bytes, identity: str, key_id: str | None = None) -> dict[str, str]:
        """The metadata fields that carry ``data_key``, wrapped by ``key_id`` (the current
        key by default) for the object named ``identity``."""
        key_id = key_id or self.current
        if key_id is None:
            raise KeyUnavailable("no current encryption key is set (ARCHIVER_ENCRYPTION_KEY_ID)")
        nonce = os.urandom(12)
        wrapped = AESGCM(self._key(key_id, identity)).encrypt(
            nonce, data_key, _wrap_context(key_id, identity)
        )
        return {
            KEY_ID_METADATA: key_id,
            WRAPPED_KEY_METADATA: base64.b64encode(nonce + wrapped).decode(),
            KEY_CHECK_METADATA: key_check(self._key(key_id, identity)),
        }

    def open_key(self, metadata: Mapping[str, str], identity: str) -> bytes:
        """The data key of the object named ``identity`` from its metadata fields."""
        key_id = metadata.get(KEY_ID_METADATA)
        wrapped_text = metadata.get(WRAPPED_KEY_METADATA)
        if not key_id or not wrapped_text:
            raise DecryptionFailed(f"{identity} is encrypted but its metadata holds no wrapped key")
        kek = self._key(key_id, identity)
        check = metadata.get(KEY_CHECK_METADATA)
        if check is not None and not hmac.compare_digest(check, key_check(kek)):
            # The key is not there, though one of its id is: a host given other bytes under
            # the same id. Retried on a host that has it, never taken for damage.
            raise KeyUnavailable(
                f"{identity} is sealed with encryption key {key_id!r}, and the key given under "
                "that id here is another one (its fingerprint differs)"
            )
        try:
            wrapped = base64.b64decode(wrapped_text, validate=True)
            return AESGCM(kek).decrypt(wrapped[:12], wrapped[12:], _wrap_context(key_id, identity))
        except (binascii.Error, ValueError, InvalidTag):
            raise DecryptionFailed(
                f"the data key of {identity} does not open with encryption key {key_id!r}: the "
                "key differs from the one it was sealed with, or the metadata or name changed"
            ) from None


def key_check(kek: bytes) -> str:
    """A fingerprint of a key-encryption key that reveals nothing of it (an HMAC of a label)."""
    return hmac.new(kek, b"archiver key check v1", hashlib.sha256).hexdigest()[:16]


def _wrap_context(key_id: str, identity: str) -> bytes:
    return _WRAP_CONTEXT + key_id.encode() + b"\x00" + identity.encode()


@dataclass(frozen=True)
class SealedStream:
    """How one object is sealed: its data key and its metadata fields."""

    data_key: bytes
    metadata: dict[str, str]
    salt: bytes


def _salt(data_key: bytes) -> bytes:
    # Derived from the data key: the same key seals the same plaintext to the same bytes.
    return hmac.new(data_key, b"archiver stream salt v1", hashlib.sha256).digest()[:16]


def new_sealed_stream(keyring: Keyring, identity: str) -> SealedStream:
    data_key = AESGCM.generate_key(bit_length=256)
    return SealedStream(data_key, keyring.seal_key(data_key, identity), _salt(data_key))


def resumed_sealed_stream(
    keyring: Keyring, identity: str, metadata: Mapping[str, str]
) -> SealedStream | None:
    """The stream of an earlier write of ``identity`` whose wrapped key ``metadata`` holds, if
    this keyring opens it: sealing the same plaintext again gives that write's bytes."""
    # Only under the current key, and only a wrapping with its key's fingerprint (an earlier
    # release's streams had a random salt, so would not seal to the same bytes).
    if metadata.get(KEY_ID_METADATA) != keyring.current or KEY_CHECK_METADATA not in metadata:
        return None
    try:
        data_key = keyring.open_key(metadata, identity)
    except (DecryptionFailed, KeyUnavailable):
        return None
    kept = {
        k: metadata[k]
        for k in (KEY_ID_METADATA, WRAPPED_KEY_METADATA, KEY_CHECK_METADATA)
        if k in metadata
    }
    return SealedStream(data_key, kept, _salt(data_key))


def seal(
    chunks: Iterator[bytes], stream: SealedStream, chunk_size: int = CHUNK_SIZE
) -> Iterator[bytes]:
    """The sealed bytes of ``chunks``: the same for the same plaintext and ``stream``, so that
    a writer may read its source twice."""
    header = _HEADER.pack(MAGIC, VERSION, chunk_size, stream.salt)
    aead = AESGCM(stream.data_key)
    yield header
    buffer = bytearray()
    index = 0
    for chunk in chunks:
        buffer += chunk
        # Strictly more than a chunk held: this one is not the last.
        while len(buffer) > chunk_size:
            yield aead.encrypt(_chunk_nonce(index, False), bytes(buffer[:chunk_size]), header)
            del buffer[:chunk_size]
            index += 1
    yield aead.encrypt(_chunk_nonce(index, True), bytes(buffer), header)


class _OpenedStream(io.RawIOBase):
    """The plaintext of a sealed stream, authenticated chunk by chunk as it is read. The end
    is reached only after the last chunk opened: a truncated stream fails, never ends early."""

    def __init__(self, raw: BinaryIO, data_key: bytes, name: str) -> None:
        self._raw = raw
        self._name = name
        header = _read_exactly(raw, HEADER_SIZE)
        if len(header) < HEADER_SIZE:
            raise DecryptionFailed(f"{name} is too short to be an encrypted archive")
        magic, version, chunk_size, _salt = _HEADER.unpack(header)
        if magic != MAGIC or version != VERSION or not 0 < chunk_size <= 64 * 1024 * 1024:
            raise DecryptionFailed(f"{name} does not start with an encrypted archive's header")
        self._header = header
        self._sealed_size = chunk_size + TAG_SIZE
        self._aead = AESGCM(data_key)
        self._index = 0
        self._pending = b""
        self._next = _read_exactly(raw, self._sealed_size)
        self._finished = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        while not self._pending and not self._finished:
            self._open_next()
        count = min(len(buffer), len(self._pending))
        buffer[:count] = self._pending[:count]
        self._pending = self._pending[count:]
        return count

    def _open_next(self) -> None:
        sealed = self._next
        following = (
            _read_exactly(self._raw, self._sealed_size) if len(sealed) == self._sealed_size else b""
        )
        last = not following
        try:
            self._pending = self._aead.decrypt(
                _chunk_nonce(self._index, last), sealed, self._header
            )
        except InvalidTag:
            raise DecryptionFailed(
                f"{self._name}: chunk {self._index} does not authenticate (altered, reordered "
                "or truncated)"
            ) from None
        self._index += 1
        self._next = following
        self._finished = last


def _read_exactly(raw: BinaryIO, size: int) -> bytes:
    parts = []
    while size > 0:
        part = raw.read(size)
        if not part:
            break
        parts.append(part)
        size -= len(part)
    return b"".join(parts)


def opened(raw: BinaryIO, data_key: bytes, name: str) -> BinaryIO:
    """A readable stream of the plaintext of the sealed stream ``raw``."""
    return io.BufferedReader(_OpenedStream(raw, data_key, name), buffer_size=CHUNK_SIZE)
