"""Commands that repair: pause, resume, release, skip-to and requeue one partition.

Each is one Lua script: atomic, refused (exit status 1, with the reason) when its precondition
does not hold, and recorded in the partition's audit trail with who, when, what and why, which
``archiver inspect partition`` shows.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import click

from archiver.cli.common import (
    LSN,
    PARTITION,
    STORAGE,
    clear_errors,
    current_settings,
    main,
    services,
)
from archiver.core.object_names import PartitionId
from archiver.store.admin import AdminResult


def _acting(actor: str | None) -> str:
    return actor or current_settings().actor or "unknown"


def _common(func: Callable[..., Any]) -> Callable[..., Any]:
    func = click.option(
        "--actor",
        show_default="ARCHIVER_ACTOR or user@host",
        help="Who is acting, for the audit trail.",
    )(func)
    func = click.argument("partition", type=PARTITION)(func)
    return click.argument("storage", type=STORAGE)(func)


def _reason_option(required: bool) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    if required:
        return click.option("--reason", required=True, help="Why, for the audit trail. Required.")
    return click.option("--reason", default="", help="Why, for the audit trail.")


def _finish(result: AdminResult, storage: str, partition: int, done: str) -> None:
    if not result.done:
        raise click.ClickException(f"refused for {storage}/{partition}: {result.reason}")
    click.echo(done)


@main.group()
def admin() -> None:
    """Change one partition's state, safely: atomic, checked, and audited.

    Look first with `archiver inspect partition STORAGE PARTITION`; it also shows the audit
    trail these commands write.
    """


@admin.command()
@_common
@_reason_option(required=False)
@clear_errors
def pause(storage: str, partition: int, actor: str | None, reason: str) -> None:
    """Stop claiming entries of a partition. An entry already in flight still finishes."""
    store = services(current_settings()).store
    result = store.admin.pause(PartitionId(storage, partition), _acting(actor), reason, paused=True)
    _finish(result, storage, partition, f"paused {storage}/{partition}")


@admin.command()
@_common
@_reason_option(required=False)
@clear_errors
def resume(storage: str, partition: int, actor: str | None, reason: str) -> None:
    """Undo pause. The scheduler's next sweep dispatches the partition's next entry."""
    store = services(current_settings()).store
    result = store.admin.pause(
        PartitionId(storage, partition), _acting(actor), reason, paused=False
    )
    _finish(result, storage, partition, f"resumed {storage}/{partition}")


@admin.command()
@_common
@_reason_option(required=False)
@clear_errors
def release(storage: str, partition: int, actor: str | None, reason: str) -> None:
    """Break the lease of the entry in flight, e.g. when its worker host is known dead.

    The fencing token is bumped, so the old holder can neither advance the partition nor
    acknowledge anything if it comes back. The next sweep grants the entry again.
    """
    store = services(current_settings()).store
    result = store.admin.release(PartitionId(storage, partition), _acting(actor), reason)
    _finish(
        result, storage, partition, f"released {storage}/{partition} (LSN {result.lsn} in flight)"
    )


@admin.command()
@_common
@_reason_option(required=False)
@clear_errors
def requeue(storage: str, partition: int, actor: str | None, reason: str) -> None:
    """Send the partition's next entry to the workers now.

    Clears a conflict or stop mark and the retry backoff, and fences off any holder. For a
    conflict, first move the conflicting archive object aside (never delete it): otherwise the
    entry conflicts again. For a stopped partition, first mend what its last error names.
    """
    from archiver.runtime.dispatch import dispatch_claim
    from archiver.runtime.taskqueue import CeleryDispatcher, make_celery

    settings = current_settings()
    store = services(settings).store
    result = store.admin.requeue(
        PartitionId(storage, partition), _acting(actor), reason, settings.dispatch_timeout_seconds
    )
    if result.done and result.claim is not None:
        dispatcher = CeleryDispatcher(make_celery(settings))
        if not dispatch_claim(store, dispatcher, storage, partition, result.claim):
            raise click.ClickException(
                f"requeued {storage}/{partition} but could not send its task (broker "
                "unreachable?); the scheduler's sweep sends it"
            )
    _finish(result, storage, partition, f"requeued {storage}/{partition} at LSN {result.lsn}")


@admin.command("skip-to")
@_common
@click.argument("lsn", type=LSN)
@_reason_option(required=True)
@click.option("--yes", is_flag=True, help="Confirm: the entries skipped are never archived.")
@clear_errors
def skip_to(
    storage: str, partition: int, lsn: int, actor: str | None, reason: str, yes: bool
) -> None:
    """Give up on the entries below LSN: they are never archived, and a manual gap is recorded.

    For entries that cannot be archived at all (unreadable, lost from the disk). Nothing
    skipped is acknowledged, but once LSN is, the producer may delete everything below it.
    LSN may be at most the high-water mark + 1.
    """
    store = services(current_settings()).store
    if not yes:
        record = store.records.load(PartitionId(storage, partition))
        if record is None:
            raise click.ClickException(f"no state for partition {partition} of storage {storage!r}")
        first = record.state.next_lsn
        raise click.UsageError(
            f"skip-to gives up entries {first}..{lsn - 1} of {storage}/{partition} for good; "
            "pass --yes to confirm"
        )
    result = store.admin.skip_to(PartitionId(storage, partition), lsn, _acting(actor), reason)
    _finish(
        result,
        storage,
        partition,
        f"skipped {storage}/{partition} from {result.lsn} to {lsn} (manual gap recorded)",
    )


@admin.command("mirror-resume")
@click.argument("mirror")
@_common
@_reason_option(required=False)
@clear_errors
def mirror_resume(
    mirror: str, storage: str, partition: int, actor: str | None, reason: str
) -> None:
    """Let a mirror's partition go on after a conflict, once the object in the way on the
    mirror has been moved aside (it is never replaced), and drop its retry backoff."""
    settings = current_settings()
    if mirror not in settings.mirror_urls:
        known = ", ".join(settings.mirror_urls) or "none are configured"
        raise click.UsageError(f"no mirror is named {mirror!r} ({known})")
    store = services(settings).store
    pid = PartitionId(storage, partition)
    before = store.mirrors.load(mirror, pid)
    changed = store.mirrors.resume(mirror, pid)
    logging.getLogger("archiver.admin").warning(
        "mirror resumed mirror=%s partition=%s actor=%s reason=%s conflict=%s",
        mirror,
        pid,
        _acting(actor),
        reason,
        before.conflict,
    )
    if changed:
        click.echo(f"resumed mirror {mirror} on {storage}/{partition}")
    else:
        click.echo(f"mirror {mirror} was not stopped or backing off on {storage}/{partition}")


@admin.command("clear-finding")
@click.argument("subject")
@click.option("--sink", "sink_name", default="primary", show_default=True, metavar="NAME")
@click.option("--actor", help="Who is acting (default: ARCHIVER_ACTOR, else user@host).")
@click.option("--reason", required=True, help="Why: how the problem was dealt with.")
@clear_errors
def clear_finding(subject: str, sink_name: str, actor: str | None, reason: str) -> None:
    """Drop a problem the scrubber recorded (a key, or "<storage>/<partition> LSN a-b", as
    `archiver inspect scrub` shows it), once it has been dealt with. Nothing in the archive
    changes; the next cycle records it again if it is still there."""
    from archiver.archive.scrub import ScrubState

    store = services(current_settings()).store
    if not ScrubState(store, sink_name).clear_finding(subject):
        raise click.ClickException(f"the scrubber of {sink_name} recorded nothing for {subject!r}")
    logging.getLogger("archiver.admin").warning(
        "scrub finding cleared sink=%s subject=%s actor=%s reason=%s",
        sink_name,
        subject,
        _acting(actor),
        reason,
    )
    click.echo(f"cleared {subject} from the findings of {sink_name}")
