"""Bad input sent to the running system: each is refused with a clear reason, counted, and
the next good notification still goes through."""

from __future__ import annotations

import json
import re
import urllib.request

from click.testing import CliRunner

from archiver.cli import main
from archiver.dev.local_redis import free_port
from tests.support import System, wait_for

GOOD = {"storage": "default", "partition": "1", "low": "1", "high": "1"}

BAD: list[tuple[dict[str, str], str]] = [
    ({"storage": "default", "partition": "1", "low": "1"}, "missing field(s): high"),
    ({**GOOD, "low": "one"}, "positive decimal"),
    ({**GOOD, "low": "-3"}, "positive decimal"),
    ({**GOOD, "low": "0"}, "between 1 and 2**64-1"),
    ({**GOOD, "high": str(2**64)}, "between 1 and 2**64-1"),
    ({**GOOD, "low": "9", "high": "3"}, "above high water mark"),
    ({**GOOD, "storage": "elsewhere"}, "unknown storage"),
    ({**GOOD, "storage": ""}, "non-empty"),
    ({**GOOD, "storage": "a/b"}, "storage name"),
    ({**GOOD, "storage": ".."}, "storage name"),
    ({**GOOD, "storage": "bad\x07name"}, "storage name"),
    ({**GOOD, "storage": "s" * 65}, "longer than 64"),
    ({**GOOD, "partition": "../1"}, "partition id"),
    (
        {**GOOD, "padding": "x" * 250, "more": "y" * 250, "most": "z" * 250, "etc": "w" * 250},
        "payload",
    ),
]


def _counted(port: int, expected: int) -> bool:
    return _rejected_count(port) == expected


def _rejected_count(port: int) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    match = re.search(r'^archiver_notifications_total\{result="rejected"\} (\S+)$', text, re.M)
    assert match, text
    return float(match[1])


def test_every_bad_notification_is_refused_counted_and_the_stream_moves_on(system: System) -> None:
    port = free_port()
    system.env_overrides["ARCHIVER_METRICS_PORT"] = str(port)
    system.start()
    env = {"ARCHIVER_REDIS_URL": system.redis_url}
    for lsn, (fields, reason) in enumerate(BAD, start=1):
        system.client.xadd("archiver:notifications", fields)  # type: ignore[arg-type]
        wait_for(lambda n=lsn: _rejected_count(port) == n, what=f"rejection {lsn} counted")  # type: ignore[misc]
        result = CliRunner().invoke(
            main, ["inspect", "rejected", "--json", "--limit", "1"], env=env
        )
        (newest,) = json.loads(result.output)
        assert reason in newest["reason"], (fields, newest)
        assert newest["fields"] == {k: v[:256] for k, v in fields.items()}
        # The next good notification still goes through.
        system.write(1, lsn)
        system.notify(1, 1, lsn)
        system.wait_acked(1, lsn)
    assert system.client.xlen("archiver:notifications") == 0  # the stream keeps moving
    assert system.processes[1].popen.poll() is None  # the scheduler kept running
    system.assert_invariants()


def test_an_entry_with_a_symlink_is_refused_and_never_acknowledged(system: System) -> None:
    system.start()
    system.write(1, 1)
    secret = system.tmp / "secret"
    secret.write_bytes(b"not for the archive")
    (system.root / "1" / "wal" / "0000000000001" / "link").symlink_to(secret)
    system.notify(1, 1, 1)
    state = system.wait_attempts(1, 2)
    assert "neither a regular file nor a directory" in state["last_error"]
    assert system.acks(1) == []
    assert system.archived(1) == []
    (system.root / "1" / "wal" / "0000000000001" / "link").unlink()
    system.wait_acked(1, 1)
    system.assert_archive_matches_source(1, 1)
    system.assert_invariants()
