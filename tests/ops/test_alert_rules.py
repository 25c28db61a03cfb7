"""The alert rules, their promtool tests, the runbook and the dashboard's queries.

promtool (from the Prometheus package) checks the rule files, runs their unit tests and checks
the Prometheus configuration; the rest checks that the rules, the dashboard and the runbook
speak of metrics the code exports and of commands the CLI has.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from tests.ops.deployment import (
    ALERTS_FILE,
    ALERTS_TEST_FILE,
    DASHBOARD_FILE,
    OPS,
    RUNBOOK,
    SCRIPT,
    alert_rules,
    assert_promtool_ok,
    check_options,
    host_path,
    load_json,
    load_yaml,
    prometheus_config,
    promtool,
    resolve,
    walk_strings,
)

EXPECTED_ALERTS = frozenset(
    {
        "ArchiveLagHigh",
        "ArchiveBacklogGrowing",
        "ArchiveNoProgress",
        "ArchiveGapDetected",
        "ArchiveConflict",
        "ArchivePartitionStopped",
        "ArchiveFleetBackoff",
        "ArchiveNoSchedulerLeader",
        "ArchiveWorkerHostDown",
        "ArchiveNotificationsRejected",
        "ArchiveStateMetricsStale",
        "ArchiveAcknowledgementsHeld",
    }
)
SEVERITIES = frozenset({"warning", "critical"})
RUNBOOK_LINK = "ops/runbook.md#"

# A metric name of ours: not part of a longer identifier (`wal_archiver_x`, `a:archiver_x`).
METRIC_NAME = re.compile(r"(?<![\w:])archiver_[a-z0-9_]+")
HISTOGRAM_SERIES = re.compile(r"_(bucket|sum|count)$")
# Where a Grafana dashboard keeps PromQL.
DASHBOARD_QUERY_KEYS = frozenset({"expr", "query", "definition"})
# Grafana's variables, replaced by something PromQL accepts so promtool can parse the query.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}
GRAFANA_VARIABLE = re.compile(r"\$\w+")


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def markdown_prose_and_code(text: str) -> tuple[list[str], list[str]]:
    """The lines outside fenced code blocks, and those inside."""
    prose: list[str] = []
    code: list[str] = []
    fenced = False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        (code if fenced else prose).append(line)
    return prose, code


def runbook_headings() -> list[str]:
    prose, _ = markdown_prose_and_code(RUNBOOK.read_text(encoding="utf-8"))
    return [m.group(2).strip() for line in prose if (m := re.match(r"(#{1,6})\s+(.+)", line))]


def dashboard_queries() -> list[str]:
    return list(walk_strings(load_json(DASHBOARD_FILE), DASHBOARD_QUERY_KEYS))


def metric_names(text: str) -> set[str]:
    return {HISTOGRAM_SERIES.sub("", name) for name in METRIC_NAME.findall(text)}


def alert_tests() -> list[dict[str, Any]]:
    data = load_yaml(ALERTS_TEST_FILE)
    return [case for test in data["tests"] for case in test.get("alert_rule_test") or []]


def test_promtool_accepts_the_rules() -> None:
    result = promtool("check", "rules", str(ALERTS_FILE.relative_to(OPS.parent)))
    assert_promtool_ok(result)
    assert f"{len(alert_rules())} rules found" in result.stdout, result.stdout


def test_promtool_unit_tests_pass() -> None:
    result = promtool("test", "rules", str(ALERTS_TEST_FILE.relative_to(OPS.parent)))
    assert_promtool_ok(result)
    assert "SUCCESS" in result.stdout, result.stdout


def test_promtool_accepts_the_prometheus_configuration(tmp_path: Path) -> None:
    # The rule files are given as paths inside the Prometheus container; point them at the
    # repository files docker-compose.yml mounts there.
    prometheus, in_container, path = prometheus_config()
    config = load_yaml(path)
    rule_files: list[str] = []
    for rule_file in config.get("rule_files") or []:
        host = host_path(prometheus, str(in_container.parent / PurePosixPath(rule_file)))
        assert host is not None, f"rule file {rule_file} is not mounted into Prometheus"
        rule_files.append(str(host))
    config["rule_files"] = rule_files
    copy = tmp_path / "prometheus.yml"
    copy.write_text(yaml.safe_dump(config), encoding="utf-8")
    result = promtool("check", "config", str(copy))
    assert_promtool_ok(result)
    assert "SUCCESS" in result.stdout + result.stderr


def test_every_expected_alert_exists() -> None:
    names = {rule["alert"] for rule in alert_rules()}
    assert names >= EXPECTED_ALERTS, f"missing alerts: {sorted(EXPECTED_ALERTS - names)}"


def test_every_alert_has_a_severity_a_summary_and_its_runbook_section() -> None:
    headings = runbook_headings()
    anchors = {github_anchor(h) for h in headings}
    for rule in alert_rules():
        name = rule["alert"]
        labels = rule.get("labels") or {}
        annotations = rule.get("annotations") or {}
        assert labels.get("severity") in SEVERITIES, f"{name}: severity {labels.get('severity')}"
        assert annotations.get("summary"), f"{name} has no summary"
        assert annotations.get("description"), f"{name} has no description"
        url = str(annotations.get("runbook_url", ""))
        assert url.startswith(RUNBOOK_LINK), f"{name}: runbook_url {url!r} is not {RUNBOOK_LINK}…"
        anchor = url.removeprefix(RUNBOOK_LINK)
        assert anchor == github_anchor(name), f"{name}: runbook_url points at #{anchor}"
        assert name in headings, f"ops/runbook.md has no heading `## {name}`"
        assert anchor in anchors


def test_runbook_headings_and_links_resolve() -> None:
    headings = runbook_headings()
    anchors = [github_anchor(h) for h in headings]
    assert len(anchors) == len(set(anchors)), f"duplicate runbook headings: {headings}"
    text = RUNBOOK.read_text(encoding="utf-8")
    for target in re.findall(r"\]\(#([^)]+)\)", text):
        assert target in anchors, f"runbook link #{target} matches no heading"


def shell_commands(line: str) -> list[list[str]]:
    """The simple commands of a shell line, split at `|`, `&&`, `;` and redirections."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    commands: list[list[str]] = [[]]
    for token in lexer:
        if token and all(c in lexer.punctuation_chars for c in token):
            commands.append([])
        else:
            commands[-1].append(token)
    return [command for command in commands if command]


def runbook_command_lines() -> Iterator[tuple[str, list[str], bool]]:
    """(source line, arguments after `archiver`, complete?) for every `archiver` command line
    in the runbook's code blocks (complete) and inline code (may stop at a group)."""
    prose, code = markdown_prose_and_code(RUNBOOK.read_text(encoding="utf-8"))
    for line in code:
        for tokens in shell_commands(line):
            for i, token in enumerate(tokens):
                if PurePosixPath(token).name == SCRIPT:
                    yield line.strip(), tokens[i + 1 :], True
                    break
    for span in re.findall(r"`([^`]+)`", " ".join(prose)):
        if span.startswith(SCRIPT + " "):
            yield span, shlex.split(span)[1:], False


def test_runbook_commands_are_real_subcommands_and_options() -> None:
    seen: set[str] = set()
    for line, argv, complete in runbook_command_lines():
        where = f"ops/runbook.md `{line}`"
        invocation = resolve(argv, where, partial=not complete)
        check_options(invocation, where)
        seen.add(" ".join(invocation.path))
    # The runbook must show how to use these.
    for needed in (
        "inspect summary",
        "inspect partitions",
        "inspect partition",
        "inspect rejected",
        "admin release",
        "admin requeue",
        "admin resume",
    ):
        assert needed in seen, f"ops/runbook.md never runs `{SCRIPT} {needed}`"


def test_runbook_states_the_safety_rules() -> None:
    text = RUNBOOK.read_text(encoding="utf-8")
    assert "Never delete an archive object" in text
    # Paragraphs and list items.
    blocks = re.split(r"\n\s*\n|\n(?=\s*- )", text)
    skip_to = [block for block in blocks if "admin skip-to" in block]
    assert any("--reason" in block and "--yes" in block for block in skip_to), (
        "the runbook must say that skip-to needs --reason and --yes"
    )


def test_every_metric_named_is_exported() -> None:
    from archiver.observability.metrics import EXPORTED_METRICS

    sources = {
        "ops/prometheus/alerts.yml": "\n".join(rule["expr"] for rule in alert_rules()),
        "ops/grafana/dashboards/archiver.json": "\n".join(dashboard_queries()),
        "ops/runbook.md": RUNBOOK.read_text(encoding="utf-8"),
        "ops/README.md": (OPS / "README.md").read_text(encoding="utf-8"),
    }
    for source, text in sources.items():
        unknown = metric_names(text) - EXPORTED_METRICS
        assert not unknown, f"{source} uses metrics the code does not export: {sorted(unknown)}"


def test_the_dashboard_shows_every_exported_metric() -> None:
    from archiver.observability.metrics import EXPORTED_METRICS

    shown = metric_names("\n".join(dashboard_queries()))
    missing = EXPORTED_METRICS - shown
    assert not missing, f"no dashboard panel shows {sorted(missing)}"


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    dashboard = load_json(DASHBOARD_FILE)
    assert dashboard["schemaVersion"] >= 36
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids)), f"panel ids repeat: {ids}"
    rules: list[dict[str, str]] = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expr = str(target.get("expr", ""))
            assert expr.strip(), f"panel {panel['title']!r} has an empty query"
            for variable, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(variable, value)
            # Template variables ($storage) stand inside regex matchers: any regex will do.
            expr = GRAFANA_VARIABLE.sub(".*", expr)
            record = f"dashboard:panel{panel['id']}:{target['refId']}"
            rules.append({"record": record, "expr": expr})
    assert rules, "the dashboard has no queries"
    rule_file = tmp_path / "dashboard_rules.yml"
    rule_file.write_text(
        yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}), encoding="utf-8"
    )
    assert_promtool_ok(promtool("check", "rules", str(rule_file)))


def test_promtool_tests_cover_every_alert() -> None:
    names = {rule["alert"] for rule in alert_rules()}
    cases = alert_tests()
    tested = {case["alertname"] for case in cases}
    # A test of a misspelt alert expecting nothing would pass without testing anything.
    assert tested <= names, f"alerts_test.yml tests unknown alerts: {sorted(tested - names)}"
    for name in sorted(names):
        firing = [c for c in cases if c["alertname"] == name and c.get("exp_alerts")]
        silent = [c for c in cases if c["alertname"] == name and not c.get("exp_alerts")]
        assert firing, f"alerts_test.yml has no case where {name} fires"
        assert silent, f"alerts_test.yml has no case where {name} must not fire"
        for case in firing:
            for alert in case["exp_alerts"]:
                assert alert.get("exp_labels", {}).get("severity") in SEVERITIES, (
                    f"{name} at {case['eval_time']}: expected labels name no severity"
                )
                assert alert.get("exp_annotations", {}).get("runbook_url"), (
                    f"{name} at {case['eval_time']}: expected annotations are not checked"
                )
