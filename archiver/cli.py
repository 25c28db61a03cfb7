"""The ``archiver`` command: scheduler, notify, inspect, ls and the demo."""

from __future__ import annotations

import json
import signal
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.table import Table

from archiver.config import ConfigError, Settings, redact_url
from archiver.keys import InvalidName, archive_lsn, check_storage, parse_partition, partition_prefix
from archiver.lsn import InvalidLSN, parse_decimal_lsn
from archiver.notification import Notification
from archiver.redis_client import connect
from archiver.redis_keys import RedisKeys
from archiver.sinks import SinkError, open_sink
from archiver.state_store import PartitionRecord, RedisStateStore
from archiver.streams import Streams

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")
console = Console()


@dataclass
class Services:
    settings: Settings
    store: RedisStateStore
    streams: Streams


def _services(settings: Settings) -> Services:
    client = connect(settings.redis_url)
    keys = RedisKeys(settings.redis_prefix)
    return Services(settings, RedisStateStore(client, keys), Streams(client, keys))


def _clear_errors(func: F) -> F:
    """Bad input and unreachable servers end in one clear line, not a traceback."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        import redis

        try:
            return func(*args, **kwargs)
        except (ConfigError, InvalidName, InvalidLSN) as exc:
            raise click.UsageError(str(exc)) from exc
        except redis.RedisError as exc:
            raise click.ClickException(f"Redis: {exc}") from exc
        except SinkError as exc:
            raise click.ClickException(f"sink: {exc}") from exc

    return wrapper  # type: ignore[return-value]


class CheckedType(click.ParamType[T]):
    """A command-line value read by one of the core's checking parsers."""

    def __init__(self, name: str, parse: Callable[[str], T]) -> None:
        self.name = name
        self._parse = parse

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> T:
        try:
            return self._parse(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


LSN = CheckedType("LSN", parse_decimal_lsn)
PARTITION = CheckedType("PARTITION", parse_partition)
STORAGE = CheckedType("STORAGE", check_storage)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="wal-archiver")
def main() -> None:
    """Archive write-ahead-log entries, in order, to object storage.

    Settings come from the environment: ARCHIVER_REDIS_URL, ARCHIVER_BROKER_URL,
    ARCHIVER_REDIS_PREFIX, ARCHIVER_SINK_URL, ARCHIVER_STORAGES, ARCHIVER_RETRY_MIN_SECONDS,
    ARCHIVER_RETRY_MAX_SECONDS (see the README). Start with `archiver demo`.
    """


@main.command()
@_clear_errors
def scheduler() -> None:
    """Run the scheduler: apply notifications and dispatch archive tasks until SIGTERM.

    Several may run: one leads (ARCHIVER_LEADER_TTL_SECONDS, default 10) and the others stand
    by to take over.
    """
    from archiver.leadership import LeaderLease, scheduler_identity
    from archiver.logging_setup import configure_logging
    from archiver.scheduler import Scheduler
    from archiver.taskqueue import CeleryDispatcher, make_celery

    configure_logging()
    settings = Settings.from_env()
    services = _services(settings)
    dispatcher = CeleryDispatcher(make_celery(settings))
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    click.echo(
        f"scheduler: redis {redact_url(settings.redis_url)} "
        f"broker {redact_url(settings.broker_url)} prefix {settings.redis_prefix}",
        err=True,
    )
    leader = LeaderLease(
        services.store.client,
        services.store.keys.leader,
        scheduler_identity(),
        settings.leader_ttl_seconds,
    )
    Scheduler(settings, services.store, services.streams, dispatcher.dispatch, leader).run(stop)


@main.command()
@click.argument("storage", type=STORAGE)
@click.argument("partition", type=PARTITION)
@click.argument("low", type=LSN)
@click.argument("high", type=LSN)
@_clear_errors
def notify(storage: str, partition: int, low: int, high: int) -> None:
    """Announce that PARTITION of STORAGE holds entries LOW..HIGH (decimal LSNs)."""
    if low > high:
        raise click.UsageError(f"LOW ({low}) is above HIGH ({high})")
    services = _services(Settings.from_env())
    message_id = services.streams.publish_notification(Notification(storage, partition, low, high))
    click.echo(message_id)


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
@_clear_errors
def inspect_partition(storage: str, partition: int, as_json: bool) -> None:
    """Everything known about one partition."""
    record = _services(Settings.from_env()).store.load(storage, partition)
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
@_clear_errors
def inspect_partitions(storage: str | None, as_json: bool) -> None:
    """Every known partition (paged through Redis with SSCAN)."""
    records = sorted(
        _services(Settings.from_env()).store.partitions(storage),
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
@_clear_errors
def ls(storage: str, partition: int, from_lsn: int, as_json: bool) -> None:
    """List a partition's archives in LSN order (needs ARCHIVER_SINK_URL)."""
    sink = open_sink(Settings.from_env().require_sink_url())
    rows: list[dict[str, Any]] = []
    for obj in sink.list(partition_prefix(storage, partition)):
        lsn = archive_lsn(obj.key)
        if lsn is not None and lsn >= from_lsn:
            rows.append({"lsn": lsn, "key": obj.key, "size": obj.size})
    rows.sort(key=lambda row: row["lsn"])
    if as_json:
        click.echo(json.dumps(rows))
        return
    table = Table("lsn", "key", "size")
    for row in rows:
        table.add_row(str(row["lsn"]), str(row["key"]), str(row["size"]))
    console.print(table)


@main.command()
@click.option("--storage", type=STORAGE, help="Only this storage (default: every one in the sink).")
@click.option("--partition", type=PARTITION, help="Only this partition (needs --storage).")
@click.option("--dry-run", is_flag=True, help="Show what would change; change nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of partitions.")
@_clear_errors
def reconcile(storage: str | None, partition: int | None, dry_run: bool, as_json: bool) -> None:
    """Rebuild partition state from the archive, after Redis state was lost.

    Each partition moves to just past its newest archived LSN (acknowledged as done); holes
    below it are recorded as gaps. State that is already further along is left alone.
    """
    from rich.progress import Progress

    from archiver.reconcile import partitions_in, reconcile_partition, storages_in

    if partition is not None and storage is None:
        raise click.UsageError("--partition needs --storage")
    settings = Settings.from_env()
    sink = open_sink(settings.require_sink_url())
    store = _services(settings).store
    storages = [storage] if storage else list(storages_in(sink))
    results = []
    with Progress(console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task("reconciling", total=None)
        for name in storages:
            partitions = [partition] if partition else partitions_in(sink, name)
            for number in partitions:
                results.append(reconcile_partition(store, sink, name, number, dry_run))
                progress.advance(task)
    if as_json:
        click.echo(json.dumps([r.to_json() for r in results]))
        return
    table = Table("storage", "partition", "archived", "last", "holes", "was next", "now next")
    for r in results:
        now_next = r.to_json()["next_lsn"] if r.changed else r.previous_next_lsn
        table.add_row(
            r.storage,
            str(r.partition),
            str(r.archived),
            str(r.last_archived or "-"),
            str(len(r.holes)),
            str(r.previous_next_lsn or "-"),
            str(now_next or "-"),
        )
    console.print(table)
    changed = sum(r.changed for r in results)
    verb = "would change" if dry_run else "changed"
    click.echo(f"{len(results)} partitions checked, {changed} {verb}.")


@main.command()
@click.option(
    "--partitions",
    default=4,
    show_default=True,
    type=click.IntRange(1, 1000),
    help="Partitions to write to.",
)
@click.option(
    "--entries",
    default=25,
    show_default=True,
    type=click.IntRange(1, 100_000),
    help="Entries per partition.",
)
@click.option(
    "--entry-size",
    default=16 * 1024,
    show_default=True,
    type=click.IntRange(0, 64 * 1024 * 1024),
    help="Bytes of data per entry.",
)
@click.option(
    "--workers",
    default=2,
    show_default=True,
    type=click.IntRange(1, 64),
    help="Celery worker processes.",
)
@click.option(
    "--workdir",
    default=".archiver-demo",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Where the WAL, bucket and logs go.",
)
@click.option(
    "--timeout",
    default=300.0,
    show_default=True,
    type=click.FloatRange(1),
    help="Give up after this many seconds.",
)
@_clear_errors
def demo(
    partitions: int, entries: int, entry_size: int, workers: int, workdir: str, timeout: float
) -> None:
    """Archive a generated WAL end to end: producer, scheduler, a Celery worker, a bucket.

    Uses Redis at ARCHIVER_REDIS_URL, or starts a private redis-server when none answers.
    Its state lives under the Redis prefix `archiver-demo`, which it clears first.
    """
    from archiver.demo import DemoOptions, run_demo

    ok = run_demo(DemoOptions(partitions, entries, entry_size, workers, workdir, timeout), console)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
