"""The private redis-server the demo and the tests start."""

from __future__ import annotations

from pathlib import Path

import pytest

from archiver.dev.local_redis import LocalRedis, RedisUnavailable, server_directory


def test_a_server_already_on_the_port_is_not_taken_for_ours(tmp_path: Path) -> None:
    first = LocalRedis(tmp_path / "first").start()
    try:
        assert server_directory(first.url) == str((tmp_path / "first").resolve())
        # Adopting it would let the second one's owner flush the first one's data.
        with pytest.raises(RedisUnavailable, match=r"held by the redis-server of .*first"):
            LocalRedis(tmp_path / "second", port=first.port).start()
    finally:
        first.stop()
