"""The private redis-server the demo and the tests start."""

from __future__ import annotations

from pathlib import Path

import pytest

from archiver.local_redis import LocalRedis, RedisUnavailable, server_pid


def test_a_server_already_on_the_port_is_not_taken_for_ours(tmp_path: Path) -> None:
    first = LocalRedis(tmp_path / "first").start()
    try:
        assert first.process is not None
        assert server_pid(first.url) == first.process.pid
        # Adopting it would let the second one's owner flush the first one's data.
        with pytest.raises(RedisUnavailable, match=f"held by redis-server {first.process.pid}"):
            LocalRedis(tmp_path / "second", port=first.port).start()
    finally:
        first.stop()
