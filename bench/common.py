"""What every benchmark needs: an S3 server on loopback, machine facts, a result file."""

from __future__ import annotations

import json
import os
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import boto3

from archiver.dev.local_redis import free_port
from archiver.sinks.s3 import CLIENT_CONFIG

RESULTS = Path(__file__).resolve().parent / "results"


@contextmanager
def s3_server() -> Iterator[str]:
    """moto's S3 server in its own process; yields its URL."""
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    with _serving(process, url, "moto's S3 server"):
        yield url


@contextmanager
def delay_proxy(url: str, delay: float) -> Iterator[str]:
    """``url`` (http://host:port) behind ``bench.delay_proxy``, ``delay`` seconds each way;
    yields the proxy's URL."""
    port = free_port()
    target = url.removeprefix("http://")
    process = subprocess.Popen(
        [
            sys.executable, "-m", "bench.delay_proxy",
            "--listen", str(port), "--target", target, "--delay", str(delay),
        ],
    )  # fmt: skip
    proxied = f"http://127.0.0.1:{port}"
    with _serving(process, proxied, "the delay proxy"):
        yield proxied


@contextmanager
def _serving(process: subprocess.Popen[bytes], url: str, what: str) -> Iterator[None]:
    """Wait until the S3 endpoint at ``url``, served by ``process``, answers; stop it after."""
    client = boto3.client("s3", endpoint_url=url, region_name="us-east-1", config=CLIENT_CONFIG)
    deadline = time.monotonic() + 30
    while True:
        try:
            client.list_buckets()
            break
        except Exception:
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError(f"{what} did not start") from None
            time.sleep(0.1)
    try:
        yield
    finally:
        process.terminate()
        process.wait(10)


def machine() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "command": " ".join(shlex.quote(a) for a in sys.orig_argv),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def save(name: str, result: dict[str, Any]) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **result}, indent=2) + "\n")
    return path


def show_table(header: list[str], rows: list[list[str]]) -> None:
    """A table on a terminal; markdown elsewhere (a log, a pipe), one line a row."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if console.is_terminal:
        table = Table(*header)
        for row in rows:
            table.add_row(*row)
        console.print(table)
        return
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")
