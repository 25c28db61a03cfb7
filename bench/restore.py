"""Restore throughput against raw parallel GETs of the same objects, in the same run.

    .venv/bin/python -m bench.restore [--entries 2000] [--size 65536] [--parallel 8] [--rounds 3]

Both sides fetch the same objects from the same S3 server at the same parallelism and write
them into --dest-root (tmpfs by default; ``--dest-root /var/tmp`` for the VM's disk): the
baseline each object as one file, the archiver each entry's files after checking the object's
SHA-256 and its tar. Rounds alternate
between the two and the medians are compared, because the machine is shared and noisy.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from archiver.archive.catalog import partition_archives
from archiver.archive.restore import restore_partition
from archiver.dev.producer import write_entry
from archiver.runtime.archiving import copy_entry
from archiver.sinks.s3 import S3Sink
from archiver.sinks.urls import S3Location
from bench.common import s3_server, save

TMPFS = "/dev/shm"  # noqa: S108 - a private temporary directory is made inside it


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=2000)
    parser.add_argument("--size", type=int, default=64 * 1024, help="bytes of data per entry")
    parser.add_argument("--parallel", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--dest-root",
        default=TMPFS if Path(TMPFS).is_dir() else None,
        help="where restored entries are written (default: tmpfs, to measure the archiver's "
        "own cost rather than the disk's)",
    )
    args = parser.parse_args()

    with s3_server() as url, tempfile.TemporaryDirectory(dir=args.dest_root) as tmp:
        work = Path(tmp)
        sink = S3Sink.at(
            S3Location(
                "restore-bench", endpoint_url=url, region="us-east-1", addressing_style="path"
            )
        )
        sink.client.create_bucket(Bucket="restore-bench")
        wal = work / "wal"

        def upload(lsn: int) -> None:
            write_entry(wal, 1, lsn, {"MANIFEST": b"%d\n" % lsn, "data": os.urandom(args.size)})
            copy_entry(sink, "bench", wal, 1, lsn)

        print(f"uploading {args.entries} entries of {args.size} bytes ...", flush=True)
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(upload, range(1, args.entries + 1)))
        archives = partition_archives(sink, "bench", 1)
        total_bytes = sum(a.size for a in archives)

        def raw_gets() -> float:
            """Each object fetched and written as one file into the same destination."""
            dest = work / "raw"
            shutil.rmtree(dest, ignore_errors=True)
            dest.mkdir()
            started = time.monotonic()

            def get(key: str) -> int:
                body = sink.client.get_object(Bucket=sink.bucket, Key=key)["Body"].read()
                (dest / key.rsplit("/", 1)[1]).write_bytes(body)
                return len(body)

            with ThreadPoolExecutor(args.parallel) as pool:
                fetched = sum(pool.map(get, [a.key for a in archives]))
            assert fetched == total_bytes
            return time.monotonic() - started

        def restore() -> float:
            dest = work / "restored"
            shutil.rmtree(dest, ignore_errors=True)
            started = time.monotonic()
            summary = restore_partition(sink, "bench", 1, dest, parallel=args.parallel)
            assert summary.entries == args.entries
            return time.monotonic() - started

        raw_times, restore_times = [], []
        for round_ in range(1, args.rounds + 1):
            raw_times.append(raw_gets())
            restore_times.append(restore())
            print(f"round {round_}: raw {raw_times[-1]:.2f}s, restore {restore_times[-1]:.2f}s")
    raw, restored = statistics.median(raw_times), statistics.median(restore_times)
    mib = total_bytes / 2**20
    result = {
        "scenario": "restore",
        "entries": args.entries,
        "entry_bytes": args.size,
        "parallel": args.parallel,
        "dest_root": args.dest_root or tempfile.gettempdir(),
        "raw_gets_mib_s": round(mib / raw, 1),
        "restore_mib_s": round(mib / restored, 1),
        "ratio": round(raw / restored, 3),
        "target": 0.85,
        "raw_seconds": [round(t, 3) for t in raw_times],
        "restore_seconds": [round(t, 3) for t in restore_times],
    }
    print(
        f"\n| scenario | archiver | baseline (raw GETs written) | ratio | target |\n"
        "|---|---|---|---|---|\n"
        f"| restore {args.entries} x {args.size // 1024} KiB, parallel {args.parallel} "
        f"| {result['restore_mib_s']} MiB/s | {result['raw_gets_mib_s']} MiB/s "
        f"| {result['ratio']}x | >= 0.85x |"
    )
    kind = "tmpfs" if args.dest_root == TMPFS else "disk"
    print(f"saved {save(f'restore-{kind}', result)}")


if __name__ == "__main__":
    main()
