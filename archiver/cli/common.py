"""What every ``archiver`` subcommand shares: the command group, argument types, errors."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from typing import Any, TypeVar

import click
from rich.console import Console

from archiver.config import Settings
from archiver.core.lsn import parse_decimal_lsn
from archiver.core.object_names import check_storage, parse_partition
from archiver.errors import ArchiverError, ConfigError, InputError, SinkError
from archiver.sinks import Sink
from archiver.store.client import connect
from archiver.store.keys import RedisKeys
from archiver.store.state_store import RedisStateStore
from archiver.store.streams import Streams

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")
# Tables are not squeezed into 80 columns when piped; a terminal's own width is used.
console = Console(width=None if sys.stdout.isatty() else 200)


@dataclass
class Services:
    settings: Settings
    store: RedisStateStore
    streams: Streams


def current_settings() -> Settings:
    """This invocation's settings: read from the environment once, when first needed (so that
    ``--help`` works whatever the environment holds)."""
    root = click.get_current_context().find_root()
    if not isinstance(root.obj, Settings):
        root.obj = Settings.from_env()
    return root.obj


def services(settings: Settings) -> Services:
    client = connect(settings.redis_url)
    keys = RedisKeys(settings.redis_prefix)
    store = RedisStateStore(client, keys, mirror_targets=settings.mirror_targets)
    return Services(settings, store, Streams(client, keys))


PRIMARY = "primary"


def open_named_sink(settings: Settings, name: str | None) -> Sink:
    """The primary sink (``None`` or ``primary``) or the mirror of that name."""
    from archiver.sinks import open_sink

    if name in (None, PRIMARY):
        return open_sink(settings.require_sink_url(), settings.keyring)
    url = settings.mirror_urls.get(name)
    if url is None:
        known = ", ".join([PRIMARY, *settings.mirror_urls])
        raise click.UsageError(f"no sink is named {name!r} (known: {known})")
    return open_sink(url, settings.keyring)


SINK_OPTION = click.option(
    "--sink",
    "sink_name",
    metavar="NAME",
    help="Read from this mirror of ARCHIVER_MIRROR_URLS instead of the primary sink.",
)


class SettingsError(click.ClickException):
    """A setting that cannot be used: a usage error (status 2), though no argument is wrong."""

    exit_code = 2


def clear_errors(func: F) -> F:
    """Bad input and failures of the world around end in one clear line, not a traceback:
    input and settings as a usage error (exit status 2), the rest with status 1."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        import redis

        try:
            return func(*args, **kwargs)
        except ConfigError as exc:
            raise SettingsError(str(exc)) from exc
        except InputError as exc:
            raise click.UsageError(str(exc)) from exc
        except redis.RedisError as exc:
            raise click.ClickException(f"Redis: {exc}") from exc
        except SinkError as exc:
            raise click.ClickException(f"sink: {exc}") from exc
        except ArchiverError as exc:
            raise click.ClickException(str(exc)) from exc

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

    Settings come from ARCHIVER_* environment variables: `archiver config` lists every one,
    with its value in effect and what it is for. Start with `archiver demo`.
    """
