"""What the deployment checks share: the files (compose, Dockerfile, Prometheus, Grafana,
systemd, runbook), parsed, and the ``archiver`` commands they run, resolved against the CLI."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import tomllib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import click
import pytest
import yaml

from tests.support import missing_server

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "Dockerfile"
OPS = REPO / "ops"
ALERTS_FILE = OPS / "prometheus" / "alerts.yml"
ALERTS_TEST_FILE = OPS / "prometheus" / "alerts_test.yml"
PROMETHEUS_CONFIG = OPS / "prometheus" / "prometheus.yml"
DASHBOARD_FILE = OPS / "grafana" / "dashboards" / "archiver.json"
RUNBOOK = OPS / "runbook.md"
SYSTEMD = OPS / "systemd"
# Prometheus's default configuration file inside its image.
PROMETHEUS_DEFAULT_CONFIG = "/etc/prometheus/prometheus.yml"

# The name of the console script in pyproject.toml's [project.scripts].
SCRIPT = "archiver"


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def load_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def pyproject() -> dict[str, Any]:
    with (REPO / "pyproject.toml").open("rb") as f:
        return tomllib.load(f)


# --- the archiver command line ----------------------------------------------------------------


def main_group() -> click.Group:
    from archiver.cli import main

    assert isinstance(main, click.Group), "archiver.cli.main is not a click group"
    return main


@dataclass(frozen=True)
class Invocation:
    """A command line after the script name, resolved to the click command it runs."""

    command: click.Command
    path: tuple[str, ...]  # subcommand names, e.g. ("inspect", "summary")
    args: tuple[str, ...]  # what the leaf command is given

    @property
    def name(self) -> str:
        return " ".join((SCRIPT, *self.path))


def resolve(argv: Sequence[str], where: str = "", *, partial: bool = False) -> Invocation:
    """Follow ``argv`` (everything after ``archiver``) through nested command groups.

    Fails the test, naming the known subcommands, when a name is not a subcommand. ``where``
    says where the command line comes from, for the failure message. With ``partial``, the
    command line may stop at a group (``archiver inspect`` in prose).
    """
    prefix = f"{where}: " if where else ""
    command: click.Command = main_group()
    path: list[str] = []
    rest = list(argv)
    while isinstance(command, click.Group):
        if partial and not rest:
            break
        here = " ".join((SCRIPT, *path))
        context = click.Context(command, info_name=here)
        known = sorted(command.list_commands(context))
        if not rest or rest[0].startswith("-"):
            pytest.fail(
                f"{prefix}`{SCRIPT} {shlex.join(argv)}` names no subcommand of `{here}` {known}"
            )
        name = rest.pop(0)
        sub = command.get_command(context, name)
        if sub is None:
            pytest.fail(
                f"{prefix}`{name}` in `{SCRIPT} {shlex.join(argv)}` is not a subcommand of "
                f"`{here}` {known}"
            )
        path.append(name)
        command = sub
    return Invocation(command, tuple(path), tuple(rest))


def options_of(command: click.Command) -> dict[str, click.Option]:
    options: dict[str, click.Option] = {}
    for param in command.params:
        if isinstance(param, click.Option):
            for opt in (*param.opts, *param.secondary_opts):
                options[opt] = param
    return options


def check_options(invocation: Invocation, where: str = "") -> None:
    """Every option given is an option of the command, and has its value when it takes one."""
    prefix = f"{where}: " if where else ""
    options = options_of(invocation.command)
    args = list(invocation.args)
    i = 0
    while i < len(args):
        token = args[i]
        i += 1
        if token == "--":
            break
        if not token.startswith("-") or token == "-":
            continue
        if token.startswith("--"):
            name, attached = token.partition("=")[0], "=" in token
        else:
            name, attached = token[:2], len(token) > 2
        option = options.get(name)
        if option is None:
            pytest.fail(
                f"{prefix}`{name}` is not an option of `{invocation.name}`; "
                f"it has {sorted(options)}"
            )
        takes_value = not option.is_flag and not option.count
        if takes_value and not attached:
            if i >= len(args):
                pytest.fail(f"{prefix}`{name}` of `{invocation.name}` needs a value")
            i += 1


def check_invocation(argv: Sequence[str], where: str = "") -> Invocation:
    """``argv`` names a real (sub)command with real options, and click accepts its values."""
    invocation = resolve(argv, where)
    check_options(invocation, where)
    try:
        invocation.command.make_context(invocation.name, list(invocation.args))
    except click.ClickException as exc:
        prefix = f"{where}: " if where else ""
        pytest.fail(f"{prefix}`{SCRIPT} {shlex.join(argv)}` is refused: {exc.format_message()}")
    return invocation


def script_argv(argv: Sequence[str]) -> list[str]:
    """The arguments after the ``archiver`` script, which must be the program run."""
    assert argv, "empty command line"
    program = PurePosixPath(argv[0]).name
    assert program == SCRIPT, f"`{shlex.join(argv)}` does not run the `{SCRIPT}` entry point"
    return list(argv[1:])


# --- docker-compose.yml -----------------------------------------------------------------------


def compose() -> dict[str, Any]:
    data = load_yaml(COMPOSE_FILE)
    assert isinstance(data, dict), "docker-compose.yml is not a mapping"
    return data


def services() -> dict[str, dict[str, Any]]:
    found = compose().get("services")
    assert isinstance(found, dict), "docker-compose.yml has no services"
    assert found, "docker-compose.yml has no services"
    return found


def archiver_services() -> dict[str, dict[str, Any]]:
    """The services that run the image built from this repository."""
    return {
        name: service
        for name, service in services().items()
        if "build" in service or str(service.get("image", "")).startswith("wal-archiver:")
    }


def service(name: str) -> dict[str, Any]:
    found = services().get(name)
    assert found is not None, f"docker-compose.yml has no service {name!r}"
    return found


def option_value(argv: list[str], *names: str) -> str | None:
    for i, token in enumerate(argv):
        for name in names:
            if token == name and i + 1 < len(argv):
                return argv[i + 1]
            if token.startswith(name + "="):
                return token.partition("=")[2]
    return None


def command_line(value: object) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return shlex.split(value)
    assert isinstance(value, list), f"not a command: {value!r}"
    return [str(item) for item in value]


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        pairs = (str(item).partition("=") for item in env)
        return {key: value for key, _, value in pairs}
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


@dataclass(frozen=True)
class Mount:
    source: str
    target: str

    @property
    def is_bind(self) -> bool:
        return self.source.startswith(("/", ".", "~"))


def mounts(service: dict[str, Any]) -> list[Mount]:
    found: list[Mount] = []
    for item in service.get("volumes") or []:
        if isinstance(item, dict):
            found.append(Mount(str(item.get("source", "")), str(item["target"])))
        else:
            source, _, rest = str(item).partition(":")
            found.append(Mount(source, rest.partition(":")[0]))
    return found


def host_path(service: dict[str, Any], container_path: str) -> Path | None:
    """Where a path inside the service's container comes from in the repository, if bound."""
    wanted = PurePosixPath(container_path)
    best: tuple[int, Path] | None = None
    for mount in mounts(service):
        target = PurePosixPath(mount.target)
        if not mount.is_bind or not wanted.is_relative_to(target):
            continue
        depth = len(target.parts)
        if best is None or depth > best[0]:
            best = (depth, REPO / mount.source / wanted.relative_to(target))
    return None if best is None else best[1].resolve()


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        keyword, _, arguments = line.partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
    return instructions


def dockerfile_entrypoint() -> list[str]:
    entrypoints = [args for keyword, args in dockerfile_instructions() if keyword == "ENTRYPOINT"]
    assert entrypoints, "the Dockerfile has no ENTRYPOINT"
    value = json.loads(entrypoints[-1])
    assert isinstance(value, list), "ENTRYPOINT is not in exec (JSON) form"
    return [str(item) for item in value]


def service_argv(service: dict[str, Any]) -> list[str]:
    """What a service built from the Dockerfile runs: its entrypoint, then its command."""
    entrypoint = (
        command_line(service["entrypoint"]) if "entrypoint" in service else dockerfile_entrypoint()
    )
    return entrypoint + command_line(service.get("command"))


def prometheus_config() -> tuple[dict[str, Any], PurePosixPath, Path]:
    """The Prometheus service, where its configuration is inside it, and where in the repo."""
    prometheus = service("prometheus")
    argv = command_line(prometheus.get("command"))
    in_container = PurePosixPath(option_value(argv, "--config.file") or PROMETHEUS_DEFAULT_CONFIG)
    path = host_path(prometheus, str(in_container))
    assert path is not None, f"Prometheus's {in_container} is not mounted from the repository"
    return prometheus, in_container, path


# --- promtool ---------------------------------------------------------------------------------


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    if binary is None:
        missing_server(
            "promtool is not on PATH; it comes with Prometheus (Debian: apt-get install prometheus)"
        )
    return subprocess.run(
        [binary, *args], cwd=REPO, capture_output=True, text=True, timeout=120, check=False
    )


def assert_promtool_ok(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, (
        f"{shlex.join(result.args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    )


# --- alert rules ------------------------------------------------------------------------------


def alert_rules() -> list[dict[str, Any]]:
    data = load_yaml(ALERTS_FILE)
    return [rule for group in data["groups"] for rule in group["rules"] if "alert" in rule]


def walk_strings(value: object, keys: frozenset[str]) -> Iterator[str]:
    """Every string held under one of ``keys`` anywhere in a JSON document."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key in keys and isinstance(item, str):
                yield item
            else:
                yield from walk_strings(item, keys)
    elif isinstance(value, list):
        for item in value:
            yield from walk_strings(item, keys)
