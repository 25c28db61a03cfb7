"""What client-side encryption costs: archiving, then verifying, sealed entries against plain
ones in the same run, on the same sink, alternately.

    .venv/bin/python -m bench.encryption [--rounds 4]

Two entry shapes (many small entries, a few large ones) go to a filesystem bucket on the real
disk under the working directory and to moto's S3 server on loopback, plain and sealed (and
with zstd, compressed and compressed-then-sealed). For each: entries and MiB a second, and the
process's CPU seconds per MiB, the median of the rounds.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import boto3

from archiver.archive.catalog import partition_archives
from archiver.archive.checks import check_archive
from archiver.core.encryption import Keyring, new_key_text
from archiver.core.object_names import Compression
from archiver.dev.producer import write_entry
from archiver.runtime.archiving import copy_entry
from archiver.sinks import FilesystemSink, Sink
from archiver.sinks.s3 import CLIENT_CONFIG, S3Sink
from archiver.sinks.urls import S3Location, parse_sink_url
from bench.common import machine, s3_server, save, show_table

SHAPES = {"small (64 KiB x 200)": (200, 64 * 1024), "large (16 MiB x 8)": (8, 16 * 1024 * 1024)}
FORMS = [
    ("plain", Compression.NONE, False),
    ("sealed", Compression.NONE, True),
    ("zstd", Compression.ZSTD, False),
    ("zstd+sealed", Compression.ZSTD, True),
]


def _write_entries(wal: Path, partition: int, count: int, size: int) -> None:
    for lsn in range(1, count + 1):
        # Half random, half text: compressible like a real log, not all of it.
        data = (
            os.urandom(size // 2) + (b"commit tree parent author " * (size // 52 + 1))[: size // 2]
        )
        write_entry(wal, partition, lsn, {"MANIFEST": b"lsn %d\n" % lsn, "data": data})


def _timed(work: Any) -> tuple[float, float]:
    wall, cpu = time.monotonic(), time.process_time()
    work()
    return time.monotonic() - wall, time.process_time() - cpu


def run_sink(name: str, make_sink: Any, wal: Path, rounds: int) -> list[dict[str, Any]]:
    rows = []
    for shape, (count, size) in SHAPES.items():
        partition = list(SHAPES).index(shape) + 1
        mib = count * size / 2**20
        samples: dict[str, dict[str, list[float]]] = {
            f: {"archive": [], "archive_cpu": [], "verify": [], "verify_cpu": []} for f, *_ in FORMS
        }
        for round_ in range(rounds):
            # Each round starts with another form: on a real disk, a form that follows a
            # large write pays for its writeback.
            for form, compression, sealed in (
                FORMS[round_ % len(FORMS) :] + FORMS[: round_ % len(FORMS)]
            ):
                sink: Sink = make_sink()

                def archive(
                    sink: Sink = sink,
                    compression: Compression = compression,
                    sealed: bool = sealed,
                    partition: int = partition,
                    count: int = count,
                ) -> None:
                    for lsn in range(1, count + 1):
                        copy_entry(
                            sink,
                            "bench",
                            wal,
                            partition,
                            lsn,
                            compression,
                            fresh=True,
                            encrypt=sealed,
                        )

                def verify(sink: Sink = sink, partition: int = partition) -> None:
                    for archive in partition_archives(sink, "bench", partition):
                        assert check_archive(sink, archive).refusal() is None

                wall, cpu = _timed(archive)
                samples[form]["archive"].append(wall)
                samples[form]["archive_cpu"].append(cpu)
                wall, cpu = _timed(verify)
                samples[form]["verify"].append(wall)
                samples[form]["verify_cpu"].append(cpu)
        plain = statistics.median(samples["plain"]["archive"])
        for form, *_ in FORMS:
            med = {k: statistics.median(v) for k, v in samples[form].items()}
            rows.append(
                {
                    "sink": name,
                    "entries": shape,
                    "form": form,
                    "archive_entries_per_s": round(count / med["archive"], 1),
                    "archive_mib_per_s": round(mib / med["archive"], 1),
                    "archive_cpu_s_per_mib": round(med["archive_cpu"] / mib, 4),
                    "archive_time_vs_plain": round(med["archive"] / plain, 2),
                    "verify_mib_per_s": round(mib / med["verify"], 1),
                    "verify_cpu_s_per_mib": round(med["verify_cpu"] / mib, 4),
                }
            )
    return rows


def one_gib_entry() -> None:
    """Peak RSS while one 1 GiB entry is sealed into a bucket on the disk, then verified."""
    import resource

    keyring = Keyring.parse(f"bench:{new_key_text()}")
    with tempfile.TemporaryDirectory(dir=Path.cwd(), prefix=".bench-encryption-") as tmp:
        wal = Path(tmp) / "wal"
        block = os.urandom(1024 * 1024)
        entry = wal / "1" / "wal" / "0000000000001"
        entry.mkdir(parents=True)
        with open(entry / "data", "wb") as f:
            for _ in range(1024):
                f.write(block)
        root = Path(tmp) / "bucket"
        root.mkdir()
        sink = FilesystemSink(root, keyring)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        started = time.monotonic()
        copy_entry(sink, "bench", wal, 1, 1, fresh=True, encrypt=True)
        sealed = time.monotonic() - started
        after_seal = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        (archive,) = partition_archives(sink, "bench", 1)
        started = time.monotonic()
        assert check_archive(sink, archive).refusal() is None
        verified = time.monotonic() - started
        after_verify = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = {
        "scenario": "encryption-1gib",
        "machine": machine(),
        "rss_before_mib": round(before / 1024, 1),
        "rss_growth_sealing_mib": round((after_seal - before) / 1024, 1),
        "rss_growth_verifying_mib": round((after_verify - before) / 1024, 1),
        "seal_seconds": round(sealed, 1),
        "verify_seconds": round(verified, 1),
    }
    print(result)
    print(f"saved {save('encryption-1gib', result)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument(
        "--one-gib", action="store_true", help="Only the peak RSS of one 1 GiB entry, sealed."
    )
    args = parser.parse_args()
    if args.one_gib:
        one_gib_entry()
        return
    keyring = Keyring.parse(f"bench:{new_key_text()}")
    rows: list[dict[str, Any]] = []
    # A real disk, not tmpfs: where a filesystem bucket lives.
    with tempfile.TemporaryDirectory(dir=Path.cwd(), prefix=".bench-encryption-") as tmp:
        wal = Path(tmp) / "wal"
        for partition, (count, size) in enumerate(SHAPES.values(), start=1):
            _write_entries(wal, partition, count, size)

        def filesystem() -> Sink:
            root = Path(tmp) / f"bucket-{uuid.uuid4().hex[:8]}"
            root.mkdir()
            return FilesystemSink(root, keyring)

        rows += run_sink("filesystem (disk)", filesystem, wal, args.rounds)
        with s3_server() as url:
            client = boto3.client("s3", endpoint_url=url, config=CLIENT_CONFIG)

            def s3() -> Sink:
                bucket = f"bench-{uuid.uuid4().hex[:8]}"
                client.create_bucket(Bucket=bucket)
                location = parse_sink_url(f"s3://{bucket}/wal?endpoint_url={url}&region=us-east-1")
                assert isinstance(location, S3Location)
                return S3Sink.at(location, keyring)

            rows += run_sink("S3 (moto, loopback)", s3, wal, args.rounds)
    show_table(
        [
            "sink",
            "entries",
            "form",
            "archive entries/s",
            "MiB/s",
            "CPU s/MiB",
            "time vs plain",
            "verify MiB/s",
            "verify CPU s/MiB",
        ],
        [
            [
                r["sink"],
                r["entries"],
                r["form"],
                str(r["archive_entries_per_s"]),
                str(r["archive_mib_per_s"]),
                str(r["archive_cpu_s_per_mib"]),
                f"{r['archive_time_vs_plain']}x",
                str(r["verify_mib_per_s"]),
                str(r["verify_cpu_s_per_mib"]),
            ]
            for r in rows
        ],
    )
    result = {"scenario": "encryption", "machine": machine(), "rows": rows}
    print(f"saved {save('encryption', result)}")


if __name__ == "__main__":
    main()
