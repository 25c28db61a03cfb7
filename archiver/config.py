"""Settings, read once from the environment; each process gets the same view.

Each setting is declared once, as a field of ``Settings``: its variable, default, reader (which
checks bounds and names the variable when it refuses a value) and help. ``archiver config``
shows them in effect, and a test holds the README's table to them.
"""

from __future__ import annotations

import getpass
import os
import re
import socket
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from archiver.core.encryption import Keyring, check_key_id
from archiver.core.object_names import Compression, check_storage
from archiver.errors import ConfigError, InvalidName
from archiver.observability.logs import redact_secrets
from archiver.sinks.urls import location_fingerprint, parse_sink_url
from archiver.store.urls import cluster_requested, is_sentinel_url, parse_sentinel_url

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_PREFIX = "archiver"


def redact_url(url: str) -> str:
    """The URL without its passwords (every one, in a list of Sentinels), safe to log or
    print."""
    return redact_secrets(url)


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


def _port(name: str, raw: str) -> int:
    if not raw.isdigit() or int(raw) > 65535:
        raise ConfigError(f"{name} must be a port number (0 for none), got {raw!r}")
    return int(raw)


def _count(name: str, raw: str) -> int:
    if not raw.isdigit() or int(raw) < 1:
        raise ConfigError(f"{name} must be a whole number of at least 1, got {raw!r}")
    return int(raw)


def _whole(name: str, raw: str) -> int:
    if not raw.isdigit():
        raise ConfigError(f"{name} must be a whole number (0 for none), got {raw!r}")
    return int(raw)


def _seconds(name: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be a number of seconds, got {raw!r}") from exc
    if not value > 0 or value == float("inf"):
        raise ConfigError(f"{name} must be a positive number of seconds, got {raw!r}")
    return value


def _choice(*choices: str) -> Callable[[str, str], str]:
    def read(name: str, raw: str) -> str:
        if raw.lower() not in choices:
            allowed = f"{', '.join(choices[:-1])} or {choices[-1]}"
            raise ConfigError(f"{name} must be {allowed}, got {raw!r}")
        return raw.lower()

    return read


def _compression(name: str, raw: str) -> Compression:
    return Compression(_choice(*(c.value for c in Compression))(name, raw))


def _url(*schemes: str, kombu_sentinels: bool = False) -> Callable[[str, str], str]:
    """A server's URL: one of ``schemes``, a host (but for a Unix socket), a numeric port and,
    for Redis, a numeric database. ``sentinel://`` URLs are ours (see ``store.urls``), or,
    with ``kombu_sentinels``, also kombu's (``sentinel://h1:p1;sentinel://h2:p2``)."""

    def read(name: str, raw: str) -> str:
        parts = urlsplit(raw)
        shown = redact_url(raw)
        if parts.scheme not in schemes:
            starts = " or ".join(s + "://" for s in schemes)
            raise ConfigError(f"{name} must be a URL starting {starts}, got {shown!r}")
        if is_sentinel_url(raw) and not (kombu_sentinels and ";" in raw):
            try:
                parse_sentinel_url(raw)
            except ValueError as exc:
                raise ConfigError(f"{name}: {exc} in {shown!r}") from None
            return raw
        try:
            parts.port  # noqa: B018 - read for the check it makes
        except ValueError:
            raise ConfigError(f"{name} has a port that is not a number: {shown!r}") from None
        if parts.scheme not in ("unix", "redis+socket") and not parts.hostname:
            raise ConfigError(f"{name} names no host: {shown!r}")
        database = parts.path.strip("/")
        if parts.scheme in ("redis", "rediss") and database and not database.isdigit():
            raise ConfigError(f"{name}: the database must be a number, got {shown!r}")
        return raw

    return read


def _sink_url(name: str, raw: str) -> str:
    parse_sink_url(raw)  # checked in full here, so that nothing starts with a bad one
    return raw


def _prefix(name: str, raw: str) -> str:
    if any(c in raw for c in "{} \t\n") or len(raw) > 64:
        raise ConfigError(f"{name} {raw!r} has unsafe characters")
    return raw


def _storages(name: str, raw: str) -> Mapping[str, Path]:
    return parse_storages(raw)


_MIRROR_NAME = re.compile(r"([A-Za-z0-9][A-Za-z0-9_.-]{0,31})=(?=[a-z0-9]+://)")


def parse_mirror_urls(name: str, raw: str) -> dict[str, str]:
    """``[name=]url[,[name=]url...]``: each mirror's name (``mirror-<n>`` when not given) and
    sink URL, checked in full."""
    mirrors: dict[str, str] = {}
    for number, item in enumerate(filter(None, (p.strip() for p in raw.split(","))), start=1):
        match = _MIRROR_NAME.match(item)
        mirror = match.group(1) if match else f"mirror-{number}"
        url = item[match.end() :] if match else item
        try:
            parse_sink_url(url)
        except ConfigError as exc:
            raise ConfigError(f"{name}: mirror {mirror!r}: {exc}") from None
        if mirror in mirrors:
            raise ConfigError(f"{name} names mirror {mirror!r} twice")
        if mirror == "primary":
            raise ConfigError(f"{name}: 'primary' names the sink of ARCHIVER_SINK_URL")
        if url in mirrors.values():
            raise ConfigError(f"{name} gives {redact_url(url)!r} twice")
        mirrors[mirror] = url
    return mirrors


def _mirrors(name: str, raw: str) -> Mapping[str, str]:
    return parse_mirror_urls(name, raw)


def _rate(name: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be a number (0 for off), got {raw!r}") from exc
    if not value >= 0 or value == float("inf"):
        raise ConfigError(f"{name} must be zero or a positive number, got {raw!r}")
    return value


def _keyring(name: str, raw: str) -> Keyring:
    try:
        return Keyring.parse(raw, current=None, choose_current=False)
    except ConfigError as exc:
        raise ConfigError(f"{name}: {exc}") from None


def _keyring_file(name: str, raw: str) -> Path:
    path = _absolute_path(name, raw)
    try:
        _keyring(name, path.read_text())
    except OSError as exc:
        raise ConfigError(f"{name}: cannot read {path}: {exc.strerror}") from None
    return path


def _key_id(name: str, raw: str) -> str:
    try:
        return check_key_id(raw)
    except ConfigError as exc:
        raise ConfigError(f"{name}: {exc}") from None


def _absolute_path(name: str, raw: str) -> Path:
    if not Path(raw).is_absolute():
        raise ConfigError(f"{name} must be an absolute path, got {raw!r}")
    return Path(raw)


def _log_level(name: str, raw: str) -> str:
    level = _choice("debug", "info", "warning", "warn", "error", "critical")(name, raw)
    return "WARNING" if level == "warn" else level.upper()


def _text(name: str, raw: str) -> str:
    return raw


def _default_actor() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a container)
        user = f"uid{os.getuid()}"
    return f"{user}@{socket.gethostname()}"


def setting(
    env: str,
    default: str | None,
    read: Callable[[str, str], Any],
    help: str,
    shown_default: str | None = None,
    secret: bool = False,
) -> Any:
    """A field of ``Settings`` read from ``env``: its one declaration, with its default as an
    operator would write it, the reader that checks it, and the help the README table shows."""
    value = None if default is None else read(env, default)
    metadata = {
        "env": env,
        "read": read,
        "help": help,
        "shown_default": shown_default if shown_default is not None else default,
        "secret": secret,
    }
    if read in (_storages, _mirrors):  # a mapping: each instance gets its own
        return field(default_factory=dict, metadata=metadata)
    return field(default=value, metadata=metadata, repr=not secret)


@dataclass(frozen=True)
class Declared:
    """One setting as declared: for ``archiver config`` and the README's table."""

    env: str
    default: str | None
    help: str


_REDIS_SCHEMES = ("redis", "rediss", "unix")
_BROKER_SCHEMES = (*_REDIS_SCHEMES, "redis+socket", "sentinel", "amqp", "amqps", "pyamqp")


@dataclass(frozen=True)
class Settings:
    sink_url: str | None = setting(
        "ARCHIVER_SINK_URL",
        None,
        _sink_url,
        "`file:///absolute/path` or `s3://bucket[/prefix]?endpoint_url=...&region=...`; "
        "S3 credentials come from boto3's usual chain",
        secret=True,
    )
    redis_url: str = setting(
        "ARCHIVER_REDIS_URL",
        DEFAULT_REDIS_URL,
        _url(*_REDIS_SCHEMES, "sentinel"),
        "partition state and streams; add `?cluster=yes` for a Redis Cluster (every "
        "partition's keys share a hash tag; the broker must then be another server); "
        "`sentinel://host:port[,host:port...]/db?master=name` for a master that Redis "
        "Sentinel fails over (the broker follows it too)",
        secret=True,
    )
    # None in a declaration: the Redis URL.
    broker_url: str = setting(
        "ARCHIVER_BROKER_URL",
        None,
        _url(*_BROKER_SCHEMES, kombu_sentinels=True),
        "Celery broker: Redis (`redis://`, `rediss://`) or RabbitMQ "
        "(`amqp://user:password@host:5672/vhost`); the core test scenarios run on both",
        shown_default="ARCHIVER_REDIS_URL",
        secret=True,
    )
    redis_prefix: str = setting(
        "ARCHIVER_REDIS_PREFIX", DEFAULT_PREFIX, _prefix, "prefix of every Redis key and stream"
    )
    redis_min_replicas: int = setting(
        "ARCHIVER_REDIS_MIN_REPLICAS",
        "0",
        _whole,
        "replicas that must hold a commit (Redis `WAIT`) before its acknowledgement is "
        "published, so that a failover cannot roll back what the producer was told; an "
        "acknowledgement not replicated in time is held back and published again later. Not "
        "with `?cluster=yes`",
    )
    redis_replica_timeout_seconds: float = setting(
        "ARCHIVER_REDIS_REPLICA_TIMEOUT_SECONDS",
        "2",
        _seconds,
        "how long one wait for the replicas may take (under 10 s, the Redis socket timeout)",
    )
    storages: Mapping[str, Path] = setting(
        "ARCHIVER_STORAGES",
        None,
        _storages,
        "`name=/path[,name2=/path2]`: storage roots on this host",
    )
    retry_min_seconds: float = setting(
        "ARCHIVER_RETRY_MIN_SECONDS",
        "5",
        _seconds,
        "first retry wait; doubles per failure (fractions allowed)",
    )
    retry_max_seconds: float = setting(
        "ARCHIVER_RETRY_MAX_SECONDS", "300", _seconds, "longest retry wait and fleet pause"
    )
    lease_seconds: float = setting(
        "ARCHIVER_LEASE_SECONDS",
        "30",
        _seconds,
        "a running attempt's claim; renewed every third of it",
    )
    dispatch_timeout_seconds: float = setting(
        "ARCHIVER_DISPATCH_TIMEOUT_SECONDS",
        "600",
        _seconds,
        "how long a queued task may wait before its partition is dispatched again",
    )
    sweep_interval_seconds: float = setting(
        "ARCHIVER_SWEEP_INTERVAL_SECONDS",
        "10",
        _seconds,
        "how often the scheduler looks for partitions with work and no live claim",
    )
    task_time_limit_seconds: float = setting(
        "ARCHIVER_TASK_TIME_LIMIT_SECONDS",
        "1800",
        _seconds,
        "limit on one attempt: past it the grant is no longer renewed, so its partition goes "
        "to another worker; a prefork pool process also interrupts the attempt, and exits if "
        "it still runs a tenth of the limit later (2 to 30 s). An attempt that overruns "
        "counts as a failure of its entry",
    )
    entry_failures_before_stop: int = setting(
        "ARCHIVER_ENTRY_FAILURES_BEFORE_STOP",
        "5",
        _count,
        "failures of an entry itself (unsafe content; an attempt past the time limit; gone from "
        "the worker host with an object at its name that does not verify) before its "
        "partition is `stopped` for an operator; the fleet does not back off for them. An "
        "entry that is merely missing is retried until it appears",
    )
    leader_ttl_seconds: float = setting(
        "ARCHIVER_LEADER_TTL_SECONDS",
        "10",
        _seconds,
        "scheduler leader lease; a standby takes over after it",
    )
    encryption_keys: Keyring = setting(
        "ARCHIVER_ENCRYPTION_KEYS",
        None,
        _keyring,
        "`id:base64-key[,id:base64-key...]`: AES-256 key-encryption keys (`archiver keygen` "
        "makes one). New entries are sealed with the current key and stored as "
        "`<lsn>.tar.enc`; objects sealed with any key given still open. Shown by id only",
        shown_default="none",
    )
    encryption_keys_file: Path | None = setting(
        "ARCHIVER_ENCRYPTION_KEYS_FILE",
        None,
        _keyring_file,
        "the keys in a file instead, one `id:base64-key` per line (a secret mount, a systemd "
        "credential)",
    )
    encryption_key_id: str | None = setting(
        "ARCHIVER_ENCRYPTION_KEY_ID",
        None,
        _key_id,
        "the key new entries are sealed with; needed when several are given (with one, it is "
        "that one). `none`: keys only open old objects, new ones are stored in the clear",
    )
    mirror_urls: Mapping[str, str] = setting(
        "ARCHIVER_MIRROR_URLS",
        None,
        _mirrors,
        "`[name=]url[,[name=]url...]`: mirrors (another region, another provider) that every "
        "archive object is copied to, byte for byte, by the leading scheduler and any "
        "`archiver mirror` processes. Each keeps its own progress per partition; one that is "
        "down falls behind and catches up from the primary",
        secret=True,
    )
    ack_policy: str = setting(
        "ARCHIVER_ACK_POLICY",
        "primary",
        _choice("primary", "all"),
        "`primary`: an entry is acknowledged once the primary holds it; `all`: only once "
        "every mirror holds it too (a mirror that is down then holds acknowledgements back)",
    )
    scrub_bytes_per_second: float = setting(
        "ARCHIVER_SCRUB_BYTES_PER_SECOND",
        "0",
        _rate,
        "the leading scheduler re-reads archived objects at most this fast, checking "
        "checksums, tars, decryption and holes (`0`: no scrubbing in the scheduler; "
        "`archiver scrub` runs it by hand)",
    )
    scrub_requests_per_second: float = setting(
        "ARCHIVER_SCRUB_REQUESTS_PER_SECOND",
        "10",
        _rate,
        "...and with at most this many requests a second to the store",
    )
    compression: Compression = setting(
        "ARCHIVER_COMPRESSION",
        "none",
        _compression,
        "`zstd` stores new entries as `<lsn>.tar.zst`",
    )
    metrics_port: int = setting(
        "ARCHIVER_METRICS_PORT",
        "9808",
        _port,
        "where the scheduler serves Prometheus `/metrics` (`0`: off)",
    )
    worker_metrics_port: int = setting(
        "ARCHIVER_WORKER_METRICS_PORT",
        "9809",
        _port,
        "where a worker host serves `/metrics` for all its processes (`0`: off)",
    )
    metrics_dir: Path = setting(
        "ARCHIVER_METRICS_DIR",
        str(Path(tempfile.gettempdir()) / "archiver-metrics"),
        _absolute_path,
        "a worker host's multiprocess metrics files go in `<dir>/<node name>`, emptied at start",
        shown_default="$TMPDIR/archiver-metrics",
    )
    state_metrics_interval_seconds: float = setting(
        "ARCHIVER_STATE_METRICS_INTERVAL_SECONDS",
        "15",
        _seconds,
        "how often the leading scheduler recomputes the fleet-state gauges",
    )
    chain_entries: int = setting(
        "ARCHIVER_CHAIN_ENTRIES",
        "100",
        _count,
        "a task that archived an entry goes on with the partition's next one, up to this many "
        "entries...",
    )
    chain_seconds: float = setting(
        "ARCHIVER_CHAIN_SECONDS",
        "10",
        _seconds,
        "...and this long, then sends the rest back to the queue, so other partitions get "
        "their turn",
    )
    log_level: str = setting(
        "ARCHIVER_LOG_LEVEL",
        "INFO",
        _log_level,
        "the archiver's own lines; on worker hosts Celery's lines stay at `INFO`",
    )
    log_format: str = setting(
        "ARCHIVER_LOG_FORMAT",
        "text",
        _choice("text", "json"),
        "`json`: one JSON object per line, with `storage`, `partition`, `lsn` as keys",
    )
    actor: str | None = setting(
        "ARCHIVER_ACTOR",
        None,
        _text,
        "who `archiver admin` records as acting",
        shown_default="user@host",
    )

    def __post_init__(self) -> None:
        # Defaults that depend on other settings, or on who runs the process.
        if not self.broker_url:
            object.__setattr__(self, "broker_url", self.redis_url)
        if self.redis_min_replicas and cluster_requested(self.redis_url):
            raise ConfigError(
                "ARCHIVER_REDIS_MIN_REPLICAS waits on one server's replicas: it cannot be "
                "used with a Redis Cluster (?cluster=yes)"
            )
        if self.redis_replica_timeout_seconds >= 10:
            raise ConfigError(
                "ARCHIVER_REDIS_REPLICA_TIMEOUT_SECONDS must be under 10 s, the Redis socket "
                "timeout: a longer wait would fail as a lost connection"
            )
        if self.actor is None:
            object.__setattr__(self, "actor", _default_actor())
        object.__setattr__(self, "encryption_keys", self._chosen_keyring())
        if self.ack_policy == "all" and not self.mirror_urls:
            raise ConfigError("ARCHIVER_ACK_POLICY=all needs mirrors (ARCHIVER_MIRROR_URLS)")
        if self.sink_url and self.sink_url in self.mirror_urls.values():
            raise ConfigError("ARCHIVER_MIRROR_URLS names the primary sink as a mirror")

    def _chosen_keyring(self) -> Keyring:
        keyring = self.encryption_keys or Keyring()
        if self.encryption_keys_file is not None:
            if keyring:
                raise ConfigError(
                    "give ARCHIVER_ENCRYPTION_KEYS or ARCHIVER_ENCRYPTION_KEYS_FILE, not both"
                )
            keyring = _keyring(
                "ARCHIVER_ENCRYPTION_KEYS_FILE", self.encryption_keys_file.read_text()
            )
        current = self.encryption_key_id
        if current == "none":
            return keyring.choosing(None)
        if current is None and len(keyring.ids) > 1 and keyring.current is None:
            raise ConfigError(
                "several encryption keys are given: ARCHIVER_ENCRYPTION_KEY_ID must name the "
                "one new entries are sealed with (or `none`)"
            )
        if current is None:
            current = keyring.current or (keyring.ids[0] if keyring.ids else None)
        if current is not None and current not in keyring.ids:
            raise ConfigError(
                f"ARCHIVER_ENCRYPTION_KEY_ID {current!r} is not among the keys given "
                f"({', '.join(keyring.ids) or 'none'})"
            )
        return keyring.choosing(current)

    @property
    def mirror_targets(self) -> dict[str, str]:
        """Each mirror's name and the fingerprint of where it is, which its progress in Redis
        is kept under."""
        return {name: location_fingerprint(url) for name, url in self.mirror_urls.items()}

    @property
    def keyring(self) -> Keyring:
        return self.encryption_keys

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Every declared setting from the environment; an empty variable counts as unset."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(f.metadata["env"])
            if raw:
                values[f.name] = f.metadata["read"](f.metadata["env"], raw)
        settings = cls(**values)
        if settings.retry_max_seconds < settings.retry_min_seconds:
            raise ConfigError("ARCHIVER_RETRY_MAX_SECONDS is below ARCHIVER_RETRY_MIN_SECONDS")
        return settings

    @classmethod
    def declared(cls) -> list[Declared]:
        return [
            Declared(f.metadata["env"], f.metadata["shown_default"], f.metadata["help"])
            for f in fields(cls)
        ]

    def effective(self) -> dict[str, str | None]:
        """Each variable's value in effect, as it would be written, passwords masked."""
        shown: dict[str, str | None] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None:
                text = None
            elif f.name == "storages":
                text = ",".join(f"{name}={path}" for name, path in value.items())
            elif f.name == "mirror_urls":
                text = ",".join(f"{name}={url}" for name, url in value.items()) or None
            elif isinstance(value, Keyring):
                text = str(value) if value else None
            elif isinstance(value, float):
                text = f"{value:g}"
            else:
                text = str(value)
            if text is not None and f.metadata["secret"]:
                text = redact_url(text)
            shown[f.metadata["env"]] = text
        return shown

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
