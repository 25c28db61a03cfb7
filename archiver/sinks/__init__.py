"""Object stores the archive can live in, chosen by ``ARCHIVER_SINK_URL``."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlsplit

from archiver.sinks.base import (
    Download,
    Sink,
    SinkError,
    SinkUnusable,
    Source,
    StoredObject,
    WriteOutcome,
    WriteResult,
    computed_sha256,
)
from archiver.sinks.filesystem import FilesystemSink

__all__ = [
    "Download",
    "FilesystemSink",
    "Sink",
    "SinkError",
    "SinkUnusable",
    "Source",
    "StoredObject",
    "WriteOutcome",
    "WriteResult",
    "computed_sha256",
    "open_sink",
    "preload_sink",
]


def open_sink(url: str) -> Sink:
    """``file:///absolute/path`` or ``s3://bucket[/prefix]?endpoint_url=...&region=...``."""
    scheme = urlsplit(url).scheme
    if scheme == "file":
        parts = urlsplit(url)
        if parts.netloc not in ("", "localhost"):
            raise ValueError(f"file sink URL must be file:///absolute/path, got {url}")
        return FilesystemSink(Path(unquote(parts.path)))
    if scheme == "s3":
        from archiver.sinks.s3 import S3Sink  # boto3 is only loaded when S3 is used

        return S3Sink.from_url(url)
    raise ValueError(f"unsupported sink URL {url!r}: use file:///path or s3://bucket/prefix")


def preload_sink(url: str) -> None:
    """Load what the sink at ``url`` needs before a process forks its workers, so that each
    starts with it: for S3, boto3 and the S3 model."""
    if urlsplit(url).scheme == "s3":
        from archiver.sinks.s3 import preload

        preload()
