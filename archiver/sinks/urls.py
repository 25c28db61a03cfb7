"""``ARCHIVER_SINK_URL``, parsed and checked in full without touching the store, so that a
process refuses a bad one when it reads its settings, before it starts anything."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from archiver.errors import ConfigError

DEFAULT_PART_SIZE = 8 * 1024 * 1024
MIN_PART_SIZE = 5 * 1024 * 1024
# Short connect timeout: a store that does not answer is a failed attempt, not a hang.
CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 60.0
MAX_ATTEMPTS = 3
ENCRYPTIONS = ("AES256", "aws:kms")


@dataclass(frozen=True)
class FileLocation:
    root: Path


@dataclass(frozen=True)
class S3Location:
    bucket: str
    prefix: str = ""
    endpoint_url: str | None = None
    region: str | None = None
    addressing_style: str = "auto"
    part_size: int = DEFAULT_PART_SIZE
    connect_timeout: float = CONNECT_TIMEOUT
    read_timeout: float = READ_TIMEOUT
    max_attempts: int = MAX_ATTEMPTS
    encryption: str | None = None
    kms_key_id: str | None = None
    # Whether a single-part upload's ETag is its MD5 (it is on AWS S3, not on every store).
    etag_is_md5: bool = True


def _refused(problem: str) -> ConfigError:
    return ConfigError(f"ARCHIVER_SINK_URL: {problem}")


def _number(query: dict[str, str], name: str, default: float, whole: bool) -> float:
    raw = query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw) if whole else float(raw)
    except ValueError:
        raise _refused(f"{name} must be a number, got {raw!r}") from None
    if not value > 0 or not math.isfinite(value):
        raise _refused(f"{name} must be positive, got {raw!r}")
    return value


def location_fingerprint(url: str) -> str:
    """Where a sink's objects are (a root; an endpoint, bucket and prefix), as a short digest:
    the same for URLs that differ only in their timeouts and the like."""
    location = parse_sink_url(url)
    if isinstance(location, FileLocation):
        where = f"file:{location.root}"
    else:
        where = f"s3:{location.endpoint_url or ''}/{location.bucket}/{location.prefix}"
    return hashlib.sha256(where.encode()).hexdigest()[:12]


def parse_sink_url(url: str) -> FileLocation | S3Location:
    """``file:///absolute/path`` or ``s3://bucket[/prefix]?endpoint_url=...&region=...``."""
    parts = urlsplit(url)
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
            raise _refused(f"a filesystem bucket is file:///absolute/path, got {url}")
        return FileLocation(Path(unquote(parts.path)))
    if parts.scheme != "s3":
        raise _refused(f"{url!r} is not supported: use file:///path or s3://bucket/prefix")
    if not parts.netloc:
        raise _refused(f"names no bucket: {url}")
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    known = {
        "endpoint_url",
        "region",
        "addressing_style",
        "part_size",
        "connect_timeout",
        "read_timeout",
        "max_attempts",
        "sse",
        "sse_kms_key_id",
        "etag_is_md5",
    }
    unknown = set(query) - known
    if unknown:
        raise _refused(f"unknown parameter(s) {', '.join(sorted(unknown))}")
    endpoint = query.get("endpoint_url")
    style = query.get("addressing_style", "path" if endpoint else "auto")
    if style not in ("auto", "path", "virtual"):
        raise _refused(f"addressing_style must be auto, path or virtual, got {style!r}")
    part_size = int(_number(query, "part_size", DEFAULT_PART_SIZE, whole=True))
    if part_size < MIN_PART_SIZE:
        raise _refused(f"part_size must be at least {MIN_PART_SIZE}, got {part_size}")
    encryption = query.get("sse")
    if encryption not in (None, *ENCRYPTIONS):
        raise _refused(f"sse must be AES256 or aws:kms, got {encryption!r}")
    kms_key_id = query.get("sse_kms_key_id")
    if kms_key_id and encryption != "aws:kms":
        raise _refused("sse_kms_key_id needs sse=aws:kms")
    etag_is_md5 = query.get("etag_is_md5", "true").lower()
    if etag_is_md5 not in ("true", "false"):
        raise _refused(f"etag_is_md5 must be true or false, got {etag_is_md5!r}")
    return S3Location(
        bucket=parts.netloc,
        prefix=parts.path.strip("/"),
        endpoint_url=endpoint,
        region=query.get("region"),
        addressing_style=style,
        part_size=part_size,
        connect_timeout=_number(query, "connect_timeout", CONNECT_TIMEOUT, whole=False),
        read_timeout=_number(query, "read_timeout", READ_TIMEOUT, whole=False),
        max_attempts=int(_number(query, "max_attempts", MAX_ATTEMPTS, whole=True)),
        encryption=encryption,
        kms_key_id=kms_key_id,
        etag_is_md5=etag_is_md5 == "true",
    )
