"""Soak: steady load from the reference producer for many minutes, and what every process's
memory does per 10,000 entries archived.

A scheduler, one worker host and a private redis-server, as in production; the reference
producer appends entries at ``--rate``, announces them, and deletes them once acknowledged,
so the backlog stays bounded when the archiver keeps up. Every ``--sample-seconds`` it
records each process's RSS (the scheduler, the worker host's main process and each pool
process, redis-server), Redis's ``used_memory``, entries acknowledged and the backlog. The
growth per 10,000 entries is the least-squares slope over the samples after the warm-up.

    .venv/bin/python -m bench.soak --minutes 10 --rate 100

writes ``bench/results/soak.json`` (``--pool threads`` for a threads host).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from archiver.dev.producer import ReferenceLogManager
from bench.common import save, show_table
from bench.harness import STORAGE, Fleet, entry_files

MIB = 1024 * 1024
TARGET_MIB_PER_10K = 0.5


def slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of ``ys`` over ``xs`` (0 with fewer than two distinct ``xs``)."""
    n = len(xs)
    mean_x = sum(xs) / n
    mean_y = sum(ys) / n
    spread = sum((x - mean_x) ** 2 for x in xs)
    if spread == 0:
        return 0.0
    return sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / spread


def _rss(process: psutil.Process) -> float | None:
    try:
        return process.memory_info().rss / MIB
    except psutil.Error:
        return None


def run(options: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="soak-", dir=options.work_root))
    bucket = work / "bucket"
    bucket.mkdir()
    fleet = Fleet(
        work,
        f"file://{bucket}",
        concurrency=options.concurrency,
        pool=options.pool,
        env={"ARCHIVER_TASK_TIME_LIMIT_SECONDS": "1800"},  # the default, said out loud
    )
    try:
        scheduler = fleet.start_scheduler()
        host = fleet.start_worker()
        redis_process = psutil.Process(fleet.redis.process.pid)  # type: ignore[union-attr]
        producer = ReferenceLogManager(STORAGE, fleet.root, fleet.streams)
        partitions = list(range(1, options.partitions + 1))
        samples: list[dict[str, Any]] = []
        started = time.monotonic()
        ends = started + options.minutes * 60
        next_sample = started
        appended = 0
        turn = 0
        print(f"soak: {options.minutes} min at {options.rate}/s, work in {work}", flush=True)
        while (now := time.monotonic()) < ends:
            # Append what the rate allows by now, round-robin over the partitions.
            due = int((now - started) * options.rate) - appended
            for _ in range(max(0, due)):
                partition = partitions[turn % len(partitions)]
                turn += 1
                lsn = producer.high.get(partition, 0) + 1
                producer.append(partition, entry_files(partition, lsn, options.size))
                appended += 1
            producer.process_acks(block_ms=20)
            if now >= next_sample:
                next_sample += options.sample_seconds
                acked = sum(producer.acknowledged.values())
                rss = {"scheduler": _rss(scheduler), "worker-main": _rss(host)}
                for child in host.children():
                    rss[f"worker-pool-{child.pid}"] = _rss(child)
                rss["redis-server"] = _rss(redis_process)
                info: Any = fleet.client.info("memory")
                samples.append(
                    {
                        "seconds": round(now - started, 1),
                        "appended": appended,
                        "acknowledged": acked,
                        "backlog": appended - acked,
                        "rss_mib": rss,
                        "redis_used_memory_mib": int(info["used_memory"]) / MIB,
                    }
                )
                print(
                    f"{now - started:6.0f}s acked {acked:7d} backlog {appended - acked:5d} "
                    f"worker-main {rss['worker-main']:.1f} MiB",
                    flush=True,
                )
        return _summary(options, samples)
    finally:
        fleet.stop()


def _summary(options: argparse.Namespace, samples: list[dict[str, Any]]) -> dict[str, Any]:
    steady = [s for s in samples if s["seconds"] >= options.warmup_seconds]
    entries = [s["acknowledged"] / 10_000 for s in steady]
    series: dict[str, list[float]] = {}
    for name in steady[0]["rss_mib"]:
        values = [s["rss_mib"].get(name) for s in steady]
        if all(v is not None for v in values):  # a process that lived through the run
            series[name] = values
    series["redis used_memory"] = [s["redis_used_memory_mib"] for s in steady]
    growth = {name: slope(entries, values) for name, values in series.items()}
    return {
        "options": vars(options),
        "entries_acknowledged": samples[-1]["acknowledged"],
        "entries_per_second": (steady[-1]["acknowledged"] - steady[0]["acknowledged"])
        / max(1e-9, steady[-1]["seconds"] - steady[0]["seconds"]),
        "backlog_max": max(s["backlog"] for s in steady),
        "backlog_last": samples[-1]["backlog"],
        "growth_mib_per_10k_entries": growth,
        "first_mib": {name: values[0] for name, values in series.items()},
        "last_mib": {name: values[-1] for name, values in series.items()},
        "target_mib_per_10k_entries": TARGET_MIB_PER_10K,
        "met": all(abs(g) < TARGET_MIB_PER_10K for g in growth.values()),
        "samples": samples,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=100.0, help="entries appended per second")
    parser.add_argument("--partitions", type=int, default=50)
    parser.add_argument("--size", type=int, default=4096, help="bytes of data per entry")
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--pool", choices=("prefork", "threads"), default="prefork")
    parser.add_argument("--sample-seconds", type=float, default=10.0)
    parser.add_argument(
        "--warmup-seconds", type=float, default=120.0, help="left out of the growth figures"
    )
    parser.add_argument(
        "--work-root",
        default="/var/tmp",  # noqa: S108 - a private directory is made inside it
        help="where the WAL and the filesystem bucket live (a real disk by default)",
    )
    options = parser.parse_args()
    result = run(options)
    path = save("soak" if options.pool == "prefork" else f"soak-{options.pool}", result)
    rows = [
        [
            name,
            f"{result['first_mib'][name]:.1f}",
            f"{result['last_mib'][name]:.1f}",
            f"{growth:+.3f}",
            "yes" if abs(growth) < TARGET_MIB_PER_10K else "NO",
        ]
        for name, growth in result["growth_mib_per_10k_entries"].items()
    ]
    show_table(["process", "MiB after warm-up", "MiB at the end", "MiB per 10,000", "met"], rows)
    print(
        f"{result['entries_acknowledged']} entries, {result['entries_per_second']:.0f}/s steady; "
        f"backlog at most {result['backlog_max']}, {result['backlog_last']} at the end; {path}"
    )


if __name__ == "__main__":
    main()
