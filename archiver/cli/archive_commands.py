"""Commands that work on the archive: reconcile, restore, verify, prune and migrate-sidecars."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from archiver.cli.common import (
    LSN,
    PARTITION,
    SINK_OPTION,
    STORAGE,
    clear_errors,
    console,
    current_settings,
    main,
    open_named_sink,
    services,
)
from archiver.core.object_names import PartitionId
from archiver.errors import ArchiverError, InputError
from archiver.sinks import open_sink

PARALLEL = click.option(
    "--parallel",
    default=8,
    show_default=True,
    type=click.IntRange(1, 256),
    help="Objects fetched at once.",
)


ACCEPT_UNVERIFIED = click.option(
    "--accept-unverified",
    is_flag=True,
    help="Take objects that have no checksum to check their bytes against (written elsewhere: "
    "an S3 multipart or SSE-KMS upload of the Go original) as they are, with a warning for "
    "each. Their tar structure is still checked. Corrupt objects are never accepted.",
)


def _warn_unverified(key: str, why: str) -> None:
    click.echo(f"WARNING {key} was taken unverified: {why}", err=True)


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
    )


@main.command()
@click.option("--storage", type=STORAGE, help="Only this storage (default: every one in the sink).")
@click.option("--partition", type=PARTITION, help="Only this partition (needs --storage).")
@click.option("--dry-run", is_flag=True, help="Show what would change; change nothing.")
@PARALLEL
@ACCEPT_UNVERIFIED
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of partitions.")
@clear_errors
def reconcile(
    storage: str | None,
    partition: int | None,
    dry_run: bool,
    parallel: int,
    accept_unverified: bool,
    as_json: bool,
) -> None:
    """Rebuild partition state from the archive, after Redis state was lost, or to adopt an
    archive the Go original wrote (nothing in it is uploaded again).

    Each partition moves to just past its newest archived LSN (acknowledged as done); holes
    below it are recorded as gaps. Every object it moves past is downloaded and verified first
    (its recorded SHA-256, or else MD5; a sound tar of its entry): it stops before the first
    that is not, or that has no checksum (unless --accept-unverified), and leaves conflicted,
    stopped and paused partitions alone. Beyond the newest LSN ever
    acknowledged, it also compares objects with the entries still on the producer's disk and
    stops before an entry that is there but not archived: run it where ARCHIVER_STORAGES names
    the storages, as on a worker host, or it stops at that point. State that is already
    further along is left alone. Exits with status 1 when anything was refused.
    """
    from archiver.archive.reconcile import partitions_in, reconcile_partition, storages_in

    if partition is not None and storage is None:
        raise click.UsageError("--partition needs --storage")
    settings = current_settings()
    sink = open_sink(settings.require_sink_url(), settings.keyring)
    connected = services(settings)
    store, streams = connected.store, connected.streams
    storages = [storage] if storage else list(storages_in(sink))
    results = []
    with _progress() as progress:
        partitions_task = progress.add_task("partitions", total=None)
        objects_task = progress.add_task("objects verified", total=None)
        for name in storages:
            partitions = [partition] if partition else partitions_in(sink, name)
            for number in partitions:
                results.append(
                    reconcile_partition(
                        store,
                        sink,
                        name,
                        number,
                        dry_run,
                        parallel,
                        on_checked=lambda: progress.advance(objects_task),
                        acknowledged=streams.newest_published(name, number),
                        storage_root=settings.storages.get(name),
                        accept_unverified=accept_unverified,
                    )
                )
                progress.advance(partitions_task)
    for r in results:
        for key, why in r.unverified:
            _warn_unverified(key, why)
    refused = [r for r in results if r.problem is not None]
    if as_json:
        click.echo(json.dumps([r.to_json() for r in results]))
    else:
        table = Table(
            "storage", "partition", "archived", "last", "verified", "holes", "was next", "now next"
        )
        for r in results:
            table.add_row(
                r.storage,
                str(r.partition),
                str(r.archived),
                str(r.last_archived or "-"),
                str(r.verified),
                str(len(r.holes)),
                str(r.previous_next_lsn or "-"),
                str(r.next_lsn or "-"),
            )
        console.print(table)
        for r in refused:
            click.echo(f"REFUSED {r.storage}/{r.partition}: {r.problem}")
        changed = sum(r.changed for r in results)
        verb = "would change" if dry_run else "changed"
        click.echo(f"{len(results)} partitions checked, {changed} {verb}, {len(refused)} refused.")
    if refused:
        raise SystemExit(1)


@main.command()
@click.argument("storage", type=STORAGE)
@click.argument("partition", type=PARTITION)
@click.option(
    "--dest",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory to restore into; each entry becomes DEST/<lsn>/.",
)
@click.option("--from", "from_lsn", type=LSN, help="First LSN (default: the oldest archived).")
@click.option("--to", "to_lsn", type=LSN, help="Last LSN (default: the newest archived).")
@PARALLEL
@ACCEPT_UNVERIFIED
@click.option("--json", "as_json", is_flag=True, help="End with a JSON summary on stdout.")
@SINK_OPTION
@clear_errors
def restore(
    storage: str,
    partition: int,
    dest: Path,
    from_lsn: int | None,
    to_lsn: int | None,
    parallel: int,
    accept_unverified: bool,
    as_json: bool,
    sink_name: str | None,
) -> None:
    """Restore a partition's entries, in LSN order, each checked against its recorded SHA-256
    (or MD5, for objects the Go original wrote); encrypted ones are decrypted and
    authenticated as they stream.

    Stops at the first discontinuity, corrupt object, or object with no checksum (unless
    --accept-unverified); entries before it stay restored. Run it again to resume: entries
    already restored into DEST are not fetched again.
    """
    from archiver.archive.restore import restore_partition

    if from_lsn is not None and to_lsn is not None and from_lsn > to_lsn:
        raise click.UsageError(f"--from ({from_lsn}) is above --to ({to_lsn})")
    sink = open_named_sink(current_settings(), sink_name)
    with _progress() as progress:
        task = progress.add_task("restoring", total=None)
        try:
            summary = restore_partition(
                sink,
                storage,
                partition,
                dest.resolve(),
                from_lsn,
                to_lsn,
                parallel,
                on_planned=lambda total: progress.update(task, total=total),
                on_entry=lambda _archive: progress.advance(task),
                accept_unverified=accept_unverified,
                on_unverified=_warn_unverified,
            )
        except ArchiverError:
            progress.stop()  # the error's line comes after the bar, not inside it
            raise
    if as_json:
        click.echo(json.dumps(summary.to_json()))
    else:
        unverified = f", {summary.unverified} unverified" if summary.unverified else ""
        click.echo(
            f"restored {summary.entries} entries ({summary.bytes:,} bytes) into {dest}, "
            f"LSN {summary.first_lsn} to {summary.last_lsn}, {summary.skipped} already there"
            f"{unverified}, in {summary.seconds:.1f} s"
        )


@main.command()
@click.argument("storage", type=STORAGE, required=False)
@click.argument("partition", type=PARTITION, required=False)
@PARALLEL
@click.option(
    "--ignore-gaps",
    is_flag=True,
    help="Do not count gaps the partition state records as problems (gaps it does not "
    "record are lost objects, and still count).",
)
@click.option(
    "--state/--no-state",
    default=None,
    help="Read partition state from Redis to tell recorded gaps from lost objects. "
    "Default: when ARCHIVER_REDIS_URL is set.",
)
@click.option(
    "--accept-unverified",
    is_flag=True,
    help="Do not count objects with no checksum to check them by as problems (they are "
    "still listed, and their tar structure checked).",
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of partition reports.")
@SINK_OPTION
@clear_errors
def verify(
    storage: str | None,
    partition: int | None,
    parallel: int,
    ignore_gaps: bool,
    state: bool | None,
    accept_unverified: bool,
    as_json: bool,
    sink_name: str | None,
) -> None:
    """Check the archive: ranges, gaps, checksums, tar structure, strays, partial uploads.

    Every object is downloaded and checked against its recorded SHA-256, or else the MD5 that
    objects of the Go original carry (a fileblob .attrs file, a single-part S3 ETag). Objects
    with neither are listed as UNVERIFIED. Encrypted objects are decrypted and authenticated
    in memory (the plaintext never reaches the disk); one sealed with a key not given is
    listed as UNOPENED, naming the key. Exits with status 1 when anything is wrong.
    """
    import os

    from archiver.archive.verify import partitions_to_verify, verify_partition

    settings = current_settings()
    sink = open_named_sink(settings, sink_name)
    store = None
    if state or (state is None and os.environ.get("ARCHIVER_REDIS_URL")):
        store = services(settings).store
    reports = []
    stray_directories = []
    with _progress() as progress:
        task = progress.add_task("verifying", total=None)
        for name, number, stray in partitions_to_verify(sink, storage, partition):
            if number is None:
                stray_directories.append(stray)
                continue
            report = verify_partition(sink, name, number, parallel, lambda: progress.advance(task))
            if store is not None:
                report.check_gaps_against(store.records.load(PartitionId(name, number)))
            reports.append(report)
    problems = sum(r.problems(ignore_gaps, accept_unverified) for r in reports) + len(
        stray_directories
    )
    if as_json:
        click.echo(
            json.dumps(
                {
                    "partitions": [r.to_json() for r in reports],
                    "stray_directories": stray_directories,
                    "problems": problems,
                }
            )
        )
    else:
        table = Table(
            "storage", "partition", "archives", "ranges", "gaps", "bad", "unverified", "strays"
        )
        for r in reports:
            table.add_row(
                r.storage,
                str(r.partition),
                str(r.archives),
                ", ".join(f"{a}-{b}" for a, b in r.ranges) or "-",
                ", ".join(f"{g.expected}-{g.actual - 1}" for g in r.gaps) or "-",
                str(len(r.bad) + len(r.unopened)),
                str(len(r.unverified)),
                str(len(r.strays) + len(r.leftovers)),
            )
        console.print(table)
        for r in reports:
            for key, problem in r.bad:
                click.echo(f"BAD {key}: {problem}")
            for key, why in r.unverified:
                click.echo(f"UNVERIFIED {key}: {why}")
            for key, why in r.unopened:
                click.echo(f"UNOPENED {key}: {why}")
            for gap in r.unrecorded:
                click.echo(
                    f"LOST {r.storage}/{r.partition} LSN {gap.expected} to {gap.actual - 1}: "
                    "not in the archive, and no gap is recorded for them"
                )
            for key in [*r.strays, *r.leftovers]:
                click.echo(f"STRAY {key}")
            for lsn in r.duplicates:
                click.echo(f"DUPLICATE {r.storage}/{r.partition} LSN {lsn} under two names")
        for directory in stray_directories:
            click.echo(f"STRAY {directory}")
        if ignore_gaps and store is None and any(r.gaps for r in reports):
            click.echo("gaps not checked against partition state: set ARCHIVER_REDIS_URL")
        click.echo(f"{len(reports)} partitions verified, {problems} problems")
    if problems:
        raise SystemExit(1)


@main.command()
@click.argument("storage", type=STORAGE)
@click.argument("partition", type=PARTITION)
@click.option("--before", required=True, type=LSN, help="Delete archives with an LSN below this.")
@click.option("--yes", is_flag=True, help="Delete. Without it, only show what would go.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary.")
@clear_errors
def prune(storage: str, partition: int, before: int, yes: bool, as_json: bool) -> None:
    """Delete a partition's archives below an LSN (a dry run unless --yes).

    The newest archive of a partition is never deleted. Deletes go in batches of 1000 keys.
    With mirrors (ARCHIVER_MIRROR_URLS), nothing a mirror does not hold yet is deleted: a
    mirror copies from the primary, and would never get it.
    """
    from archiver.archive.prune import plan_prune
    from archiver.archive.prune import prune as delete_archives

    settings = current_settings()
    sink = open_sink(settings.require_sink_url(), settings.keyring)
    doomed = plan_prune(sink, storage, partition, before)
    deleted = 0
    if yes and doomed and settings.mirror_urls:
        (held,) = services(settings).store.mirrors.held_through(
            list(settings.mirror_urls), [PartitionId(storage, partition)]
        )
        if held is None or doomed[-1].lsn > held:
            raise click.ClickException(
                f"the mirrors hold {storage}/{partition} only through LSN {held or 'none'}: "
                f"prune with --before {held + 1 if held else 1} at most, or once they catch "
                "up (archiver inspect mirrors)"
            )
    if yes and doomed:
        with _progress() as progress:
            task = progress.add_task("deleting", total=len(doomed))
            deleted = delete_archives(sink, doomed, lambda n: progress.advance(task, n))
    summary = {
        "storage": storage,
        "partition": partition,
        "before": before,
        "matched": len(doomed),
        "deleted": deleted,
        "dry_run": not yes,
        "first_lsn": doomed[0].lsn if doomed else None,
        "last_lsn": doomed[-1].lsn if doomed else None,
    }
    if as_json:
        click.echo(json.dumps(summary))
    elif not doomed:
        click.echo("nothing to prune")
    elif yes:
        click.echo(f"deleted {deleted} archives, LSN {doomed[0].lsn} to {doomed[-1].lsn}")
    else:
        click.echo(
            f"would delete {len(doomed)} archives, LSN {doomed[0].lsn} to {doomed[-1].lsn}; "
            "run again with --yes to delete them"
        )


@main.command("migrate-sidecars")
@click.option("--storage", type=STORAGE, help="Only this storage (default: every one).")
@click.option("--apply", is_flag=True, help="Migrate. Without it, only show what would happen.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary.")
@clear_errors
def migrate_sidecars(storage: str | None, apply: bool, as_json: bool) -> None:
    """Turn the <name>.sha256 checksum files of earlier releases into <name>.attrs files, the
    format of go-cloud's fileblob (a dry run unless --apply).

    Filesystem buckets only. Each object is read whole first: a checksum file that does not
    match its object is left as it is and reported (exit status 1). A checksum file whose
    object is gone is removed. Afterwards the Go original can list the bucket. Safe to run
    while the fleet archives, and again after an interruption.
    """
    from archiver.archive.migrate import migrate_sidecars as migrate
    from archiver.sinks.filesystem import FilesystemSink, LegacyMigration

    sink = open_sink(current_settings().require_sink_url(), current_settings().keyring)
    if not isinstance(sink, FilesystemSink):
        raise click.UsageError(
            "migrate-sidecars works on filesystem buckets: S3 objects keep their checksum in "
            "their metadata, and have no checksum files"
        )
    with _progress() as progress:
        task = progress.add_task("checksum files", total=None)
        results = migrate(sink, storage, apply, lambda: progress.advance(task))
    counts = {str(o): sum(r.outcome is o for r in results) for o in LegacyMigration}
    left = [r for r in results if r.outcome is LegacyMigration.LEFT]
    if as_json:
        click.echo(
            json.dumps({"dry_run": not apply, **counts, "files": [r.to_json() for r in results]})
        )
    else:
        removing = "REMOVED" if apply else "WOULD REMOVE"
        for r in results:
            if r.outcome is not LegacyMigration.MIGRATED:
                verb = removing if r.outcome is LegacyMigration.REMOVED else "LEFT"
                click.echo(f"{verb} {r.key}.sha256: {r.detail}")
        migrated, removed = counts["migrated"], counts["removed"]
        if apply:
            click.echo(f"{migrated} migrated, {removed} removed, {len(left)} left as they were")
        else:
            click.echo(
                f"would migrate {migrated} and remove {removed}; {len(left)} would be left as "
                "they are; run again with --apply to do it"
            )
    if left:
        raise SystemExit(1)


@main.command()
@click.option(
    "--id",
    "key_id",
    help="The new key's id (default: key-<date>-<random>, so that no two keys share one).",
)
@clear_errors
def keygen(key_id: str | None) -> None:
    """Print a new random AES-256 key as `id:base64-key`, for ARCHIVER_ENCRYPTION_KEYS.

    Keep it as a secret: whoever holds it can read every object sealed with it, and without
    it they cannot be read at all. To rotate, add the new key beside the old ones, make it
    current with ARCHIVER_ENCRYPTION_KEY_ID, then run `archiver rewrap --apply`.
    """
    import datetime
    import secrets

    from archiver.core.encryption import check_key_id, new_key_text

    current_settings()  # as every command: bad settings are refused, not ignored
    if key_id is None:
        key_id = f"key-{datetime.date.today():%Y%m%d}-{secrets.token_hex(3)}"
    try:
        check_key_id(key_id)
    except InputError as exc:
        raise click.UsageError(str(exc)) from exc
    click.echo(f"{key_id}:{new_key_text()}")


@main.command()
@click.option("--storage", type=STORAGE, help="Only this storage (default: every one).")
@click.option("--partition", type=PARTITION, help="Only this partition (needs --storage).")
@click.option("--apply", is_flag=True, help="Re-wrap. Without it, only show what would change.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary.")
@click.option(
    "--sink",
    "sink_name",
    metavar="NAME",
    help="Re-wrap on this mirror instead of the primary: each sink keeps its own wrapping, so "
    "run it once per sink before an old key is retired.",
)
@clear_errors
def rewrap(
    storage: str | None, partition: int | None, apply: bool, as_json: bool, sink_name: str | None
) -> None:
    """Re-wrap encrypted objects' data keys under the current key (a dry run unless --apply).

    Only each object's metadata changes, never its bytes: on a filesystem bucket its .attrs
    file is replaced, on S3 the store copies the object onto itself (up to 5 GiB each). Every
    re-wrapped key is read back and opened. Objects whose key is not given are left and
    reported (exit status 1). Safe to run while the fleet archives, and again after an
    interruption; retire an old key only once a run leaves nothing under it.
    """
    from archiver.archive.rewrap import RewrapOutcome, rewrap_archives

    if partition is not None and storage is None:
        raise click.UsageError("--partition needs --storage")
    settings = current_settings()
    sink = open_named_sink(settings, sink_name)
    with _progress() as progress:
        task = progress.add_task("encrypted objects", total=None)
        results = list(
            rewrap_archives(sink, storage, partition, apply, lambda _r: progress.advance(task))
        )
    counts = {str(o): sum(r.outcome is o for r in results) for o in RewrapOutcome}
    left = [r for r in results if r.outcome is RewrapOutcome.LEFT]
    if as_json:
        click.echo(
            json.dumps(
                {
                    "dry_run": not apply,
                    "current_key": settings.keyring.current,
                    **counts,
                    "objects": [
                        r.to_json() for r in results if r.outcome is not RewrapOutcome.CURRENT
                    ],
                }
            )
        )
    else:
        for r in left:
            click.echo(f"LEFT {r.key}: {r.detail}")
        done = counts["rewrapped"]
        if apply:
            click.echo(f"{done} re-wrapped, {counts['current']} already current, {len(left)} left")
        else:
            click.echo(
                f"would re-wrap {done}; {counts['current']} already current, {len(left)} would "
                "be left; run again with --apply to do it"
            )
    if left:
        raise SystemExit(1)


@main.command()
@SINK_OPTION
@click.option(
    "--bytes-per-second",
    type=click.FloatRange(0),
    help="Read at most this fast (default: ARCHIVER_SCRUB_BYTES_PER_SECOND; 0: no limit).",
)
@click.option(
    "--requests-per-second",
    type=click.FloatRange(0),
    help="Send the store at most this many requests a second (default: "
    "ARCHIVER_SCRUB_REQUESTS_PER_SECOND; 0: no limit).",
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary.")
@clear_errors
def scrub(
    sink_name: str | None,
    bytes_per_second: float | None,
    requests_per_second: float | None,
    as_json: bool,
) -> None:
    """Re-read the archive from where the scrubber stopped to its end, at a bounded rate.

    Each object is checked like `verify` does (checksum, decryption, tar structure), and each
    partition for holes below the LSN the sink should hold through. Problems are recorded
    (`archiver inspect scrub`), logged and counted; nothing is deleted or rewritten. The place
    is kept in Redis: the leading scheduler (ARCHIVER_SCRUB_BYTES_PER_SECOND) and this command
    go on from it. Exits with status 1 when this run found a problem.
    """
    import signal
    import threading

    from archiver.runtime.background import scrubber

    settings = current_settings()
    state = services(settings)
    sink = open_named_sink(settings, sink_name)
    scrub_sink = scrubber(
        settings, state.store, sink, sink_name or "primary", bytes_per_second, requests_per_second
    )
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with _progress() as progress:
        task = progress.add_task("scrubbing", total=None)
        summary = scrub_sink.run_cycle(stop, lambda _a: progress.advance(task))
    if as_json:
        click.echo(json.dumps(summary.to_json()))
    else:
        for finding in summary.findings:
            click.echo(f"{finding.kind.upper()} {finding.subject}: {finding.detail}")
        end = "to the end of the archive" if summary.completed else "(interrupted)"
        click.echo(
            f"scrubbed {summary.objects} objects ({summary.bytes:,} bytes) {end}; "
            f"{len(summary.findings)} problems"
        )
    if summary.findings:
        raise SystemExit(1)
