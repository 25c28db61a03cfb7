"""Prometheus metrics. Names start with ``archiver_``; no label is per partition, since a fleet
has hundreds of thousands of them (per-partition detail belongs to ``archiver inspect``).

The counters and the histogram here are updated where things happen: the scheduler's loop and
the workers' tasks. Worker hosts run several processes, so they count in prometheus-client's
multiprocess mode (``workers/exporter.py``). The gauges that describe the whole fleet's state are
computed by the leading scheduler from Redis (``archiver/observability/fleet_gauges.py``).
"""

from __future__ import annotations

from pathlib import Path

from prometheus_client import Counter, Gauge, Histogram, start_http_server

# Updated by the scheduler.
NOTIFICATIONS = Counter(
    "archiver_notifications",
    "Watermark notifications handled by the scheduler, by result",
    ["result"],  # applied, stale, gap, rejected
)
# Updated by workers (commits) and the scheduler (repeated acknowledgements).
ACKNOWLEDGEMENTS = Counter(
    "archiver_acknowledgements", "Acknowledgements published, repeated ones included"
)
ACKNOWLEDGEMENTS_HELD = Counter(
    "archiver_acknowledgements_held",
    "Acknowledgements held back: the commit was not on ARCHIVER_REDIS_MIN_REPLICAS replicas "
    "in time",
)

# Updated by workers.
ENTRIES_ARCHIVED = Counter(
    "archiver_entries_archived",
    "Archiving attempts by outcome: success (uploaded), skipped (already archived with the "
    "same bytes) or fail (to be retried, or a conflict)",
    ["storage", "status"],
)
ARCHIVE_DURATION = Histogram(
    "archiver_archive_duration_seconds",
    "Time from the start of an attempt to its commit, for archived and skipped entries",
    ["storage"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900),
)
ARCHIVED_BYTES = Counter(
    "archiver_archived_bytes", "Bytes of archive objects uploaded", ["storage"]
)
RETRIES = Counter(
    "archiver_retries", "Failed attempts that were scheduled to be retried", ["storage"]
)
FENCED = Counter(
    "archiver_fenced_attempts",
    "Attempts that found their grant taken over (expired, released or skipped past) and did "
    "nothing more",
    ["storage"],
)
TASKS_RUNNING = Gauge(
    "archiver_tasks_running",
    "Archive tasks running right now",
    multiprocess_mode="livesum",
)

# Updated where mirrors are copied to (the leading scheduler, `archiver mirror`, and workers
# under ARCHIVER_ACK_POLICY=all).
MIRROR_COPIED = Counter("archiver_mirror_copied", "Archive objects copied to a mirror", ["mirror"])
MIRROR_FAILURES = Counter(
    "archiver_mirror_copy_failures",
    "Failed catch-ups of a mirror's partition (retried with backoff)",
    ["mirror"],
)

# Updated by the scrubber (the leading scheduler, `archiver scrub`).
SCRUBBED_OBJECTS = Counter(
    "archiver_scrubbed_objects", "Archive objects re-read and checked by the scrubber", ["sink"]
)
SCRUBBED_BYTES = Counter("archiver_scrubbed_bytes", "Bytes re-read by the scrubber", ["sink"])
SCRUB_FINDINGS = Counter(
    "archiver_scrub_findings",
    "Problems the scrubber found, by kind: corrupt (fails its checksum, tar or decryption), "
    "missing (a hole below the acknowledged LSN), unopened (sealed with a key not given), "
    "unreadable (the store failed to read it pass after pass)",
    ["sink", "kind"],
)
SCRUB_OLDEST_UNSCRUBBED_AGE = Gauge(
    "archiver_scrub_oldest_unscrubbed_age_seconds",
    "Seconds since the least recently scrubbed object was last checked (or since the "
    "scrubber started on objects it has not reached yet)",
    ["sink"],
    multiprocess_mode="max",
)
SCRUB_CYCLES = Counter(
    "archiver_scrub_cycles", "Complete walks of the archive by the scrubber", ["sink"]
)

# Updated by every process that talks to Redis (archiver/store/client.py).
REDIS_ROUND_TRIPS = Counter(
    "archiver_redis_round_trips",
    "Requests sent to Redis and answered: a pipeline or a script counts once",
)

# Computed by the leading scheduler; see archiver/observability/fleet_gauges.py.
SCHEDULER_LEADER = "archiver_scheduler_leader"
BACKLOG = "archiver_backlog_entries"
OLDEST_UNARCHIVED_AGE = "archiver_oldest_unarchived_entry_age_seconds"
PARTITIONS = "archiver_partitions"
GAPS = "archiver_gaps"
FLEET_BACKOFF = "archiver_fleet_backoff_seconds"
STATE_REFRESHED = "archiver_state_refresh_timestamp_seconds"
MIRROR_LAG = "archiver_mirror_lag_entries"
MIRROR_PARTITIONS = "archiver_mirror_partitions"

# Every family as Prometheus shows it (counters with their "_total").
EXPORTED_METRICS = frozenset(
    {
        "archiver_notifications_total",
        "archiver_acknowledgements_total",
        "archiver_acknowledgements_held_total",
        "archiver_entries_archived_total",
        "archiver_archive_duration_seconds",
        "archiver_archived_bytes_total",
        "archiver_retries_total",
        "archiver_fenced_attempts_total",
        "archiver_tasks_running",
        "archiver_redis_round_trips_total",
        "archiver_mirror_copied_total",
        "archiver_mirror_copy_failures_total",
        "archiver_scrubbed_objects_total",
        "archiver_scrubbed_bytes_total",
        "archiver_scrub_findings_total",
        "archiver_scrub_oldest_unscrubbed_age_seconds",
        "archiver_scrub_cycles_total",
        SCHEDULER_LEADER,
        BACKLOG,
        OLDEST_UNARCHIVED_AGE,
        PARTITIONS,
        GAPS + "_total",
        FLEET_BACKOFF,
        STATE_REFRESHED,
        MIRROR_LAG,
        MIRROR_PARTITIONS,
    }
)

for _result in ("applied", "stale", "gap", "rejected"):
    NOTIFICATIONS.labels(result=_result)


def serve(port: int, address: str = "0.0.0.0") -> None:  # noqa: S104 - scraped from outside
    """Serve /metrics from a background thread."""
    start_http_server(port, addr=address)


def prepare_multiprocess_dir(directory: Path) -> Path:
    """Create a worker host's multiprocess directory and empty it of an earlier run's samples,
    which would otherwise be summed with this run's (and show processes long dead)."""
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.db"):
        stale.unlink(missing_ok=True)
    return directory
