"""Commands that run the system: the scheduler, notify and the demo."""

from __future__ import annotations

import logging
import signal
import sys
import threading

import click

from archiver.cli.common import LSN, PARTITION, STORAGE, clear_errors, console, main, services
from archiver.config import Settings, redact_url
from archiver.notification import Notification


@main.command()
@clear_errors
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
    state = services(settings)
    dispatcher = CeleryDispatcher(make_celery(settings))
    if settings.metrics_port:
        from archiver.metrics import serve

        try:
            serve(settings.metrics_port)
        except OSError as exc:
            # Losing metrics is no reason to stop archiving; the log and the scrape show it.
            logging.getLogger("archiver.scheduler").error(
                "cannot serve metrics on port %d: %s", settings.metrics_port, exc
            )
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
    Scheduler(settings, state.store, state.streams, dispatcher.dispatch, leader).run(stop)


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
    streams = services(Settings.from_env()).streams
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
@clear_errors
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
