"""The systemd units and the environment file they read."""

from __future__ import annotations

import re
import shlex
from pathlib import Path, PurePosixPath

import pytest

from archiver.config import Settings
from tests.ops.deployment import REPO, SCRIPT, SYSTEMD, check_invocation, script_argv

UNITS = ("archiver-scheduler.service", "archiver-worker.service")
ENV_EXAMPLE = SYSTEMD / "archiver.env.example"
ENV_FILE = "/etc/wal-archiver/archiver.env"
VENV_SCRIPT = f"/opt/wal-archiver/venv/bin/{SCRIPT}"
ALLOWED_PREFIXES = ("ARCHIVER_", "AWS_")
REQUIRED_SETTINGS = ("ARCHIVER_REDIS_URL", "ARCHIVER_SINK_URL", "ARCHIVER_STORAGES")
ASSIGNMENT = re.compile(r"^(?P<key>[A-Za-z_][A-Za-z0-9_]*)=(?P<value>.*)$")
COMMENTED_ASSIGNMENT = re.compile(r"^#\s*(?P<key>[A-Z_][A-Z0-9_]*)=")

Unit = dict[str, dict[str, list[str]]]


def parse_unit(path: Path) -> Unit:
    """Sections of a unit file; each key keeps every value given, in order."""
    unit: Unit = {}
    section: dict[str, list[str]] | None = None
    pending = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith(("#", ";"))):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        if line.startswith("[") and line.endswith("]"):
            section = unit.setdefault(line[1:-1], {})
            continue
        assert section is not None, f"{path.name}: `{line}` is outside any section"
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}: `{line}` is not Key=Value"
        section.setdefault(key.strip(), []).append(value.strip())
    return unit


def single(unit: Unit, section: str, key: str, name: str) -> str:
    values = unit.get(section, {}).get(key, [])
    assert values, f"{name}: [{section}] sets no {key}"
    return values[-1]


def seconds(value: str) -> float:
    """A systemd time span such as 30s, 5min, 1h 30s or a bare number of seconds."""
    units = {"": 1, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "hr": 3600}
    total = 0.0
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", value):
        assert unit in units, f"time span {value!r}: unknown unit {unit!r}"
        total += float(number) * units[unit]
    return total


def read_env_file(path: Path) -> tuple[dict[str, str], set[str]]:
    """The variables an environment file sets, and those it documents in comments."""
    values: dict[str, str] = {}
    documented: set[str] = set()
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if commented := COMMENTED_ASSIGNMENT.match(line):
            documented.add(commented["key"])
        if not line or line.startswith("#"):
            continue
        match = ASSIGNMENT.match(line)
        assert match, f"{path.name}: `{line}` is not VARIABLE=value"
        value = match["value"]
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        values[match["key"]] = value
    return values, documented


@pytest.fixture(params=UNITS)
def unit_file(request: pytest.FixtureRequest) -> Path:
    path = SYSTEMD / str(request.param)
    assert path.is_file(), f"{path} is missing"
    return path


def test_exec_start_runs_a_real_archiver_subcommand(unit_file: Path) -> None:
    unit = parse_unit(unit_file)
    exec_start = single(unit, "Service", "ExecStart", unit_file.name)
    argv = shlex.split(exec_start.lstrip("-@+!:"))
    assert argv[0] == VENV_SCRIPT, f"{unit_file.name}: ExecStart runs {argv[0]}, not {VENV_SCRIPT}"
    assert not any("$" in arg for arg in argv), f"{unit_file.name}: ExecStart uses variables"
    invocation = check_invocation(script_argv(argv), where=unit_file.name)
    role = unit_file.name.removeprefix("archiver-").removesuffix(".service")
    assert invocation.path == (role,), f"{unit_file.name} runs `{invocation.name}`"


def test_unit_reads_the_environment_file_and_restarts(unit_file: Path) -> None:
    unit = parse_unit(unit_file)
    service = unit.get("Service", {})
    files = [value.lstrip("-") for value in service.get("EnvironmentFile", [])]
    assert ENV_FILE in files, f"{unit_file.name}: EnvironmentFile is not {ENV_FILE}"
    # The shared file is required; a missing one must stop the service, not run it unset.
    assert f"-{ENV_FILE}" not in service["EnvironmentFile"]
    assert single(unit, "Service", "Restart", unit_file.name) in ("on-failure", "always")
    user = single(unit, "Service", "User", unit_file.name)
    assert user not in ("root", "0"), f"{unit_file.name} runs as root"
    assert single(unit, "Install", "WantedBy", unit_file.name) == "multi-user.target"
    for assignment in service.get("Environment", []):
        for item in shlex.split(assignment):
            name = item.partition("=")[0]
            assert name.startswith(ALLOWED_PREFIXES), f"{unit_file.name}: Environment={item}"


def test_unit_stops_gracefully(unit_file: Path) -> None:
    unit = parse_unit(unit_file)
    assert single(unit, "Service", "KillSignal", unit_file.name) == "SIGTERM"
    timeout = seconds(single(unit, "Service", "TimeoutStopSec", unit_file.name))
    assert timeout >= 10, f"{unit_file.name}: TimeoutStopSec {timeout} s is too short"


def test_worker_stop_lets_running_tasks_finish() -> None:
    unit = parse_unit(SYSTEMD / "archiver-worker.service")
    # SIGTERM to the Celery main process only: it waits for its pool's running tasks.
    assert single(unit, "Service", "KillMode", "worker") == "mixed"
    assert seconds(single(unit, "Service", "TimeoutStopSec", "worker")) >= 60


def test_unit_is_hardened(unit_file: Path) -> None:
    unit = parse_unit(unit_file)
    for key, value in {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "PrivateTmp": "yes",
        "ProtectHome": "yes",
    }.items():
        assert single(unit, "Service", key, unit_file.name) == value, f"{unit_file.name}: {key}"


def test_worker_may_write_its_metrics_and_wal_roots() -> None:
    unit = parse_unit(SYSTEMD / "archiver-worker.service")
    service = unit["Service"]
    writable = [
        PurePosixPath(path.lstrip("-"))
        for value in service.get("ReadWritePaths", [])
        for path in value.split()
    ]
    writable += [
        PurePosixPath("/run") / name
        for value in service.get("RuntimeDirectory", [])
        for name in value.split()
    ]
    environment = dict(
        item.split("=", 1)
        for value in service.get("Environment", [])
        for item in shlex.split(value)
    )
    metrics_dir = PurePosixPath(environment["ARCHIVER_METRICS_DIR"])
    assert any(metrics_dir.is_relative_to(path) for path in writable), (
        f"ARCHIVER_METRICS_DIR {metrics_dir} is not writable under ProtectSystem=strict"
    )
    example, _ = read_env_file(ENV_EXAMPLE)
    for root in Settings.from_env(example).storages.values():
        assert any(PurePosixPath(root).is_relative_to(path) for path in writable), (
            f"the example WAL root {root} is not in the worker's ReadWritePaths"
        )


def test_environment_example_names_only_archiver_and_aws_variables() -> None:
    values, documented = read_env_file(ENV_EXAMPLE)
    for name in sorted(set(values) | documented):
        assert name.startswith(ALLOWED_PREFIXES), f"{ENV_EXAMPLE.name} sets {name}"
    for name in REQUIRED_SETTINGS:
        assert values.get(name), f"{ENV_EXAMPLE.name} does not set {name}"


def test_environment_example_is_a_valid_configuration() -> None:
    values, _ = read_env_file(ENV_EXAMPLE)
    settings = Settings.from_env(values)
    assert settings.sink_url == values["ARCHIVER_SINK_URL"]
    assert settings.storages, "the example configures no storage"


def test_environment_example_documents_only_variables_the_code_reads() -> None:
    values, documented = read_env_file(ENV_EXAMPLE)
    source = "\n".join(
        path.read_text(encoding="utf-8")
        for package in ("archiver", "workers")
        for path in sorted((REPO / package).rglob("*.py"))
    )
    for name in sorted(set(values) | documented):
        if name.startswith("ARCHIVER_"):
            assert name in source, f"{ENV_EXAMPLE.name} names {name}, which no code reads"


def test_environment_example_documents_every_setting() -> None:
    values, documented = read_env_file(ENV_EXAMPLE)
    read = {d.env for d in Settings.declared()}
    missing = read - set(values) - documented
    assert not missing, f"{ENV_EXAMPLE.name} does not document {sorted(missing)}"
