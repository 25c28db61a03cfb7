"""Client-side encryption end to end: real worker and scheduler processes, a real Redis and
moto's S3 server; objects read back and restored through the ``archiver`` command."""

from __future__ import annotations

import hashlib
import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from archiver.cli import main
from archiver.core.encryption import KEY_ID_METADATA, new_key_text
from archiver.core.lsn import format_lsn
from archiver.core.object_names import archive_key
from tests.support import S3Endpoint, System

OLD, NEW, STRANGER = new_key_text(), new_key_text(), new_key_text()


def archiver(system: System, *args: str, **env: str) -> Result:
    return CliRunner().invoke(main, list(args), env={**system.env(), **env})


@pytest.fixture
def sealed(
    redis_url: str, tmp_path: Path, s3_endpoint: S3Endpoint, s3_bucket: str
) -> Iterator[System]:
    system = System(
        redis_url=redis_url,
        tmp=tmp_path,
        sink_url=s3_endpoint.sink_url(s3_bucket, "wal"),
        env_overrides={"ARCHIVER_ENCRYPTION_KEYS": f"old:{OLD}", "ARCHIVER_COMPRESSION": "zstd"},
    )
    system.s3 = s3_endpoint.client()  # type: ignore[attr-defined]
    system.bucket = s3_bucket  # type: ignore[attr-defined]
    yield system
    system.close()


def head(system: System, lsn: int) -> dict[str, Any]:
    key = "wal/" + archive_key(system.storage, 1, lsn, encrypted=True).replace(
        ".tar.enc", ".tar.zst.enc"
    )
    return system.s3.head_object(Bucket=system.bucket, Key=key)  # type: ignore[attr-defined,no-any-return]


def raw(system: System, lsn: int) -> bytes:
    key = "wal/" + archive_key(system.storage, 1, lsn, encrypted=True).replace(
        ".tar.enc", ".tar.zst.enc"
    )
    return system.s3.get_object(Bucket=system.bucket, Key=key)["Body"].read()  # type: ignore[attr-defined,no-any-return]


def assert_restored(system: System, dest: Path, lsns: range) -> None:
    for lsn in lsns:
        for path, content in system.written[(1, lsn)].items():
            assert (dest / format_lsn(lsn) / path).read_bytes() == content, (lsn, path)


def test_round_trip_rotation_and_rewrap(sealed: System, tmp_path: Path) -> None:
    system = sealed
    worker = system.start_worker()
    system.start_scheduler()
    for lsn in range(1, 4):
        system.write(1, lsn, {"MANIFEST": b"customer data %d\n" % lsn, "log": os.urandom(3000)})
    system.notify(1, 1, 3)
    system.wait_acked(1, 3)
    for lsn in range(1, 4):
        assert b"customer data" not in raw(system, lsn)
        assert head(system, lsn)["Metadata"][KEY_ID_METADATA] == "old"
    # Rotation: a new current key; the old one stays to open what it sealed.
    worker.popen.send_signal(signal.SIGTERM)
    worker.popen.wait(30)
    rotated = {
        "ARCHIVER_ENCRYPTION_KEYS": f"old:{OLD},new:{NEW}",
        "ARCHIVER_ENCRYPTION_KEY_ID": "new",
    }
    system.env_overrides.update(rotated)
    system.start_worker()
    for lsn in range(4, 6):
        system.write(1, lsn)
    system.notify(1, 1, 5)
    system.wait_acked(1, 5)
    assert [head(system, lsn)["Metadata"][KEY_ID_METADATA] for lsn in range(1, 6)] == [
        "old",
        "old",
        "old",
        "new",
        "new",
    ]
    both = archiver(system, "restore", "default", "1", "--dest", str(tmp_path / "both"), "--json")
    assert both.exit_code == 0, both.output
    assert json.loads(both.stdout)["entries"] == 5
    assert_restored(system, tmp_path / "both", range(1, 6))

    # Re-wrapping: a dry run, then the data keys of 1-3 under the new key, bytes untouched.
    before = {lsn: hashlib.sha256(raw(system, lsn)).hexdigest() for lsn in range(1, 6)}
    # What each object recorded of its bytes when it was written.
    assert {lsn: head(system, lsn)["Metadata"]["sha256"] for lsn in range(1, 6)} == before
    dry = archiver(system, "rewrap", "--json")
    assert dry.exit_code == 0, dry.output
    assert (json.loads(dry.stdout)["rewrapped"], json.loads(dry.stdout)["current"]) == (3, 2)
    assert head(system, 1)["Metadata"][KEY_ID_METADATA] == "old"
    applied = archiver(system, "rewrap", "--apply")
    assert applied.exit_code == 0, applied.output
    assert "3 re-wrapped, 2 already current, 0 left" in applied.output
    assert {lsn: hashlib.sha256(raw(system, lsn)).hexdigest() for lsn in range(1, 6)} == before
    assert {lsn: head(system, lsn)["Metadata"]["sha256"] for lsn in range(1, 6)} == before
    assert {head(system, lsn)["Metadata"][KEY_ID_METADATA] for lsn in range(1, 6)} == {"new"}

    # The old key retired: everything still verifies and restores, byte for byte.
    only_new = {"ARCHIVER_ENCRYPTION_KEYS": f"new:{NEW}", "ARCHIVER_ENCRYPTION_KEY_ID": ""}
    verified = archiver(system, "verify", "--json", **only_new)
    assert verified.exit_code == 0, verified.output
    assert json.loads(verified.stdout)["problems"] == 0
    restored = archiver(
        system, "restore", "default", "1", "--dest", str(tmp_path / "new"), **only_new
    )
    assert restored.exit_code == 0, restored.output
    assert_restored(system, tmp_path / "new", range(1, 6))

    # The keys themselves never show: not in any process's log, nor in what operators read.
    shown = [
        system.logs(),
        archiver(system, "config").output,
        archiver(system, "config", "--json").output,
        archiver(system, "inspect", "partition", "default", "1", "--json").output,
    ]
    for text in shown:
        assert OLD not in text
        assert NEW not in text
    system.assert_invariants()


def test_a_wrong_key_and_a_tampered_object_are_refused_naming_what_is_wrong(
    sealed: System, tmp_path: Path
) -> None:
    system = sealed
    system.start()
    for lsn in range(1, 4):
        system.write(1, lsn)
    system.notify(1, 1, 3)
    system.wait_acked(1, 3)

    stranger = {"ARCHIVER_ENCRYPTION_KEYS": f"stranger:{STRANGER}"}
    verified = archiver(system, "verify", **stranger)
    assert verified.exit_code == 1
    assert verified.output.count("UNOPENED") == 3
    assert "sealed with encryption key 'old', which is not among the keys given" in verified.output
    refused = archiver(
        system, "restore", "default", "1", "--dest", str(tmp_path / "r1"), **stranger
    )
    assert refused.exit_code == 1
    assert "'old'" in refused.output
    assert not (tmp_path / "r1" / format_lsn(1)).exists()

    # Someone with write access to the bucket alters one chunk of LSN 2 and records the new
    # bytes' SHA-256, so that the checksum passes: the decryption does not.
    key = "wal/" + archive_key(system.storage, 1, 2, encrypted=True).replace(
        ".tar.enc", ".tar.zst.enc"
    )
    meta = head(system, 2)["Metadata"]
    data = bytearray(raw(system, 2))
    data[100] ^= 1
    meta["sha256"] = hashlib.sha256(data).hexdigest()
    system.s3.put_object(Bucket=system.bucket, Key=key, Body=bytes(data), Metadata=meta)  # type: ignore[attr-defined]
    verified = archiver(system, "verify", "--json")
    assert verified.exit_code == 1
    (report,) = json.loads(verified.stdout)["partitions"]
    assert [b["key"] for b in report["bad"]] == [key.removeprefix("wal/")]
    assert "does not authenticate" in report["bad"][0]["problem"]
    stopped = archiver(system, "restore", "default", "1", "--dest", str(tmp_path / "r2"))
    assert stopped.exit_code == 1
    assert "does not authenticate" in stopped.output
    # The entry before it is restored; nothing of the tampered one is left in place.
    assert (tmp_path / "r2" / format_lsn(1)).is_dir()
    assert not (tmp_path / "r2" / format_lsn(2)).exists()
    assert [p.name for p in (tmp_path / "r2").iterdir() if p.name.startswith(".tmp")] == []
