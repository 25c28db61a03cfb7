"""Every command of ``archiver``, given bad settings, bad arguments, servers that are not there
and paths that cannot be: each ends in one line that names what was wrong, with a non-zero
status (2 for usage and settings), never a traceback."""

from __future__ import annotations

import traceback
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result

from archiver.cli import main
from archiver.core.encryption import new_key_text
from archiver.dev.local_redis import free_port
from tests.archive_factory import new_bucket

# Arguments that are valid for each command, so that what fails is the one thing changed.
VALID: dict[str, list[str]] = {
    "admin pause": ["s", "1", "--reason", "r"],
    "admin resume": ["s", "1", "--reason", "r"],
    "admin release": ["s", "1", "--reason", "r"],
    "admin requeue": ["s", "1", "--reason", "r"],
    "admin skip-to": ["s", "1", "5", "--reason", "r", "--yes"],
    "reconcile": [],
    "restore": ["s", "1", "--dest", "{tmp}/restored"],
    "verify": ["s", "1"],
    "prune": ["s", "1", "--before", "5"],
    "migrate-sidecars": [],
    "inspect summary": [],
    "inspect partition": ["s", "1"],
    "inspect partitions": [],
    "inspect rejected": [],
    "config": [],
    "ls": ["s", "1"],
    "scheduler": [],
    "worker": [],
    "produce": ["--storage", "s", "--rounds", "1"],
    "notify": ["s", "1", "1", "2"],
    "demo": [],
    "keygen": [],
    "rewrap": [],
    "scrub": [],
    "mirror": ["--once"],
    "inspect mirrors": [],
    "inspect scrub": [],
    "admin mirror-resume": ["m", "s", "1"],
    "admin clear-finding": ["s/1/0000000000001.tar", "--reason", "r"],
}
# Daemons: they wait for Redis to come back rather than exit (see the README's recovery table).
WAIT_FOR_SERVERS = {"scheduler", "worker"}
# The demo brings its own Redis and bucket; config reads nothing; reconcile of an empty bucket
# has nothing to ask Redis; migrate-sidecars works on a filesystem bucket alone.
# keygen only makes a key; rewrap works on the bucket alone.
NO_SERVERS = {"demo", "config", "reconcile", "migrate-sidecars", "keygen"}
OPEN_THE_SINK = {"reconcile", "restore", "verify", "prune", "ls", "worker", "rewrap"}
BUCKET_ONLY = {"restore", "prune", "ls", "rewrap"}


def _commands(group: click.Group, path: str = "") -> Iterator[str]:
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            yield from _commands(command, f"{path}{name} ")
        else:
            yield f"{path}{name}"


def test_the_table_names_every_command() -> None:
    assert sorted(_commands(main)) == sorted(VALID)


@pytest.fixture
def base_env(tmp_path: Path) -> dict[str, str]:
    new_bucket(tmp_path / "bucket")
    new_bucket(tmp_path / "mirror")
    (tmp_path / "storage").mkdir()
    return {
        "ARCHIVER_MIRROR_URLS": f"m={(tmp_path / 'mirror').as_uri()}",
        "ARCHIVER_ENCRYPTION_KEYS": f"k1:{new_key_text()}",
        # Nothing listens here: a command that reaches for Redis fails at once.
        "ARCHIVER_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
        "ARCHIVER_SINK_URL": (tmp_path / "bucket").as_uri(),
        "ARCHIVER_STORAGES": f"s={tmp_path / 'storage'}",
        "ARCHIVER_METRICS_PORT": "0",
        "ARCHIVER_WORKER_METRICS_PORT": "0",
        "ARCHIVER_METRICS_DIR": str(tmp_path / "metrics"),
    }


def _run(command: str, args: list[str], env: dict[str, str], tmp: Path) -> Result:
    argv = [*command.split(), *(a.replace("{tmp}", str(tmp)) for a in args)]
    return CliRunner().invoke(main, argv, env=env)


def _assert_one_clear_line(result: Result, status: int, names: str) -> None:
    shown = result.output
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        trace = "".join(traceback.format_exception(result.exception))
        pytest.fail(f"a traceback instead of a clear line:\n{trace}\n{shown}")
    assert "Traceback" not in shown, shown
    assert result.exit_code == status, shown
    assert names in shown, shown


BAD_SETTINGS = [
    ({"ARCHIVER_REDIS_URL": "notaurl"}, "ARCHIVER_REDIS_URL"),
    ({"ARCHIVER_REDIS_URL": "redis://host:port/0"}, "ARCHIVER_REDIS_URL"),
    ({"ARCHIVER_BROKER_URL": "kafka://host"}, "ARCHIVER_BROKER_URL"),
    ({"ARCHIVER_SINK_URL": "s3x://bucket"}, "ARCHIVER_SINK_URL"),
    ({"ARCHIVER_SINK_URL": "file://relative/path"}, "ARCHIVER_SINK_URL"),
    ({"ARCHIVER_SINK_URL": "s3://b?part_size=abc"}, "part_size"),
    ({"ARCHIVER_SINK_URL": "s3://b?read_timeout=-1"}, "read_timeout"),
    ({"ARCHIVER_SINK_URL": "s3://b?sse=rot13"}, "sse"),
    ({"ARCHIVER_SINK_URL": "s3://b?etag_is_md5=maybe"}, "etag_is_md5"),
    ({"ARCHIVER_STORAGES": "s=relative"}, "ARCHIVER_STORAGES"),
    ({"ARCHIVER_LEASE_SECONDS": "-1"}, "ARCHIVER_LEASE_SECONDS"),
    ({"ARCHIVER_METRICS_PORT": "70000"}, "ARCHIVER_METRICS_PORT"),
    ({"ARCHIVER_CHAIN_ENTRIES": "0"}, "ARCHIVER_CHAIN_ENTRIES"),
    ({"ARCHIVER_METRICS_DIR": "relative"}, "ARCHIVER_METRICS_DIR"),
    ({"ARCHIVER_LOG_LEVEL": "loud"}, "ARCHIVER_LOG_LEVEL"),
    ({"ARCHIVER_COMPRESSION": "rar"}, "ARCHIVER_COMPRESSION"),
]


@pytest.mark.parametrize("command", sorted(VALID))
def test_bad_settings_are_a_usage_error_naming_the_variable(
    command: str, base_env: dict[str, str], tmp_path: Path
) -> None:
    for bad, names in BAD_SETTINGS:
        result = _run(command, VALID[command], {**base_env, **bad}, tmp_path)
        _assert_one_clear_line(result, 2, names)


@pytest.mark.parametrize(
    "command", sorted(set(VALID) - WAIT_FOR_SERVERS - NO_SERVERS - BUCKET_ONLY)
)
def test_an_unreachable_state_store_is_one_line(
    command: str, base_env: dict[str, str], tmp_path: Path
) -> None:
    args = [*VALID[command], "--state"] if command == "verify" else VALID[command]
    result = _run(command, args, base_env, tmp_path)
    _assert_one_clear_line(result, 1, "Redis")


@pytest.mark.parametrize("command", sorted(OPEN_THE_SINK - {"worker"}))
def test_an_unreachable_object_store_is_one_line(
    command: str, base_env: dict[str, str], tmp_path: Path
) -> None:
    # Nothing listens at the endpoint either.
    sink = f"s3://b?endpoint_url=http://127.0.0.1:{free_port()}&connect_timeout=1&max_attempts=1"
    result = _run(command, VALID[command], {**base_env, "ARCHIVER_SINK_URL": sink}, tmp_path)
    _assert_one_clear_line(result, 1, "sink")


def test_a_worker_host_whose_object_store_is_unreachable_exits_with_one_line(
    base_env: dict[str, str], tmp_path: Path
) -> None:
    sink = f"s3://b?endpoint_url=http://127.0.0.1:{free_port()}&connect_timeout=1&max_attempts=1"
    result = _run("worker", [], {**base_env, "ARCHIVER_SINK_URL": sink}, tmp_path)
    _assert_one_clear_line(result, 1, "not usable")


BAD_ARGUMENTS = [
    ("STORAGE", "../x"),
    ("PARTITION", "0"),
    ("PARTITION", str(2**64)),
    ("PARTITION", "one"),
]


@pytest.mark.parametrize("command", sorted(c for c in VALID if VALID[c][:2] == ["s", "1"]))
def test_bad_names_and_numbers_are_a_usage_error_naming_the_argument(
    command: str, base_env: dict[str, str], tmp_path: Path
) -> None:
    for argument, value in BAD_ARGUMENTS:
        args = list(VALID[command])
        args[0 if argument == "STORAGE" else 1] = value
        result = _run(command, args, base_env, tmp_path)
        _assert_one_clear_line(result, 2, argument)


@pytest.mark.parametrize(
    ("command", "args", "names"),
    [
        ("notify", ["s", "1", "0", "2"], "LOW"),
        ("notify", ["s", "1", "3", "2"], "above HIGH"),
        ("notify", ["s", "1", "1", str(2**64)], "HIGH"),
        ("admin skip-to", ["s", "1", "0", "--reason", "r", "--yes"], "LSN"),
        ("prune", ["s", "1", "--before", "x"], "--before"),
        ("restore", ["s", "1", "--dest", "{tmp}/d", "--from", "5", "--to", "2"], "--from"),
        ("restore", ["s", "1", "--dest", "{tmp}/d", "--parallel", "0"], "--parallel"),
        ("ls", ["s", "1", "--from", "-3"], "--from"),
        ("migrate-sidecars", ["--storage", "../x"], "--storage"),
        ("inspect rejected", ["--limit", "0"], "--limit"),
        ("worker", ["--concurrency", "0"], "--concurrency"),
        ("worker", ["--pool", "threads", "--concurrency", "200"], "--concurrency"),
        ("worker", ["--pool", "gevent"], "--pool"),
        ("produce", ["--storage", "elsewhere", "--rounds", "1"], "ARCHIVER_STORAGES"),
    ],
)
def test_out_of_range_arguments_are_a_usage_error(
    command: str, args: list[str], names: str, base_env: dict[str, str], tmp_path: Path
) -> None:
    _assert_one_clear_line(_run(command, args, base_env, tmp_path), 2, names)


def test_restore_into_an_impossible_path_is_one_line(
    base_env: dict[str, str], tmp_path: Path
) -> None:
    from archiver.dev.producer import write_entry
    from archiver.runtime.archiving import copy_entry
    from archiver.sinks import open_sink

    write_entry(tmp_path / "storage", 1, 1, {"f": b"x"})
    copy_entry(open_sink(base_env["ARCHIVER_SINK_URL"]), "s", tmp_path / "storage", 1, 1)
    result = _run("restore", ["s", "1", "--dest", "/proc/nope/x"], base_env, tmp_path)
    _assert_one_clear_line(result, 1, "/proc/nope/x")


def test_restore_of_a_partition_with_no_archive_says_so_and_fails(
    base_env: dict[str, str], tmp_path: Path
) -> None:
    result = _run("restore", ["s", "1", "--dest", str(tmp_path / "d")], base_env, tmp_path)
    _assert_one_clear_line(result, 1, "nothing to restore")
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize("command", sorted(VALID))
def test_help_works_whatever_the_settings(command: str, tmp_path: Path) -> None:
    result = _run(command, ["--help"], {"ARCHIVER_REDIS_URL": "notaurl"}, tmp_path)
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output
