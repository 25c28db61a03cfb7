"""Commands that run the system: the scheduler, notify and the demo."""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import threading
from typing import TYPE_CHECKING

import click

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
from archiver.config import Settings, redact_url
from archiver.core.notification import Notification

if TYPE_CHECKING:
    from archiver.runtime.scheduler import Scheduler
    from archiver.store.state_store import RedisStateStore


ENTRY_SIZE = click.option(
    "--entry-size",
    default=16 * 1024,
    show_default=True,
    type=click.IntRange(0, 64 * 1024 * 1024),
    help="Bytes of data per entry.",
)


@main.command()
@clear_errors
def scheduler() -> None:
    """Run the scheduler: apply notifications and dispatch archive tasks until SIGTERM.

    Several may run: one leads (ARCHIVER_LEADER_TTL_SECONDS, default 10) and the others stand
    by to take over.
    """
    from archiver.observability.logs import configure_logging
    from archiver.runtime.background import start_leader_duties
    from archiver.runtime.scheduler import Scheduler
    from archiver.runtime.taskqueue import CeleryDispatcher, make_celery
    from archiver.store.leadership import LeaderLease, scheduler_identity

    settings = current_settings()
    configure_logging(settings.log_level, settings.log_format)
    state = services(settings)
    dispatcher = CeleryDispatcher(make_celery(settings))
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    click.echo(
        f"scheduler: redis {redact_url(settings.redis_url)} "
        f"broker {redact_url(settings.broker_url)} prefix {settings.redis_prefix} "
        f"metrics :{settings.metrics_port or 'off'}",
        err=True,
    )
    leader = LeaderLease(
        state.store.client,
        state.store.keys.leader,
        scheduler_identity(),
        settings.leader_ttl_seconds,
    )
    scheduler = Scheduler(settings, state.store, state.streams, dispatcher, leader)
    if settings.metrics_port:
        _serve_scheduler_metrics(settings, state.store, scheduler, stop)
    start_leader_duties(settings, state.store, lambda: scheduler.leading, stop)
    scheduler.run(stop)


def _serve_scheduler_metrics(
    settings: Settings, store: RedisStateStore, scheduler: Scheduler, stop: threading.Event
) -> None:
    from prometheus_client import REGISTRY

    from archiver.observability.fleet_gauges import FleetStateCollector, StateMetricsRefresher
    from archiver.observability.metrics import serve

    def leading() -> bool:
        return scheduler.leading

    collector = FleetStateCollector(leading)
    REGISTRY.register(collector)
    try:
        serve(settings.metrics_port)
    except OSError as exc:
        # Losing metrics is no reason to stop archiving; the log and the scrape show it.
        logging.getLogger("archiver.scheduler").error(
            "cannot serve metrics on port %d: %s", settings.metrics_port, exc
        )
        return
    StateMetricsRefresher(
        store,
        collector,
        leading,
        settings.state_metrics_interval_seconds,
        stop,
        list(settings.mirror_urls),
    ).start()


@main.command()
@click.option("--once", is_flag=True, help="One pass over every partition, then exit.")
@click.option("--json", "as_json", is_flag=True, help="With --once: print a JSON summary.")
@clear_errors
def mirror(once: bool, as_json: bool) -> None:
    """Copy archive objects to the mirrors of ARCHIVER_MIRROR_URLS until SIGTERM.

    The leading scheduler does this too; run more of these for throughput (a lease per mirror
    and partition keeps them apart). Each partition is copied up to its acknowledged LSN, in
    order, byte for byte from the primary; a mirror that fails is tried again with backoff,
    one with a conflicting object stops for that partition (`archiver inspect mirrors`).
    """
    import json as json_module

    from archiver.observability.logs import configure_logging
    from archiver.runtime.background import mirror_copier
    from archiver.sinks import open_mirrors, open_sink

    settings = current_settings()
    if not settings.mirror_urls:
        raise click.UsageError("no mirrors are configured (ARCHIVER_MIRROR_URLS)")
    configure_logging(settings.log_level, settings.log_format)
    state = services(settings)
    copier = mirror_copier(
        settings,
        state.store,
        open_sink(settings.require_sink_url(), settings.keyring),
        open_mirrors(settings.mirror_urls, settings.keyring),
    )
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    while not stop.is_set():
        done = copier.run_pass(stop)
        if once:
            if as_json:
                click.echo(json_module.dumps(done.to_json()))
            else:
                for name in settings.mirror_urls:
                    click.echo(
                        f"{name}: {done.copied[name]} copied, {done.failed[name]} partitions "
                        f"failing, {done.conflicts[name]} conflicted"
                    )
            if any(done.failed.values()) or any(done.conflicts.values()):
                raise SystemExit(1)
            return
        stop.wait(settings.sweep_interval_seconds)


# Uploads one threads-pool process runs at once: the S3 client's connection pool.
MAX_THREADS = 128


@main.command()
@click.option(
    "-Q",
    "--queues",
    help="Comma-separated queues to consume. Default: archiver.<storage> for every storage in "
    "ARCHIVER_STORAGES.",
)
@click.option(
    "-c",
    "--concurrency",
    type=click.IntRange(1, 512),
    default=os.cpu_count() or 1,
    show_default="the number of CPUs",
    help="Entries archived at once: pool processes, or threads with --pool threads.",
)
@click.option(
    "-P",
    "--pool",
    type=click.Choice(["prefork", "threads"]),
    default="prefork",
    show_default=True,
    help="prefork: a process per entry in flight (about 80 MiB each). threads: a thread per "
    "entry in one process (a few MiB each), for object stores far away, where uploads "
    "mostly wait; they share one CPU's worth of Python.",
)
@click.option(
    "-n", "--node-name", help="Celery node name, unique per host. Default: archiver@<hostname>."
)
@click.option(
    "-E",
    "--events",
    is_flag=True,
    help="Send Celery task events and worker heartbeats, for a monitor such as Flower "
    "(three events per task through the broker).",
)
@clear_errors
def worker(
    queues: str | None, concurrency: int, pool: str, node_name: str | None, events: bool
) -> None:
    """Run a worker host: Celery processes that archive the entries of this host's storages.

    Every storage a queue names must be in ARCHIVER_STORAGES, since only this host can read
    its files. Several hosts may consume one queue when storages sit on shared disks.
    The host serves /metrics for all its processes on ARCHIVER_WORKER_METRICS_PORT (default
    9809; 0 turns it off), from ARCHIVER_METRICS_DIR/<node name>, emptied at start.
    Stop it with SIGTERM: running attempts finish first.

    Before consuming anything the host checks that it can do the work: the sink URL parses
    and the bucket takes a create-once write (a store that ignores If-None-Match is refused),
    and each storage root is a directory. A storage whose root is not is left unconsumed;
    with none left, or with an unusable sink, the worker exits with the reason.
    """
    from archiver.observability.metrics import prepare_multiprocess_dir
    from archiver.runtime.taskqueue import QUEUE_PREFIX, celery_worker_argv, queue_name

    settings = current_settings()
    names = [q.strip() for q in (queues or "").split(",") if q.strip()]
    if not names:
        names = [queue_name(storage) for storage in settings.storages]
    if not names:
        raise click.UsageError("no queues to consume: set ARCHIVER_STORAGES or pass --queues")
    for name in names:
        storage = name.removeprefix(QUEUE_PREFIX)
        if not name.startswith(QUEUE_PREFIX) or storage not in settings.storages:
            raise click.UsageError(
                f"queue {name!r} is not archiver.<storage> for a storage in ARCHIVER_STORAGES "
                f"({', '.join(settings.storages) or 'none set'})"
            )
    if pool == "threads" and concurrency > MAX_THREADS:
        raise click.UsageError(
            f"--concurrency {concurrency}: a threads pool runs at most {MAX_THREADS} (one S3 "
            "connection pool serves them all); run more hosts, or prefork"
        )
    names = _usable_queues(settings, names)
    node = node_name or f"archiver@{socket.gethostname()}"
    env = dict(os.environ)
    if settings.worker_metrics_port:
        safe_node = "".join(c if c.isalnum() or c in "-_.@" else "_" for c in node)
        directory = prepare_multiprocess_dir(settings.metrics_dir / safe_node)
        env["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
    else:
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    argv = celery_worker_argv(names, concurrency, node, pool, events)
    # Replace this process, so that signals sent to it reach Celery's main process.
    os.execve(argv[0], argv, env)  # noqa: S606 - our own interpreter, argument list


def _usable_queues(settings: Settings, names: list[str]) -> list[str]:
    """The queues this host can serve; exits when the sink or every storage is unusable."""
    from archiver.runtime.host_check import check_sink, check_storage_roots
    from archiver.runtime.taskqueue import QUEUE_PREFIX, queue_name

    check_sink(settings)  # raises HostUnusable, one line
    check = check_storage_roots(settings, [name.removeprefix(QUEUE_PREFIX) for name in names])
    for storage, why in check.refused:
        click.echo(
            f"error: storage {storage!r}: {why}; not consuming {queue_name(storage)}", err=True
        )
    if not check.usable:
        raise click.ClickException("no storage of this host can be read; nothing to consume")
    return [queue_name(storage) for storage in check.usable]


@main.command()
@click.option(
    "--storage", type=STORAGE, required=True, help="Storage to write (in ARCHIVER_STORAGES)."
)
@click.option(
    "--partitions", default=4, show_default=True, type=click.IntRange(1, 10_000), help="Partitions."
)
@click.option(
    "--interval",
    default=1.0,
    show_default=True,
    type=click.FloatRange(0),
    help="Seconds between rounds; each round appends one entry to every partition.",
)
@ENTRY_SIZE
@click.option(
    "--rounds",
    default=0,
    show_default=True,
    type=click.IntRange(0),
    help="Stop after this many rounds (0: run until SIGTERM).",
)
@clear_errors
def produce(storage: str, partitions: int, interval: float, entry_size: int, rounds: int) -> None:
    """Run the reference log manager as a producer: append entries to STORAGE's WAL, announce
    them, and delete them once acknowledged.

    It stands in for a storage node in the compose deployment and in load tests. A restarted
    producer goes on from the newest LSN it wrote; it never reuses one.
    """
    from archiver.dev.demo import entry_files
    from archiver.dev.producer import ReferenceLogManager

    settings = current_settings()
    root = settings.storage_root(storage)
    manager = ReferenceLogManager(storage, root, services(settings).streams)
    for partition in range(1, partitions + 1):
        manager.resume(partition)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    click.echo(f"producing to {storage} ({root}): {partitions} partitions", err=True)
    done = 0
    while not stop.is_set() and (rounds == 0 or done < rounds):
        for partition in range(1, partitions + 1):
            lsn = manager.high.get(partition, 0) + 1
            manager.append(partition, entry_files(partition, lsn, entry_size))
        manager.process_acks()
        done += 1
        if done % 60 == 0:
            click.echo(f"round {done}: newest LSN {max(manager.high.values())}", err=True)
        stop.wait(interval)
    manager.process_acks()


@main.command()
@click.argument("storage", type=STORAGE)
@click.argument("partition", type=PARTITION)
@click.argument("low", type=LSN)
@click.argument("high", type=LSN)
@clear_errors
def notify(storage: str, partition: int, low: int, high: int) -> None:
    """Announce that PARTITION of STORAGE holds entries LOW..HIGH (decimal LSNs)."""
    if low > high:
        raise click.UsageError(f"LOW ({low}) is above HIGH ({high})")
    streams = services(current_settings()).streams
    message_id = streams.publish_notification(Notification(storage, partition, low, high))
    click.echo(message_id)


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
@ENTRY_SIZE
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
@clear_errors
def demo(
    partitions: int, entries: int, entry_size: int, workers: int, workdir: str, timeout: float
) -> None:
    """Archive a generated WAL end to end: producer, scheduler, a Celery worker, a bucket.

    Uses Redis at ARCHIVER_REDIS_URL, or starts a private redis-server when none answers.
    Its state lives under the Redis prefix `archiver-demo`, which it clears first.
    """
    from archiver.dev.demo import DemoOptions, run_demo

    ok = run_demo(DemoOptions(partitions, entries, entry_size, workers, workdir, timeout), console)
    sys.exit(0 if ok else 1)
