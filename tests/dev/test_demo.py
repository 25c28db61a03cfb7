"""The demo, as a new user runs it: a subprocess, a private Redis, a real worker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from archiver.dev.local_redis import free_port
from tests.support import REPO


def test_demo_archives_everything_with_a_private_redis(tmp_path: Path) -> None:
    env = {
        **os.environ,
        # Nobody answers here, so the demo must start its own redis-server.
        "ARCHIVER_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
    }
    workdir = tmp_path / "demo"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "archiver",
            "demo",
            "--partitions",
            "3",
            "--entries",
            "8",
            "--workdir",
            str(workdir),
            "--timeout",
            "120",
        ],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "starting a private one" in result.stdout
    assert "24 of 24 entries archived" in result.stdout
    assert "0 WAL entries left on disk" in result.stdout
    listing = subprocess.run(
        [sys.executable, "-m", "archiver", "ls", "demo", "2", "--json"],
        env={**env, "ARCHIVER_SINK_URL": (workdir / "bucket").as_uri()},
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    assert [row["lsn"] for row in json.loads(listing.stdout)] == list(range(1, 9))
