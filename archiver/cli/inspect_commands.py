"""Commands that look: inspect (partition state in Redis) and ls (the archive)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from archiver.archive.catalog import partition_archives
from archiver.cli.common import (
    LSN,
    PARTITION,
    STORAGE,
    clear_errors,
    console,
    current_settings,
    main,
    services,
)
from archiver.config import Settings
from archiver.core.mirror_progress import MirrorProgress
from archiver.core.object_names import PartitionId
from archiver.core.partition import PartitionCondition
from archiver.observability.overview import PartitionFilter, SortKey, select
from archiver.sinks import open_sink
from archiver.store.records import PartitionRecord


@main.group()
def inspect() -> None:
    """Look at the archiver's state in Redis: the fleet, partitions, rejected notifications.

    Every command pages through Redis (SSCAN, pipelined reads); none reads everything at once.
    Every command takes --json for scripts.
    """


def _age(ms: int | None) -> str:
    """A duration for people: 850ms, 42s, 3m12s, 5h03m, 2d04h."""
    if ms is None:
        return "-"
    if ms < 1000:
        return f"{max(ms, 0)}ms"
    seconds = ms // 1000
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def _since(now_ms: int, then_ms: int | None) -> int | None:
    return None if then_ms is None else now_ms - then_ms


def _scanning(records: Iterator[PartitionRecord], quiet: bool) -> Iterator[PartitionRecord]:
    """Show how far a long scan got (on stderr, on a terminal only)."""
    progress_console = Console(stderr=True)
    if quiet or not progress_console.is_terminal:
        yield from records
        return
    with progress_console.status("scanning partitions...") as status:
        for count, record in enumerate(records, 1):
            if count % 1000 == 0:
                status.update(f"scanning partitions... {count:,}")
            yield record


@inspect.command("summary")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@clear_errors
def inspect_summary(as_json: bool) -> None:
    """The fleet at a glance: partitions by state, backlog and the age of the oldest entry
    waiting (per storage), queue depths, fleet backoff, the scheduler leader, recent errors."""
    from kombu.exceptions import OperationalError

    from archiver.observability.overview import summarize
    from archiver.runtime.taskqueue import make_celery, queue_depths, queue_name
    from archiver.store.leadership import current_leader

    settings = current_settings()
    state = services(settings)
    store = state.store
    overview = summarize(_scanning(store.records.all(), as_json))
    now = store.server_time_ms()
    storages = sorted(set(overview.storages) | set(settings.storages))
    queues: dict[str, int | None]
    broker_error = None
    try:
        queues = dict(
            queue_depths(make_celery(settings), [queue_name(storage) for storage in storages])
        )
    except (OperationalError, OSError) as exc:
        broker_error = f"broker unreachable: {exc}"
        queues = dict.fromkeys((queue_name(storage) for storage in storages), None)
    total = overview.total()
    summary: dict[str, Any] = {
        "partitions": {c.value: n for c, n in total.partitions.items()},
        "backlog": total.backlog,
        "oldest_unarchived_age_seconds": total.oldest_age_seconds(now),
        "gaps_total": total.gaps_total,
        "storages": {
            storage: {
                "partitions": {c.value: n for c, n in totals.partitions.items()},
                "backlog": totals.backlog,
                "oldest_unarchived_age_seconds": totals.oldest_age_seconds(now),
                "gaps_total": totals.gaps_total,
            }
            for storage, totals in sorted(overview.storages.items())
        },
        "queues": queues,
        "broker_error": broker_error,
        "notifications_waiting": state.streams.queued_notifications(),
        "notifications_rejected": state.streams.rejected_count(),
        "fleet_backoff_seconds": store.fleet.left(),
        "scheduler_leader": current_leader(store.client, store.keys.leader),
        "counters": store.counters.read(),
        "recent_errors": [
            {
                "at_ms": e.at_ms,
                "storage": e.storage,
                "partition": e.partition,
                "lsn": e.lsn,
                "error": e.error,
            }
            for e in overview.recent_errors
        ],
    }
    if as_json:
        click.echo(json.dumps(summary))
        return
    _print_summary(summary, now)


def _print_summary(summary: dict[str, Any], now: int) -> None:
    states = [c.value for c in PartitionCondition]
    table = Table(
        "storage", *states, "backlog", "oldest waiting", "gaps", "queue", title="Partitions"
    )
    for storage, totals in summary["storages"].items():
        table.add_row(
            storage,
            *(str(totals["partitions"][s]) for s in states),
            str(totals["backlog"]),
            _age(round(totals["oldest_unarchived_age_seconds"] * 1000)),
            str(totals["gaps_total"]),
            str(summary["queues"].get(f"archiver.{storage}", "-")),
        )
    table.add_row(
        "all",
        *(str(summary["partitions"][s]) for s in states),
        str(summary["backlog"]),
        _age(round(summary["oldest_unarchived_age_seconds"] * 1000)),
        str(summary["gaps_total"]),
        str(sum(d for d in summary["queues"].values() if d is not None)),
        style="bold",
    )
    console.print(table)
    backoff = summary["fleet_backoff_seconds"]
    console.print(f"scheduler leader: {summary['scheduler_leader'] or 'NONE'}")
    console.print(f"fleet backoff: {f'{backoff:.1f}s left' if backoff else 'none'}")
    console.print(
        f"notifications waiting: {summary['notifications_waiting']}, "
        f"rejected (kept): {summary['notifications_rejected']}"
    )
    if summary["broker_error"]:
        console.print(f"[red]{summary['broker_error']}[/red]")
    if summary["counters"]:
        console.print(
            "counters: " + ", ".join(f"{k}={v}" for k, v in sorted(summary["counters"].items()))
        )
    if summary["recent_errors"]:
        errors = Table("when", "storage", "partition", "lsn", "error", title="Recent errors")
        for e in summary["recent_errors"]:
            errors.add_row(
                _age(now - e["at_ms"]) + " ago",
                e["storage"],
                str(e["partition"]),
                str(e["lsn"]),
                e["error"][:100],
            )
        console.print(errors)


def _print_partitions(records: list[PartitionRecord], now: int) -> None:
    table = Table(
        "storage",
        "partition",
        "state",
        "next",
        "high",
        "acked",
        "backlog",
        "oldest waiting",
        "no progress for",
        "tries",
        "last error",
    )
    for r in records:
        s = r.state
        table.add_row(
            r.storage,
            str(r.partition),
            s.condition.value,
            str(s.next_lsn),
            str(s.high_water_mark),
            "-" if s.acknowledged_lsn is None else str(s.acknowledged_lsn),
            str(s.backlog),
            _age(_since(now, r.oldest_unarchived_ms) if s.has_work else None),
            _age(_since(now, r.waiting_since_ms())),
            str(s.attempts),
            (s.last_error or "")[:60],
        )
    console.print(table)


@inspect.command("partition")
@click.argument("storage", type=STORAGE)
@click.argument("partition", type=PARTITION)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@clear_errors
def inspect_partition(storage: str, partition: int, as_json: bool) -> None:
    """Everything about one partition: positions, lease holder and age, fencing token, recent
    gaps, last error, recent acknowledgements, and operators' actions (audit trail)."""
    state = services(current_settings())
    record = state.store.records.load(PartitionId(storage, partition))
    if record is None:
        raise click.ClickException(f"no state for partition {partition} of storage {storage!r}")
    now = state.store.server_time_ms()
    detail = record.to_json()
    detail["now_ms"] = now
    detail["recent_acknowledgements"] = state.streams.recent_acks(storage, partition)
    settings = current_settings()
    detail["mirrors"] = {
        name: _mirror_json(state.store.mirrors.load(name, PartitionId(storage, partition)), record)
        for name in settings.mirror_urls
    }
    if as_json:
        click.echo(json.dumps(detail))
        return
    s = record.state
    rows: list[tuple[str, str]] = [
        ("partition", f"{storage}/{partition}"),
        ("state", s.condition.value),
        ("next LSN", str(s.next_lsn)),
        ("high-water mark", str(s.high_water_mark)),
        ("acknowledged", "-" if s.acknowledged_lsn is None else str(s.acknowledged_lsn)),
        ("backlog", str(s.backlog)),
        ("oldest waiting", _age(_since(now, record.oldest_unarchived_ms) if s.has_work else None)),
        ("last progress", _ago(now, record.progress_ms)),
        ("fencing token", str(s.fencing_token)),
    ]
    if s.in_flight_lsn is not None:
        rows += [
            ("in flight", str(s.in_flight_lsn)),
            ("lease holder", record.holder or "(task not started yet)"),
            ("lease age", _age(_since(now, s.claimed_ms))),
            ("lease expires in", _age(-(_since(now, s.lease_expires_ms) or 0))),
        ]
    else:
        rows.append(("in flight", "-"))
    rows += [
        ("failed attempts", str(s.attempts)),
        ("last error", f"{s.last_error} ({_ago(now, record.error_ms)})" if s.last_error else "-"),
        ("gaps", str(record.gaps_total)),
    ]
    for name, mirror in detail["mirrors"].items():
        rows.append((f"mirror {name}", _mirror_text(mirror)))
    table = Table(show_header=False, box=None)
    for name, value in rows:
        table.add_row(name, value)
    console.print(table)
    if record.recent_gaps:
        gaps = Table("from", "to", "entries lost", "when", "kind", title="Recent gaps")
        for g in record.recent_gaps[-10:]:
            gaps.add_row(
                str(g.gap.expected),
                str(g.gap.actual - 1),
                str(g.gap.actual - g.gap.expected),
                _ago(now, g.at_ms),
                "manual (skip-to)" if g.manual else "deleted by the producer",
            )
        console.print(gaps)
    if detail["recent_acknowledgements"]:
        acks = Table("lsn", "when", title="Recent acknowledgements")
        for ack in detail["recent_acknowledgements"]:
            acks.add_row(str(ack["lsn"]), _ago(now, ack["at_ms"]))
        console.print(acks)
    if record.audit:
        audit = Table("when", "who", "action", "reason", "detail", title="Audit trail")
        for entry in record.audit:
            audit.add_row(
                _ago(now, int(entry["at_ms"])),
                str(entry.get("actor", "")),
                str(entry.get("action", "")),
                str(entry.get("reason", "")),
                json.dumps(entry.get("detail") or {}),
            )
        console.print(audit)


def _mirror_json(progress: MirrorProgress, record: PartitionRecord | None) -> dict[str, Any]:
    acknowledged = None if record is None else record.state.acknowledged_lsn
    return {
        "through": progress.through,
        "lag_entries": progress.lag(acknowledged),
        "attempts": progress.attempts,
        "last_error": progress.last_error,
        "retry_ms": progress.retry_ms,
        "conflict": progress.conflict,
        "copying": progress.holder is not None,
    }


def _mirror_trouble(mirror: dict[str, Any]) -> str | None:
    if mirror["conflict"]:
        return f"STOPPED: {mirror['conflict']}"
    if mirror["attempts"]:
        return f"{mirror['attempts']} failed copies: {mirror['last_error']}"
    return None


def _mirror_text(mirror: dict[str, Any]) -> str:
    trouble = _mirror_trouble(mirror)
    text = f"through {mirror['through'] or '-'}, {mirror['lag_entries']} behind"
    return text if trouble is None else f"{text}; {trouble}"


@inspect.command("mirrors")
@click.option("--storage", type=STORAGE, help="Only this storage.")
@click.option("--all", "show_all", is_flag=True, help="Every partition, not only those behind.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@clear_errors
def inspect_mirrors(storage: str | None, show_all: bool, as_json: bool) -> None:
    """How far each mirror of ARCHIVER_MIRROR_URLS is behind the acknowledged LSNs: totals,
    then the partitions behind, failing or stopped by a conflict."""
    settings = current_settings()
    if not settings.mirror_urls:
        raise click.UsageError("no mirrors are configured (ARCHIVER_MIRROR_URLS)")
    state = services(settings)
    records = list(state.store.records.all(storage))
    pids = [PartitionId(r.storage, r.partition) for r in records]
    report: dict[str, Any] = {}
    for name in settings.mirror_urls:
        progress = state.store.mirrors.load_many(name, pids)
        rows = [
            {"storage": r.storage, "partition": r.partition, **_mirror_json(p, r)}
            for r, p in zip(records, progress, strict=True)
        ]
        shown = [
            row
            for row in rows
            if show_all or row["lag_entries"] or row["conflict"] or row["attempts"]
        ]
        report[name] = {
            "lag_entries": sum(row["lag_entries"] for row in rows),
            "partitions": len(rows),
            "behind": sum(1 for row in rows if row["lag_entries"]),
            "failing": sum(1 for row in rows if row["attempts"]),
            "conflicted": sum(1 for row in rows if row["conflict"]),
            "detail": shown,
        }
    if as_json:
        click.echo(json.dumps(report))
        return
    for name, mirror in report.items():
        click.echo(
            f"mirror {name}: {mirror['lag_entries']} entries behind over {mirror['behind']} of "
            f"{mirror['partitions']} partitions; {mirror['failing']} failing, "
            f"{mirror['conflicted']} stopped by a conflict"
        )
        if mirror["detail"]:
            table = Table("partition", "through", "behind", "state")
            for row in mirror["detail"]:
                table.add_row(
                    f"{row['storage']}/{row['partition']}",
                    str(row["through"] if row["through"] is not None else "-"),
                    str(row["lag_entries"]),
                    _mirror_trouble(row) or "ok",
                )
            console.print(table)


@inspect.command("scrub")
@click.option("--sink", "sink_name", default="primary", show_default=True, metavar="NAME")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@clear_errors
def inspect_scrub(sink_name: str, as_json: bool) -> None:
    """Where the scrubber is in its walk of a sink, and every problem it has found there."""
    from archiver.archive.scrub import ScrubState

    state = services(current_settings())
    scrub = ScrubState(state.store, sink_name)
    position = scrub.load()
    findings = scrub.findings()
    now = state.store.server_time_ms()
    oldest = position.oldest_unscrubbed_ms()
    detail = {
        "sink": sink_name,
        "cycle": position.cycle,
        "at": None
        if position.storage is None
        else {"storage": position.storage, "partition": position.partition, "lsn": position.lsn},
        "objects": position.objects,
        "bytes": position.bytes,
        "oldest_unscrubbed_age_seconds": None if oldest is None else (now - oldest) / 1000,
        "findings": [f.to_json() for f in findings],
    }
    if as_json:
        click.echo(json.dumps(detail))
        return
    where = (
        "not started"
        if position.cycle_started_ms is None
        else f"cycle {position.cycle}, at {position.storage or '-'}/{position.partition or '-'} "
        f"LSN {position.lsn or '-'}; {position.objects} objects ({position.bytes:,} bytes) so far"
    )
    click.echo(f"scrubber of {sink_name}: {where}")
    click.echo(f"least recently scrubbed: {_age(None if oldest is None else now - oldest)} ago")
    for finding in findings:
        when = _ago(now, finding.found_ms)
        click.echo(f"{finding.kind.upper()} {finding.subject}: {finding.detail} ({when})")
    click.echo(f"{len(findings)} problems recorded")


def _ago(now: int, then_ms: int | None) -> str:
    return "-" if then_ms is None else _age(now - then_ms) + " ago"


@inspect.command("partitions")
@click.option("--storage", type=STORAGE, help="Only this storage.")
@click.option(
    "--state",
    "condition",
    type=click.Choice([c.value for c in PartitionCondition]),
    help="Only partitions in this state.",
)
@click.option(
    "--lagging", type=click.IntRange(1), metavar="N", help="Only partitions with a backlog >= N."
)
@click.option(
    "--stuck",
    type=click.FloatRange(0, min_open=True),
    metavar="SECONDS",
    help="Only partitions with work and no progress for at least this long.",
)
@click.option(
    "--sort",
    type=click.Choice([k.value for k in SortKey]),
    help="Largest backlog, or oldest waiting entry, first.",
)
@click.option(
    "--limit",
    default=100,
    show_default=True,
    type=click.IntRange(1, 1_000_000),
    help="Show at most this many.",
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
@clear_errors
def inspect_partitions(
    storage: str | None,
    condition: str | None,
    lagging: int | None,
    stuck: float | None,
    sort: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """Partitions matching every filter given (paged through Redis with SSCAN)."""
    store = services(current_settings()).store
    wanted = PartitionFilter(
        storage=storage,
        condition=PartitionCondition(condition) if condition else None,
        lagging=lagging,
        stuck_seconds=stuck,
    )
    now = store.server_time_ms()
    records = select(
        _scanning(store.records.all(storage), as_json),
        wanted,
        now,
        SortKey(sort) if sort else None,
        limit,
    )
    if sort is None:
        records.sort(key=lambda r: (r.storage, r.partition))
    if as_json:
        click.echo(json.dumps([r.to_json() for r in records]))
    else:
        _print_partitions(records, now)


@main.command("config")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object.")
@clear_errors
def config(as_json: bool) -> None:
    """Every setting: its environment variable, the value in effect here (passwords masked),
    its default, and what it is for. A value that would be refused is reported as an error."""
    effective = current_settings().effective()
    declared = Settings.declared()
    if as_json:
        click.echo(
            json.dumps(
                {
                    d.env: {"value": effective[d.env], "default": d.default, "help": d.help}
                    for d in declared
                }
            )
        )
        return
    table = Table("variable", "value", "default", "what it is for")
    for d in declared:
        value = effective[d.env]
        cells = (d.env, "" if value is None else value, d.default or "", d.help)
        table.add_row(*(Text(cell) for cell in cells))  # no rich markup: `[/prefix]` is text
    console.print(table)


@main.command("ls")
@click.argument("storage", type=STORAGE)
@click.argument("partition", type=PARTITION)
@click.option(
    "--from", "from_lsn", type=LSN, default=1, show_default=True, help="Start at this LSN."
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
@clear_errors
def ls(storage: str, partition: int, from_lsn: int, as_json: bool) -> None:
    """List a partition's archives in LSN order (needs ARCHIVER_SINK_URL)."""
    sink = open_sink(current_settings().require_sink_url(), current_settings().keyring)
    rows: list[dict[str, Any]] = [
        {"lsn": a.lsn, "key": a.key, "size": a.size}
        for a in partition_archives(sink, storage, partition)
        if a.lsn >= from_lsn
    ]
    if as_json:
        click.echo(json.dumps(rows))
        return
    table = Table("lsn", "key", "size")
    for row in rows:
        table.add_row(str(row["lsn"]), str(row["key"]), str(row["size"]))
    console.print(table)


@inspect.command("rejected")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 10_000))
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
@clear_errors
def inspect_rejected(limit: int, as_json: bool) -> None:
    """Notifications the scheduler refused, newest first, with the reason."""
    rejected = services(current_settings()).streams.rejected_notifications(limit)
    if as_json:
        click.echo(json.dumps(rejected))
        return
    table = Table("id", "reason", "fields")
    for item in rejected:
        fields = " ".join(f"{k}={v!r}" for k, v in item["fields"].items())
        table.add_row(item["id"], item["reason"], fields)
    console.print(table)
