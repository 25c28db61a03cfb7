"""Commands that look: inspect (partition state in Redis) and ls (the archive)."""

from __future__ import annotations

import json
from typing import Any

import click
from rich.table import Table

from archiver.catalog import partition_archives
from archiver.cli.common import LSN, PARTITION, STORAGE, clear_errors, console, main, services
from archiver.config import Settings
from archiver.sinks import open_sink
from archiver.state_store import PartitionRecord


@main.group()
def inspect() -> None:
    """Look at partition state in Redis."""


def _print_partitions(records: list[PartitionRecord]) -> None:
    table = Table(
        "storage",
        "partition",
        "next",
        "high",
        "in flight",
        "acked",
        "backlog",
        "gaps",
        "last error",
    )
    for r in records:
        s = r.state
        table.add_row(
            r.storage,
            str(r.partition),
            str(s.next_lsn),
            str(s.high_water_mark),
            "-" if s.in_flight_lsn is None else str(s.in_flight_lsn),
            "-" if s.acknowledged_lsn is None else str(s.acknowledged_lsn),
            str(r.to_json()["backlog"]),
            str(r.gaps_total),
            (s.last_error or "")[:60],
        )
    console.print(table)


@inspect.command("partition")
@click.argument("storage", type=STORAGE)
@click.argument("partition", type=PARTITION)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@clear_errors
def inspect_partition(storage: str, partition: int, as_json: bool) -> None:
    """Everything known about one partition."""
    record = services(Settings.from_env()).store.load(storage, partition)
    if record is None:
        raise click.ClickException(f"no state for partition {partition} of storage {storage!r}")
    if as_json:
        click.echo(json.dumps(record.to_json()))
        return
    for name, value in record.to_json().items():
        click.echo(f"{name:>18}: {value}")


@inspect.command("partitions")
@click.option("--storage", type=STORAGE, help="Only this storage.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
@clear_errors
def inspect_partitions(storage: str | None, as_json: bool) -> None:
    """Every known partition (paged through Redis with SSCAN)."""
    records = sorted(
        services(Settings.from_env()).store.partitions(storage),
        key=lambda r: (r.storage, r.partition),
    )
    if as_json:
        click.echo(json.dumps([r.to_json() for r in records]))
    else:
        _print_partitions(records)


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
    sink = open_sink(Settings.from_env().require_sink_url())
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
    rejected = services(Settings.from_env()).streams.rejected_notifications(limit)
    if as_json:
        click.echo(json.dumps(rejected))
        return
    table = Table("id", "reason", "fields")
    for item in rejected:
        fields = " ".join(f"{k}={v!r}" for k, v in item["fields"].items())
        table.add_row(item["id"], item["reason"], fields)
    console.print(table)
