"""Log lines carry storage, partition and LSN as fields, in text and JSON, and never a
password."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys

import pytest

from archiver.config import Settings
from archiver.errors import ConfigError
from archiver.observability.logs import entry_fields, make_formatter, redact_secrets


def emit(log_format: str, message: str, *args: object, **extra: object) -> str:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(make_formatter(log_format))
    logger = logging.getLogger(f"test.{log_format}")
    logger.propagate = False
    logger.handlers = [handler]
    logger.setLevel(logging.INFO)
    logger.error(message, *args, extra=extra)
    return stream.getvalue()


def test_text_lines_end_with_the_entry_fields() -> None:
    line = emit("text", "archiving failed", **entry_fields("git-1", 7, 42, error="timeout"))
    assert line.rstrip().endswith(
        "ERROR test.text archiving failed storage=git-1 partition=7 lsn=42 error=timeout"
    )


def test_json_lines_hold_the_fields_as_keys() -> None:
    line = emit("json", "archived %s", "ok", **entry_fields("git-1", 7, 42, bytes=10))
    record = json.loads(line)
    assert record["message"] == "archived ok"
    assert record["level"] == "ERROR"
    assert record["logger"] == "test.json"
    assert (record["storage"], record["partition"], record["lsn"], record["bytes"]) == (
        "git-1",
        7,
        42,
        10,
    )
    assert "time" in record


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_passwords_in_urls_are_masked(log_format: str) -> None:
    line = emit(
        log_format,
        "cannot reach %s",
        "redis://archiver:s3cret@redis:6379/0",
        error="amqp://guest:guest-pw@rabbit:5672//",
    )
    assert "s3cret" not in line
    assert "guest-pw" not in line
    assert "redis://archiver:***@redis:6379/0" in line


def test_redaction_leaves_plain_text_alone() -> None:
    text = "lsn=5 key=git/1/00000005.tar http://host:9000/bucket"
    assert redact_secrets(text) == text


def test_a_bad_log_format_is_a_clear_configuration_error() -> None:
    with pytest.raises(ConfigError, match="ARCHIVER_LOG_FORMAT must be text or json"):
        Settings.from_env({"ARCHIVER_LOG_FORMAT": "xml"})
    assert Settings.from_env({"ARCHIVER_LOG_FORMAT": "JSON"}).log_format == "json"


def test_a_worker_host_keeps_the_configured_level_for_the_archivers_own_lines() -> None:
    """Celery sets the root logger's level to its --loglevel (INFO, for its "ready." line) as
    the worker starts; ARCHIVER_LOG_LEVEL must still hold for the archiver's lines, which are
    one per entry. In a fresh interpreter, since logging is set up once per process."""
    code = (
        "import logging\n"
        "from workers.application import app\n"
        "app.log.setup(loglevel='INFO')\n"  # what `celery worker --loglevel INFO` does
        "print(logging.getLogger('archiver.worker').isEnabledFor(logging.INFO),"
        " logging.getLogger('celery.worker').isEnabledFor(logging.INFO))\n"
    )
    env = {**os.environ, "ARCHIVER_LOG_LEVEL": "WARNING"}
    env.pop("ARCHIVER_SINK_URL", None)
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    assert result.stdout.split() == ["False", "True"]
