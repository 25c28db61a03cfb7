"""The Celery worker fleet, started with ``archiver worker`` (which runs
``celery -A workers worker -Q archiver.<storage>`` with its metrics directory prepared)."""

from workers import exporter as _exporter  # noqa: F401  (connects the metrics signals)
from workers import tasks as _tasks  # noqa: F401  (registers the task)
from workers.application import app

__all__ = ["app"]
