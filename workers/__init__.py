"""The Celery worker fleet: ``celery -A workers worker -Q archiver.<storage>``."""

from workers import tasks as _tasks  # noqa: F401  (registers the task)
from workers.application import app

__all__ = ["app"]
