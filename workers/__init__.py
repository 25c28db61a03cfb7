"""The Celery worker fleet: ``celery -A workers worker -Q archiver.<storage>``."""

from workers.application import app
from workers import tasks as _tasks  # noqa: F401  (registers the task)

__all__ = ["app"]
