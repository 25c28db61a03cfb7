"""Logging shared by every process.

Events about one entry carry ``storage``, ``partition`` and ``lsn`` as fields (pass
``extra=entry_fields(...)``), so they can be searched for in either format:
- ``ARCHIVER_LOG_FORMAT=text`` (default): ``time level logger message key=value ...``;
- ``ARCHIVER_LOG_FORMAT=json``: one JSON object per line, the fields as keys.
Passwords in URLs are masked in every line, whatever logged them.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import Any

from pythonjsonlogger.json import JsonFormatter

# Fields shown after the message in text logs, in this order, when a record has them.
CONTEXT_FIELDS = ("storage", "partition", "lsn", "token", "key", "bytes", "seconds", "error")
FORMATS = ("text", "json")

_URL_PASSWORD = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*:)[^@\s]+@")


def redact_secrets(text: str) -> str:
    """Mask the password of every ``scheme://user:password@host`` in ``text``."""
    return _URL_PASSWORD.sub(r"\g<head>***@", text)


def entry_fields(
    storage: str, partition: int, lsn: int | None = None, **more: Any
) -> dict[str, Any]:
    """The ``extra`` of a log call about one partition or entry."""
    fields: dict[str, Any] = {"storage": storage, "partition": partition, **more}
    if lsn is not None:
        fields["lsn"] = lsn
    return fields


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        context = " ".join(
            f"{name}={getattr(record, name)}" for name in CONTEXT_FIELDS if hasattr(record, name)
        )
        if context:
            head, newline, rest = line.partition("\n")  # keep a traceback below the line
            line = f"{head} {context}{newline}{rest}"
        return redact_secrets(line)


class RedactingJsonFormatter(JsonFormatter):
    def format(self, record: logging.LogRecord) -> str:
        return redact_secrets(super().format(record))


def make_formatter(log_format: str) -> logging.Formatter:
    if log_format == "json":
        return RedactingJsonFormatter(
            ["asctime", "levelname", "name", "message", "process"],
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
        )
    if log_format == "text":
        return TextFormatter()
    raise ValueError(f"ARCHIVER_LOG_FORMAT must be one of {', '.join(FORMATS)}, got {log_format!r}")


def configure_logging(level: str, log_format: str) -> None:
    """Once per process, from ``ARCHIVER_LOG_LEVEL`` and ``ARCHIVER_LOG_FORMAT`` (Settings)."""
    root = logging.getLogger()
    if getattr(root, "_archiver_configured", False):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(make_formatter(log_format))
    root.addHandler(handler)
    root.setLevel(level.upper())
    # Our loggers carry the level themselves: a Celery worker sets the root logger's to its own
    # --loglevel when it starts.
    for ours in ("archiver", "workers"):
        logging.getLogger(ours).setLevel(level.upper())
    # boto's and urllib3's debug chatter is not ours to show.
    for noisy in ("botocore", "boto3", "urllib3", "s3transfer"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    root._archiver_configured = True  # type: ignore[attr-defined]
