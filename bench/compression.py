"""What zstd costs and saves on realistic WAL entries, against plain tar in the same run.

    .venv/bin/python -m bench.compression [--entries 300]

Entries look like a git server's write-ahead log: a manifest, reference updates (text), and
pack data that is itself zlib-compressed, in the proportions of a busy repository. Both kinds
are archived into the same filesystem bucket on tmpfs, alternately, and compared.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
import zlib
from pathlib import Path

from archiver.archive.catalog import partition_archives
from archiver.core.object_names import Compression
from archiver.dev.producer import write_entry
from archiver.runtime.archiving import copy_entry
from archiver.sinks import FilesystemSink
from bench.common import save

TMPFS = "/dev/shm"  # noqa: S108 - a private temporary directory is made inside it
WORDS = [
    "commit",
    "tree",
    "parent",
    "author",
    "committer",
    "refs",
    "heads",
    "main",
    "feature",
    "fix",
    "update",
    "merge",
]


def entry_files(rng: random.Random, lsn: int) -> dict[str, bytes]:
    refs = "".join(
        f"{rng.getrandbits(160):040x} {rng.getrandbits(160):040x} refs/heads/"
        f"{rng.choice(WORDS)}-{rng.randrange(10_000)}\n"
        for _ in range(rng.randrange(1, 200))
    )
    text = " ".join(rng.choice(WORDS) for _ in range(rng.randrange(2_000, 40_000)))
    pack = zlib.compress(text.encode() + rng.randbytes(rng.randrange(1_000, 20_000)))
    return {
        "MANIFEST": f'{{"lsn": {lsn}, "operations": ["update_refs", "write_pack"]}}\n'.encode(),
        "refs/updates": refs.encode(),
        "objects/pack/pack.pack": pack,
        "objects/pack/pack.idx": rng.randbytes(rng.randrange(100, 4_000)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    base = TMPFS if Path(TMPFS).is_dir() else None
    timings: dict[Compression, list[float]] = {c: [] for c in Compression}
    sizes: dict[Compression, int] = {}
    with tempfile.TemporaryDirectory(dir=base) as tmp:
        wal = Path(tmp) / "wal"
        rng = random.Random(1)
        for lsn in range(1, args.entries + 1):
            write_entry(wal, 1, lsn, entry_files(rng, lsn))
        for round_ in range(args.rounds):
            for compression in Compression:
                root = Path(tmp) / f"bucket-{compression}-{round_}"
                root.mkdir()
                sink = FilesystemSink(root)
                started = time.monotonic()
                for lsn in range(1, args.entries + 1):
                    copy_entry(sink, "bench", wal, 1, lsn, compression)
                timings[compression].append(time.monotonic() - started)
                sizes[compression] = sum(a.size for a in partition_archives(sink, "bench", 1))
    plain = statistics.median(timings[Compression.NONE])
    zstd = statistics.median(timings[Compression.ZSTD])
    result = {
        "scenario": "compression",
        "entries": args.entries,
        "plain_bytes": sizes[Compression.NONE],
        "zstd_bytes": sizes[Compression.ZSTD],
        "size_ratio": round(sizes[Compression.NONE] / sizes[Compression.ZSTD], 2),
        "plain_entries_per_s": round(args.entries / plain, 1),
        "zstd_entries_per_s": round(args.entries / zstd, 1),
        "zstd_time_ratio": round(zstd / plain, 2),
    }
    print(
        "| archives | bytes | entries/s |\n|---|---|---|\n"
        f"| plain .tar | {sizes[Compression.NONE]:,} | {result['plain_entries_per_s']} |\n"
        f"| zstd .tar.zst | {sizes[Compression.ZSTD]:,} | {result['zstd_entries_per_s']} |\n"
        f"zstd stores {result['size_ratio']}x less and takes {result['zstd_time_ratio']}x the "
        "time to archive"
    )
    print(f"saved {save('compression', result)}")


if __name__ == "__main__":
    main()
