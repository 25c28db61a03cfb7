"""The ``archiver`` command, run in-process against a real Redis and a real bucket."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from archiver.cli import main
from archiver.core.object_names import archive_key
from archiver.store.state_store import RedisStateStore
from archiver.store.streams import Streams
from tests.archive_factory import new_bucket
from tests.store_calls import apply_notification
from tests.support import gap_pairs, source, stream_entries


@pytest.fixture
def run(redis_url: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    new_bucket(tmp_path / "bucket")
    env = {"ARCHIVER_REDIS_URL": redis_url, "ARCHIVER_SINK_URL": (tmp_path / "bucket").as_uri()}

    def invoke(*args: str):  # type: ignore[no-untyped-def]
        return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)

    return invoke


def test_notify_appends_to_the_stream(run, streams: Streams) -> None:  # type: ignore[no-untyped-def]
    result = run("notify", "default", "3", "1", "5")
    assert result.exit_code == 0, result.output
    entries = stream_entries(streams.client, "archiver:notifications")
    assert entries[0][1] == {"storage": "default", "partition": "3", "low": "1", "high": "5"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("notify", "default", "3", "5", "1"), "above HIGH"),
        (("notify", "default", "3", "0", "1"), "between 1 and"),
        (("notify", "../x", "3", "1", "1"), "storage name"),
        (("notify", "default", "0", "1", "1"), "partition id"),
        (("ls", "default", "1", "--from", "x"), "decimal"),
    ],
)
def test_bad_arguments_get_a_clear_error(run, args: tuple[str, ...], message: str) -> None:  # type: ignore[no-untyped-def]
    result = run(*args)
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output


def test_ls_lists_one_partition_in_lsn_order(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    sink = new_bucket(tmp_path / "bucket")
    for partition, lsn in [(1, 36), (1, 2), (10, 1), (1, 1)]:
        sink.write(archive_key("default", partition, lsn), source(b"x" * lsn))
    (tmp_path / "bucket" / "default" / "1" / ".tmp-0000000000003.tar.x").write_bytes(b"")
    (tmp_path / "bucket" / "default" / "1" / "junk.txt").write_bytes(b"")
    result = run("ls", "default", "1", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == [
        {"lsn": 1, "key": "default/1/0000000000001.tar", "size": 1},
        {"lsn": 2, "key": "default/1/0000000000002.tar", "size": 2},
        {"lsn": 36, "key": "default/1/0000000000010.tar", "size": 36},
    ]
    result = run("ls", "default", "1", "--from", "2", "--json")
    assert [row["lsn"] for row in json.loads(result.output)] == [2, 36]
    table = run("ls", "default", "1")
    assert "0000000000010.tar" in table.output


def test_ls_without_a_sink_says_what_to_set(redis_url: str) -> None:
    result = CliRunner().invoke(main, ["ls", "default", "1"], env={"ARCHIVER_SINK_URL": ""})
    assert result.exit_code == 2
    assert "ARCHIVER_SINK_URL is not set" in result.output


def test_inspect_partition_and_partitions(run, store: RedisStateStore) -> None:  # type: ignore[no-untyped-def]
    apply_notification(store, "default", 1, 1, 3, 60)
    apply_notification(store, "default", 1, 7, 9, 60)  # a gap
    apply_notification(store, "other", 2, 5, 5, 60)
    result = run("inspect", "partition", "default", "1", "--json")
    assert result.exit_code == 0, result.output
    state = json.loads(result.output)
    assert state["storage"] == "default"
    assert state["partition"] == 1
    assert state["next_lsn"] == 7
    assert state["high_water_mark"] == 9
    assert state["in_flight_lsn"] == 7
    assert state["acknowledged_lsn"] is None
    assert gap_pairs(state) == [(1, 7)]
    assert state["last_error"] is None
    listing = json.loads(run("inspect", "partitions", "--json").output)
    assert [(p["storage"], p["partition"]) for p in listing] == [("default", 1), ("other", 2)]
    only = json.loads(run("inspect", "partitions", "--storage", "other", "--json").output)
    assert [p["partition"] for p in only] == [2]
    assert "default" in run("inspect", "partitions").output
    missing = run("inspect", "partition", "default", "99")
    assert missing.exit_code == 1
    assert "no state" in missing.output


def test_unreachable_redis_is_one_clear_line() -> None:
    result = CliRunner().invoke(
        main, ["inspect", "partitions"], env={"ARCHIVER_REDIS_URL": "redis://127.0.0.1:1/0"}
    )
    assert result.exit_code == 1
    assert result.output.startswith("Error: Redis:")


def test_help_explains_every_command() -> None:
    for command in ("scheduler", "notify", "inspect", "ls", "demo"):
        result = CliRunner().invoke(main, [command, "--help"])
        assert result.exit_code == 0
        assert "Usage:" in result.output
