"""The ``<key>.attrs`` file beside each object of a filesystem bucket.

It is the JSON go-cloud's ``fileblob`` driver reads and writes, so that the Go original and
this archiver can share a bucket: its ``md5`` is the standard base64 of the object's 16-byte
MD5, and its ``user.metadata`` string map holds the object's SHA-256 under ``sha256``. Keys
this module does not know are kept when it rewrites a file, and ignored when it reads one.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from typing import Any

from archiver.core.integrity import Recorded

ATTRIBUTES_SUFFIX = ".attrs"
# Where the SHA-256 goes: a key of ``user.metadata`` (on S3, ``x-amz-meta-sha256``).
CHECKSUM_METADATA = "sha256"
_SHA256 = re.compile(r"[0-9a-f]{64}")
_CONTENT_TYPES = {
    ".tar": "application/x-tar",
    ".zst": "application/zstd",
    ".enc": "application/octet-stream",
}


def content_type(key: str) -> str:
    for suffix, kind in _CONTENT_TYPES.items():
        if key.endswith(suffix):
            return kind
    return "application/octet-stream"


def new_attributes(
    key: str, sha256: str, md5: str, metadata: Mapping[str, str] | None = None
) -> bytes:
    """The file for a new object, with every field fileblob writes, in its order; ``metadata``
    goes into ``user.metadata`` beside the SHA-256."""
    fields = {
        "user.cache_control": "",
        "user.content_disposition": "",
        "user.content_encoding": "",
        "user.content_language": "",
        "user.content_type": content_type(key),
        "user.metadata": {**(metadata or {}), CHECKSUM_METADATA: sha256},
        "md5": _encode_md5(md5),
    }
    return _dump(fields)


def with_metadata(existing: bytes, updates: Mapping[str, str]) -> bytes:
    """``existing`` with ``updates`` in its ``user.metadata``; the checksums and all else kept."""
    fields = _load(existing)
    metadata = fields.get("user.metadata")
    merged = {**(metadata if isinstance(metadata, dict) else {}), **updates}
    if metadata and metadata.get(CHECKSUM_METADATA) is not None:
        merged[CHECKSUM_METADATA] = metadata[CHECKSUM_METADATA]
    fields["user.metadata"] = merged
    return _dump(fields)


def metadata_in(data: bytes) -> dict[str, str]:
    """The ``user.metadata`` string map of an ``.attrs`` file; empty if there is none."""
    try:
        metadata = _load(data).get("user.metadata")
    except ValueError:
        return {}
    if not isinstance(metadata, dict):
        return {}
    return {str(k): v for k, v in metadata.items() if isinstance(v, str)}


def with_checksums(existing: bytes, key: str, sha256: str, md5: str) -> bytes:
    """``existing`` with the SHA-256 added, and the MD5 where it had none; all else kept."""
    fields = _load(existing)
    metadata = fields.get("user.metadata")
    fields["user.metadata"] = {**(metadata if isinstance(metadata, dict) else {})}
    fields["user.metadata"][CHECKSUM_METADATA] = sha256
    if not fields.get("md5"):
        fields["md5"] = _encode_md5(md5)
    fields.setdefault("user.content_type", content_type(key))
    return _dump(fields)


def recorded_in(data: bytes) -> Recorded:
    """What an ``.attrs`` file records; a file that does not parse is a damaged record."""
    try:
        fields = _load(data)
        metadata = fields.get("user.metadata") or {}
        if not isinstance(metadata, dict):
            raise ValueError("user.metadata is not a map")
        sha256 = metadata.get(CHECKSUM_METADATA)
        if sha256 is not None and not (isinstance(sha256, str) and _SHA256.fullmatch(sha256)):
            raise ValueError(f"user.metadata.{CHECKSUM_METADATA} is not a SHA-256")
        md5 = _decode_md5(fields.get("md5"))
    except ValueError as exc:
        return Recorded(damaged=f"its .attrs file cannot be read: {exc}")
    return Recorded(sha256, md5, missing="its .attrs file records neither a SHA-256 nor an MD5")


def _load(data: bytes) -> dict[str, Any]:
    try:
        fields = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"not JSON ({exc})") from None
    if not isinstance(fields, dict):
        raise ValueError("not a JSON object")
    return fields


def _dump(fields: dict[str, Any]) -> bytes:
    # Go's json.Encoder: compact, one line.
    return (json.dumps(fields, separators=(",", ":")) + "\n").encode()


def _encode_md5(md5_hex: str) -> str:
    return base64.b64encode(bytes.fromhex(md5_hex)).decode()


def _decode_md5(value: object) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ValueError("md5 is not a string")
    try:
        raw = base64.b64decode(value, validate=True)
    except binascii.Error as exc:
        raise ValueError(f"md5 is not base64 ({exc})") from None
    if len(raw) != 16:
        raise ValueError(f"md5 holds {len(raw)} bytes, not 16")
    return raw.hex()
