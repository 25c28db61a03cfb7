"""From an entry's tar to an archive object's bytes and back: compressed first, then sealed."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import BinaryIO

from archiver.core.compression import decoded, encode
from archiver.core.encryption import Keyring, SealedStream, opened, seal
from archiver.core.object_names import ArchiveForm, sealed_identity


def encoded(
    chunks: Iterator[bytes], form: ArchiveForm, sealed: SealedStream | None
) -> Iterator[bytes]:
    """The object's bytes for the tar ``chunks``; ``sealed`` is given exactly when the form is
    encrypted."""
    compressed = encode(chunks, form.compression)
    if not form.encrypted:
        return compressed
    if sealed is None:
        raise ValueError("an encrypted form needs its sealed stream")
    return seal(compressed, sealed)


def opened_tar(
    raw: BinaryIO, key: str, form: ArchiveForm, metadata: Mapping[str, str], keyring: Keyring
) -> BinaryIO:
    """A readable stream of the tar in the object ``key`` whose bytes ``raw`` gives. Read it
    to its end (``read_to_end``): only then is an encrypted object's last chunk authenticated
    and a compressed one's checksum checked."""
    if form.encrypted:
        data_key = keyring.open_key(metadata, sealed_identity(key))
        raw = opened(raw, data_key, key)
    return decoded(raw, form.compression)


def read_to_end(stream: BinaryIO) -> None:
    while stream.read(1024 * 1024):
        pass
