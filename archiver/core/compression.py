"""Optional zstd compression of archive objects (``<lsn>.tar.zst``); plain ``.tar`` by default."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import BinaryIO

import zstandard

from archiver.core.object_names import Compression

LEVEL = 3


def encode(chunks: Iterator[bytes], compression: Compression) -> Iterator[bytes]:
    if compression is Compression.NONE:
        yield from chunks
        return
    compressor = zstandard.ZstdCompressor(level=LEVEL, write_checksum=True).compressobj()
    for chunk in chunks:
        out = compressor.compress(chunk)
        if out:
            yield out
    yield compressor.flush()


def decoded(raw: BinaryIO, compression: Compression) -> BinaryIO:
    """A readable stream of the tar inside an archive object."""
    if compression is Compression.NONE:
        return raw
    reader = zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)
    return io.BufferedReader(reader)
