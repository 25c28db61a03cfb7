"""Comparing the archive with the producer's entries: whether the object at an LSN's name holds
exactly the tar of the entry on disk. Compared by content, not bytes, since zstd's output may
differ between library versions."""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

import zstandard

from archiver.archive.catalog import Archive
from archiver.core.lsn import format_lsn
from archiver.core.object_names import FORMS, ArchiveForm, form_key
from archiver.core.object_stream import opened_tar
from archiver.core.tarball import entry_tar_chunks
from archiver.errors import UndecodableArchive
from archiver.sinks import Download, Sink
from archiver.sinks.base import hashing


def entry_tar_sha256(path: Path, name: str) -> str:
    digest = hashlib.sha256()
    for _ in hashing(entry_tar_chunks(path, name), digest):
        pass
    return digest.hexdigest()


def stored_content(sink: Sink, key: str, form: ArchiveForm) -> tuple[Download, str]:
    """The download of an object (its bytes' SHA-256 and the one recorded) and the SHA-256 of
    the tar inside it, read in bounded memory: the plaintext is hashed, never stored."""
    with tempfile.TemporaryFile() as spool:
        download = sink.download(key, spool)
        spool.seek(0)
        digest = hashlib.sha256()
        try:
            tar = opened_tar(spool, key, form, download.metadata, sink.keyring)
            while chunk := tar.read(1024 * 1024):
                digest.update(chunk)
        except zstandard.ZstdError as exc:
            raise UndecodableArchive(f"{key} already exists and cannot be decoded ({exc})") from exc
        return download, digest.hexdigest()


def holds_entry(sink: Sink, archive: Archive, path: Path) -> bool:
    """Whether the object holds exactly the tar of the entry at ``path``, compared by content
    (zstd's output may differ between library versions). Raises EntryError when the entry
    cannot be read."""
    ours = entry_tar_sha256(path, format_lsn(archive.lsn))
    try:
        _download, tar_sha256 = stored_content(sink, archive.key, archive.form)
    except UndecodableArchive:
        return False
    return tar_sha256 == ours


def existing_archive(
    sink: Sink,
    storage: str,
    partition: int,
    lsn: int,
    preferred: ArchiveForm,
    other_names_only: bool = False,
) -> tuple[str, ArchiveForm] | None:
    """The archive object of ``lsn`` under any of its names, the preferred one looked up first
    (or not at all, with ``other_names_only``)."""
    others = [f for f in FORMS if f != preferred]
    for form in others if other_names_only else [preferred, *others]:
        key = form_key(storage, partition, lsn, form)
        if sink.exists(key):
            return key, form
    return None
