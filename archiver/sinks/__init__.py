"""Object stores the archive can live in, chosen by ``ARCHIVER_SINK_URL``."""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlsplit

from archiver.core.encryption import Keyring
from archiver.errors import SinkError, SinkUnusable
from archiver.sinks.base import (
    Download,
    Sink,
    Source,
    StoredObject,
    WriteOutcome,
    WriteResult,
    computed_sha256,
)
from archiver.sinks.filesystem import FilesystemSink
from archiver.sinks.urls import FileLocation, parse_sink_url

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
    "open_mirrors",
    "open_sink",
    "preload_sink",
]


def open_sink(url: str, keyring: Keyring | None = None) -> Sink:
    """``file:///absolute/path`` or ``s3://bucket[/prefix]?endpoint_url=...&region=...``;
    ``keyring`` opens its encrypted objects."""
    location = parse_sink_url(url)
    if isinstance(location, FileLocation):
        return FilesystemSink(location.root, keyring)
    from archiver.sinks.s3 import S3Sink  # boto3 is only loaded when S3 is used

    return S3Sink.at(location, keyring)


def open_mirrors(urls: Mapping[str, str], keyring: Keyring | None = None) -> dict[str, Sink]:
    """The mirrors of ``ARCHIVER_MIRROR_URLS`` by name."""
    return {name: open_sink(url, keyring) for name, url in urls.items()}


def preload_sink(url: str) -> None:
    """Load what the sink at ``url`` needs before a process forks its workers, so that each
    starts with it: for S3, boto3 and the S3 model."""
    if urlsplit(url).scheme == "s3":
        from archiver.sinks.s3 import preload

        preload()
