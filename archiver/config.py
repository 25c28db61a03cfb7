"""Settings, read once from the environment; each process gets the same view."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from archiver.core.object_names import Compression, InvalidName, check_storage

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_PREFIX = "archiver"


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names the variable."""


def redact_url(url: str) -> str:
    """The URL without its password, safe to log or print."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    netloc = f"{user}:***@{host}" if user else f":***@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def parse_storages(text: str) -> dict[str, Path]:
    """``name=/path[,name2=/path2]`` into a mapping of storage names to their roots."""
    storages: dict[str, Path] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, path = item.partition("=")
        if not sep or not path:
            raise ConfigError(f"ARCHIVER_STORAGES item {item!r} is not name=/path")
        try:
            check_storage(name)
        except InvalidName as exc:
            raise ConfigError(f"ARCHIVER_STORAGES: {exc}") from exc
        if not Path(path).is_absolute():
            raise ConfigError(f"ARCHIVER_STORAGES: path of {name!r} must be absolute: {path}")
        if name in storages:
            raise ConfigError(f"ARCHIVER_STORAGES names {name!r} twice")
        storages[name] = Path(path)
    return storages


def _port(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name) or str(default)
    if not raw.isdigit() or int(raw) > 65535:
        raise ConfigError(f"{name} must be a port number (0 for none), got {raw!r}")
    return int(raw)


def _count(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name) or str(default)
    if not raw.isdigit() or int(raw) < 1:
        raise ConfigError(f"{name} must be a whole number of at least 1, got {raw!r}")
    return int(raw)


def _log_format(raw: str) -> str:
    if raw.lower() not in ("text", "json"):
        raise ConfigError(f"ARCHIVER_LOG_FORMAT must be text or json, got {raw!r}")
    return raw.lower()


def _metrics_dir(env: Mapping[str, str]) -> Path:
    raw = env.get("ARCHIVER_METRICS_DIR")
    if not raw:
        return Path(tempfile.gettempdir()) / "archiver-metrics"
    if not Path(raw).is_absolute():
        raise ConfigError(f"ARCHIVER_METRICS_DIR must be an absolute path, got {raw!r}")
    return Path(raw)


def _compression(raw: str) -> Compression:
    try:
        return Compression(raw.lower())
    except ValueError:
        choices = ", ".join(c.value for c in Compression)
        raise ConfigError(f"ARCHIVER_COMPRESSION must be one of {choices}, got {raw!r}") from None


def _seconds(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be a number of seconds, got {raw!r}") from exc
    if not value > 0 or value == float("inf"):
        raise ConfigError(f"{name} must be a positive number of seconds, got {raw!r}")
    return value


@dataclass(frozen=True)
class Settings:
    redis_url: str = DEFAULT_REDIS_URL
    broker_url: str = DEFAULT_REDIS_URL
    # Every Redis key and stream name starts with this.
    redis_prefix: str = DEFAULT_PREFIX
    sink_url: str | None = None
    # Storage names and the roots of their WAL directories on this host.
    storages: Mapping[str, Path] = field(default_factory=dict)
    # First retry wait after a failed attempt; doubles per failure up to the maximum.
    retry_min_seconds: float = 5.0
    retry_max_seconds: float = 300.0
    # How long a running worker's claim lasts without renewal.
    lease_seconds: float = 30.0
    # How long a dispatched task may wait in its queue before the partition is dispatched again.
    dispatch_timeout_seconds: float = 600.0
    # How often the scheduler looks for partitions with work and no live claim.
    sweep_interval_seconds: float = 10.0
    # Where the scheduler serves /metrics; 0 turns it off.
    metrics_port: int = 9808
    # Where a worker host serves /metrics for all its processes; 0 turns it off.
    worker_metrics_port: int = 9809
    # A worker host's prometheus-client multiprocess directory; emptied when the host starts.
    metrics_dir: Path = Path(tempfile.gettempdir()) / "archiver-metrics"
    # How often the leading scheduler recomputes the fleet's state gauges from Redis.
    state_metrics_interval_seconds: float = 15.0
    # "text" or "json".
    log_format: str = "text"
    # A task that archived an entry goes on with the partition's next one, up to this many
    # entries and this many seconds, before it sends the rest back to the queue.
    chain_entries: int = 100
    chain_seconds: float = 10.0
    # How long a scheduler's leadership lasts without renewal; a standby takes over after it.
    leader_ttl_seconds: float = 10.0
    # How new archives are stored: plain "<lsn>.tar" or zstd-compressed "<lsn>.tar.zst".
    compression: Compression = Compression.NONE
    # Hard limit on one archiving attempt; a hung attempt is killed and retried.
    task_time_limit_seconds: float = 1800.0
    # Failures of an entry itself (unsafe content; gone from this host with an object at its
    # name that does not verify) before its partition stops for an operator.
    entry_failures_before_stop: int = 5

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        redis_url = env.get("ARCHIVER_REDIS_URL") or DEFAULT_REDIS_URL
        prefix = env.get("ARCHIVER_REDIS_PREFIX") or DEFAULT_PREFIX
        if any(c in prefix for c in "{} \t\n") or len(prefix) > 64:
            raise ConfigError(f"ARCHIVER_REDIS_PREFIX {prefix!r} has unsafe characters")
        settings = cls(
            redis_url=redis_url,
            broker_url=env.get("ARCHIVER_BROKER_URL") or redis_url,
            redis_prefix=prefix,
            sink_url=env.get("ARCHIVER_SINK_URL") or None,
            storages=parse_storages(env.get("ARCHIVER_STORAGES", "")),
            retry_min_seconds=_seconds(env, "ARCHIVER_RETRY_MIN_SECONDS", 5.0),
            retry_max_seconds=_seconds(env, "ARCHIVER_RETRY_MAX_SECONDS", 300.0),
            lease_seconds=_seconds(env, "ARCHIVER_LEASE_SECONDS", 30.0),
            dispatch_timeout_seconds=_seconds(env, "ARCHIVER_DISPATCH_TIMEOUT_SECONDS", 600.0),
            sweep_interval_seconds=_seconds(env, "ARCHIVER_SWEEP_INTERVAL_SECONDS", 10.0),
            task_time_limit_seconds=_seconds(env, "ARCHIVER_TASK_TIME_LIMIT_SECONDS", 1800.0),
            leader_ttl_seconds=_seconds(env, "ARCHIVER_LEADER_TTL_SECONDS", 10.0),
            compression=_compression(env.get("ARCHIVER_COMPRESSION") or "none"),
            metrics_port=_port(env, "ARCHIVER_METRICS_PORT", 9808),
            worker_metrics_port=_port(env, "ARCHIVER_WORKER_METRICS_PORT", 9809),
            metrics_dir=_metrics_dir(env),
            state_metrics_interval_seconds=_seconds(
                env, "ARCHIVER_STATE_METRICS_INTERVAL_SECONDS", 15.0
            ),
            log_format=_log_format(env.get("ARCHIVER_LOG_FORMAT") or "text"),
            chain_entries=_count(env, "ARCHIVER_CHAIN_ENTRIES", 100),
            chain_seconds=_seconds(env, "ARCHIVER_CHAIN_SECONDS", 10.0),
            entry_failures_before_stop=_count(env, "ARCHIVER_ENTRY_FAILURES_BEFORE_STOP", 5),
        )
        if settings.retry_max_seconds < settings.retry_min_seconds:
            raise ConfigError("ARCHIVER_RETRY_MAX_SECONDS is below ARCHIVER_RETRY_MIN_SECONDS")
        return settings

    def require_sink_url(self) -> str:
        if not self.sink_url:
            raise ConfigError(
                "ARCHIVER_SINK_URL is not set: use file:///absolute/path or s3://bucket/prefix"
            )
        return self.sink_url

    def storage_root(self, storage: str) -> Path:
        try:
            return self.storages[storage]
        except KeyError:
            raise ConfigError(
                f"storage {storage!r} is not in ARCHIVER_STORAGES on this host"
            ) from None

    @property
    def orphan_grace_seconds(self) -> float:
        """How old a claim whose task was never marked as sent must be to be taken over."""
        return 2 * self.sweep_interval_seconds + 2

    def retry_delay(self, attempts: int) -> float:
        """Wait before attempt ``attempts + 1``: the minimum, doubled per failure, capped."""
        exponent = min(max(attempts - 1, 0), 62)
        return float(min(self.retry_min_seconds * 2.0**exponent, self.retry_max_seconds))
