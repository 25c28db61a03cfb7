"""Fuzzing the two parsers that read untrusted bytes: notifications and entry tars.

Whatever arrives, the only outcomes are a value or the parser's own error: no other
exception, no hang, nothing written. Longer runs: ARCHIVER_FUZZ_EXAMPLES=100000.
"""

from __future__ import annotations

import contextlib
import io
import os
import tarfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from archiver.core.lsn import MAX_LSN, format_lsn, parse_decimal_lsn, parse_lsn
from archiver.core.notification import FIELDS, Notification, parse_notification
from archiver.core.tarball import entry_tar_chunks, extract_entry, read_entry_tar
from archiver.errors import InvalidLSN, InvalidNotification, UnsafeArchive

EXAMPLES = int(os.environ.get("ARCHIVER_FUZZ_EXAMPLES", "300"))
fuzz = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))

field_values = st.one_of(
    st.binary(max_size=300),
    st.text(max_size=300).map(str.encode),
    st.integers(-(2**70), 2**70).map(lambda n: str(n).encode()),
)
notifications = st.dictionaries(
    st.one_of(st.sampled_from([f.encode() for f in FIELDS]), st.binary(max_size=20)),
    field_values,
    max_size=20,
)


@fuzz
@given(notifications)
def test_the_notification_parser_only_accepts_or_refuses(raw: dict[bytes, bytes]) -> None:
    try:
        parsed = parse_notification(raw, known_storages=None)
    except InvalidNotification:
        return
    assert isinstance(parsed, Notification)
    assert 1 <= parsed.low <= parsed.high <= MAX_LSN
    assert parsed.partition >= 1


@fuzz
@given(st.text(max_size=30))
def test_lsn_parsers_only_accept_or_refuse(text: str) -> None:
    for parse in (parse_lsn, parse_decimal_lsn):
        try:
            lsn = parse(text)
        except InvalidLSN:
            continue
        assert 1 <= lsn <= MAX_LSN
    with contextlib.suppress(ValueError, InvalidLSN):
        assert parse_lsn(format_lsn(int(text))) == int(text)


def _good_tar() -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in [("0000000000001/", None), ("0000000000001/a", b"x" * 700)]:
            info = tarfile.TarInfo(name)
            if data is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


GOOD_TAR = _good_tar()


@fuzz
@given(
    st.one_of(
        st.binary(max_size=4096),
        # Mostly-valid tars with a few bytes changed reach deeper into the reader.
        st.lists(st.tuples(st.integers(0, len(GOOD_TAR) - 1), st.integers(0, 255)), max_size=8).map(
            lambda edits: bytes(dict(edits).get(i, b) for i, b in enumerate(GOOD_TAR))
        ),
    )
)
def test_the_tar_reader_only_extracts_or_refuses(tmp_path_factory, data: bytes) -> None:  # type: ignore[no-untyped-def]
    root: Path = tmp_path_factory.mktemp("fuzz")
    destination = root / "0000000000001"
    destination.mkdir()
    with contextlib.suppress(UnsafeArchive):
        extract_entry(io.BytesIO(data), "0000000000001", destination)
    outside = [p for p in root.rglob("*") if destination not in (p, *p.parents)]
    assert outside == []
    assert all(not p.is_symlink() for p in destination.rglob("*"))


def test_the_good_tar_is_read(tmp_path: Path) -> None:
    assert read_entry_tar(io.BytesIO(GOOD_TAR), "0000000000001") == 1
    entry = tmp_path / "e"
    entry.mkdir()
    (entry / "a").write_bytes(b"x" * 700)
    assert (
        read_entry_tar(
            io.BytesIO(b"".join(entry_tar_chunks(entry, "0000000000001"))), "0000000000001"
        )
        == 1
    )
