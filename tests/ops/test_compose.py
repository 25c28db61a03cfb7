"""docker-compose.yml and the Dockerfile: pinned images, real commands, files that exist."""

from __future__ import annotations

import importlib
import re
import shlex
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click

from tests.ops.deployment import (
    ALERTS_FILE,
    DASHBOARD_FILE,
    PROMETHEUS_CONFIG,
    REPO,
    SCRIPT,
    archiver_services,
    check_invocation,
    command_line,
    compose,
    dockerfile_entrypoint,
    dockerfile_instructions,
    environment,
    host_path,
    load_json,
    load_yaml,
    main_group,
    mounts,
    option_value,
    prometheus_config,
    pyproject,
    script_argv,
    service,
    service_argv,
    services,
)

GRAFANA_PROVISIONING = "/etc/grafana/provisioning"


def image_tag(image: str) -> str:
    """The tag of ``name[:tag]``; a registry's port is not a tag."""
    last = image.rsplit("/", 1)[-1]
    return last.partition(":")[2]


def assert_pinned(image: str, where: str) -> None:
    tag = image_tag(image.partition("@")[0])
    assert tag, f"{where}: image {image!r} has no tag"
    assert tag != "latest", f"{where}: image {image!r} uses the tag latest"
    assert re.search(r"\d", tag), f"{where}: tag of {image!r} names no version"
    assert "$" not in image, f"{where}: image {image!r} depends on a variable"


def role_services(subcommand: str) -> dict[str, dict[str, Any]]:
    """Archiver services whose command is ``archiver SUBCOMMAND ...``."""
    return {
        name: svc
        for name, svc in archiver_services().items()
        if script_argv(service_argv(svc))[:1] == [subcommand]
    }


def metrics_port(svc: dict[str, Any], variable: str, default: int) -> int:
    return int(environment(svc).get(variable) or default)


def test_compose_file_follows_the_compose_specification() -> None:
    data = compose()
    assert "version" not in data, "the compose specification has no top-level version key"
    declared = set(data.get("volumes") or {})
    for name, svc in services().items():
        for mount in mounts(svc):
            if not mount.is_bind:
                assert mount.source in declared, (
                    f"service {name}: named volume {mount.source!r} is not declared under volumes"
                )


def test_every_image_is_pinned_to_a_version() -> None:
    for name, svc in services().items():
        assert "image" in svc, f"service {name} names no image"
        assert_pinned(str(svc["image"]), f"service {name}")


def test_the_built_image_carries_the_project_version() -> None:
    version = pyproject()["project"]["version"]
    built = archiver_services()
    assert {"producer", "scheduler", "worker"} <= set(built), (
        f"expected producer, scheduler and worker to run the built image, found {sorted(built)}"
    )
    for name, svc in built.items():
        assert svc.get("build") in (".", {"context": "."}), f"service {name}: build is not ."
        assert svc["image"] == f"wal-archiver:{version}", (
            f"service {name}: image {svc['image']!r} is not wal-archiver:{version}"
        )


def test_pyproject_declares_the_archiver_script() -> None:
    scripts = pyproject()["project"].get("scripts", {})
    assert SCRIPT in scripts, f"[project.scripts] has no {SCRIPT!r} entry"
    module_name, _, attribute = scripts[SCRIPT].partition(":")
    target = getattr(importlib.import_module(module_name), attribute)
    assert isinstance(target, click.Group)
    assert target is main_group()


def test_archiver_services_run_real_subcommands_with_real_options() -> None:
    for name, svc in archiver_services().items():
        check_invocation(script_argv(service_argv(svc)), where=f"service {name}")


def test_there_is_a_producer_a_scheduler_and_a_worker() -> None:
    for subcommand in ("produce", "scheduler", "worker"):
        assert role_services(subcommand), f"no service runs `{SCRIPT} {subcommand}`"


def test_the_producer_writes_to_a_configured_storage_on_the_shared_volume() -> None:
    for name, svc in role_services("produce").items():
        argv = service_argv(svc)
        storage = option_value(argv, "--storage")
        assert storage, f"service {name}: `{shlex.join(argv)}` gives no --storage"
        roots = dict(
            item.split("=", 1) for item in environment(svc)["ARCHIVER_STORAGES"].split(",")
        )
        assert storage in roots, f"service {name}: storage {storage!r} not in ARCHIVER_STORAGES"
        targets = {m.target: m for m in mounts(svc)}
        # Producer, scheduler and workers must see the same WAL.
        for other_name, other in archiver_services().items():
            other_mounts = {m.target: m.source for m in mounts(other)}
            assert other_mounts.get(roots[storage]) == targets[roots[storage]].source, (
                f"service {other_name} does not mount the WAL root {roots[storage]} "
                f"from volume {targets[roots[storage]].source!r}"
            )


def test_archiver_services_share_one_configuration() -> None:
    built = archiver_services()
    for variable in (
        "ARCHIVER_REDIS_URL",
        "ARCHIVER_SINK_URL",
        "ARCHIVER_STORAGES",
        "ARCHIVER_REDIS_PREFIX",
    ):
        values = {name: environment(svc).get(variable) for name, svc in built.items()}
        assert len(set(values.values())) == 1, f"{variable} differs between services: {values}"
    for name, svc in built.items():
        env = environment(svc)
        assert env.get("ARCHIVER_LOG_FORMAT") == "json", f"service {name}: logs are not JSON"
        redis_host = urlsplit(env["ARCHIVER_REDIS_URL"]).hostname
        assert redis_host in services(), f"service {name}: Redis host {redis_host!r} is unknown"
        depends = svc.get("depends_on") or {}
        assert isinstance(depends, dict), f"service {name}: depends_on has no conditions"
        assert depends.get(redis_host, {}).get("condition") == "service_healthy", (
            f"service {name} does not wait for {redis_host} to be healthy"
        )


def test_redis_keeps_an_append_only_file() -> None:
    redis = service("redis")
    argv = command_line(redis.get("command"))
    joined = " ".join(argv)
    assert "--appendonly yes" in joined, f"redis runs without --appendonly yes: {argv}"
    assert "--appendfsync everysec" in joined, f"redis runs without appendfsync everysec: {argv}"
    data = [m for m in mounts(redis) if m.target == "/data"]
    assert data, "redis keeps /data in no volume"
    assert "healthcheck" in redis, "redis has no healthcheck"


def test_minio_init_creates_the_bucket_of_the_sink_url() -> None:
    sinks = {environment(svc)["ARCHIVER_SINK_URL"] for svc in archiver_services().values()}
    assert len(sinks) == 1, sinks
    sink = urlsplit(sinks.pop())
    assert sink.scheme == "s3", f"the compose sink is not S3: {sink.geturl()}"
    bucket = sink.netloc
    init = service("minio-init")
    script = "\n".join(command_line(init.get("entrypoint")) + command_line(init.get("command")))
    made: list[str] = []
    for line in script.splitlines():
        tokens = shlex.split(line, comments=True)
        if tokens[:2] == ["mc", "mb"]:
            assert "--ignore-existing" in tokens or "-p" in tokens, (
                f"`{line.strip()}` fails when the bucket exists: it must be idempotent"
            )
            made += [t.split("/", 1)[1] for t in tokens[2:] if "/" in t]
    assert bucket in made, f"minio-init creates {made}, not the sink's bucket {bucket!r}"
    for name, svc in archiver_services().items():
        condition = (svc.get("depends_on") or {}).get("minio-init", {}).get("condition")
        assert condition == "service_completed_successfully", (
            f"service {name} does not wait for minio-init to complete"
        )
        endpoint = urlsplit(environment(svc).get("AWS_ENDPOINT_URL_S3", ""))
        assert endpoint.hostname == "minio", f"service {name}: S3 endpoint is not the minio service"
        assert endpoint.port == 9000


def test_workers_scale_without_collisions() -> None:
    # `docker compose up --scale worker=3` fails on a fixed name or a fixed host port.
    for name, svc in archiver_services().items():
        assert "container_name" not in svc, f"service {name} has a fixed container_name"
        for port in svc.get("ports") or []:
            if isinstance(port, dict):
                assert "published" not in port, f"service {name} publishes a fixed host port"
            else:
                assert ":" not in str(port), f"service {name} publishes a fixed host port {port}"
    assert role_services("worker"), "no worker service"


def test_bind_mounted_paths_exist_in_the_repository() -> None:
    for name, svc in services().items():
        for mount in mounts(svc):
            if not mount.is_bind:
                continue
            assert mount.source.startswith("./"), (
                f"service {name}: bind mount {mount.source!r} is not relative to the repository"
            )
            path = (REPO / mount.source).resolve()
            assert path.exists(), f"service {name}: {mount.source} does not exist"
            assert path.is_relative_to(REPO), f"service {name}: {mount.source} leaves the repo"


def test_prometheus_scrapes_both_jobs_and_loads_the_alert_rules() -> None:
    prometheus, in_container, path = prometheus_config()
    assert path == PROMETHEUS_CONFIG
    config = load_yaml(path)
    assert config["global"]["scrape_interval"] == "15s"
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    expected = {
        "archiver-scheduler": (
            role_services("scheduler"),
            "ARCHIVER_METRICS_PORT",
            9808,
        ),
        "archiver-workers": (role_services("worker"), "ARCHIVER_WORKER_METRICS_PORT", 9809),
    }
    for job_name, (role, variable, default) in expected.items():
        assert job_name in jobs, f"Prometheus has no job {job_name}"
        discovered = jobs[job_name].get("dns_sd_configs") or []
        assert discovered, f"job {job_name} does not find every replica through DNS"
        names = {name for sd in discovered for name in sd["names"]}
        assert names == set(role), f"job {job_name} resolves {names}, services are {set(role)}"
        for sd in discovered:
            assert sd["type"] == "A"
            for svc in role.values():
                assert sd["port"] == metrics_port(svc, variable, default), (
                    f"job {job_name} scrapes port {sd['port']}, the service serves "
                    f"{metrics_port(svc, variable, default)}"
                )
    rule_files = config.get("rule_files") or []
    assert rule_files, "Prometheus loads no rule files"
    loaded: list[Path] = []
    for rule_file in rule_files:
        # Relative rule files are relative to the configuration file's directory.
        host = host_path(prometheus, str(in_container.parent / rule_file))
        assert host is not None, f"rule file {rule_file} is not mounted into Prometheus"
        assert host.is_file(), f"rule file {rule_file} is {host}, which does not exist"
        loaded.append(host)
    assert ALERTS_FILE in loaded, f"Prometheus loads {loaded}, not {ALERTS_FILE}"


def grafana_files() -> tuple[dict[str, Any], Path]:
    grafana = service("grafana")
    provisioning = host_path(grafana, GRAFANA_PROVISIONING)
    assert provisioning is not None, f"Grafana's {GRAFANA_PROVISIONING} is not mounted"
    assert provisioning.is_dir(), f"Grafana's {GRAFANA_PROVISIONING} is {provisioning}"
    return grafana, provisioning


def test_grafana_provisions_the_datasource_the_dashboard_uses() -> None:
    grafana, provisioning = grafana_files()
    datasources = [
        ds
        for path in sorted((provisioning / "datasources").glob("*.y*ml"))
        for ds in load_yaml(path).get("datasources", [])
    ]
    assert len(datasources) == 1, f"expected one provisioned datasource, found {datasources}"
    datasource = datasources[0]
    assert datasource["type"] == "prometheus"
    url = urlsplit(datasource["url"])
    assert url.hostname == "prometheus", f"datasource url {url.geturl()}"
    assert url.port == 9090, f"datasource url {url.geturl()}"

    providers = [
        provider
        for path in sorted((provisioning / "dashboards").glob("*.y*ml"))
        for provider in load_yaml(path).get("providers", [])
    ]
    assert providers, "no dashboard provider is provisioned"
    dashboards: list[Path] = []
    for provider in providers:
        folder = host_path(grafana, provider["options"]["path"])
        assert folder is not None, f"{provider['options']['path']} is not mounted into Grafana"
        assert folder.is_dir(), f"{provider['options']['path']} is {folder}, not a directory"
        dashboards += sorted(folder.glob("*.json"))
    assert DASHBOARD_FILE in dashboards, f"{DASHBOARD_FILE} is not provisioned"

    for path in dashboards:
        dashboard = load_json(path)
        assert dashboard["uid"] == "wal-archiver"
        uids = set(datasource_uids(dashboard))
        assert uids == {datasource["uid"]}, (
            f"{path.name} refers to datasources {uids}, provisioned is {datasource['uid']!r}"
        )
    home = environment(grafana).get("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH")
    if home:
        assert host_path(grafana, home) in dashboards, f"home dashboard {home} is not mounted"
    published = [str(p) for p in grafana.get("ports") or []]
    assert any(p.endswith(":3000") for p in published), "Grafana's port 3000 is not published"


def datasource_uids(value: object) -> list[str]:
    found: list[str] = []
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "datasource":
                assert isinstance(item, dict), f"datasource {item!r} is not referenced by uid"
                assert "uid" in item, f"datasource {item!r} is not referenced by uid"
                found.append(str(item["uid"]))
            else:
                found += datasource_uids(item)
    elif isinstance(value, list):
        for item in value:
            found += datasource_uids(item)
    return found


def test_dockerfile_base_image_is_pinned_and_runs_archiver() -> None:
    instructions = dockerfile_instructions()
    bases = [args.split()[0] for keyword, args in instructions if keyword == "FROM"]
    assert bases, "the Dockerfile has no FROM"
    for base in bases:
        assert_pinned(base, "Dockerfile FROM")
        assert re.search(r":\d+\.\d+\.\d+", base), f"base image {base} is not pinned to a patch"
    assert dockerfile_entrypoint() == [SCRIPT]
    users = [args for keyword, args in instructions if keyword == "USER"]
    assert users, "the image runs as root"
    assert users[-1] not in ("root", "0"), "the image runs as root"
    for keyword, args in instructions:
        if keyword == "COPY" and not args.startswith("--from"):
            *sources, _ = args.split()
            for source in sources:
                assert (REPO / source).exists(), f"Dockerfile copies missing {source}"
    ignored = set((REPO / ".dockerignore").read_text(encoding="utf-8").split())
    assert {".git", ".venv", ".archiver-demo"} <= ignored, ".dockerignore misses big directories"
