"""Distributed write-ahead-log archiver.

Dependencies point inward: ``core`` is pure; ``store`` (Redis), ``sinks`` (filesystem, S3),
``archive`` and ``runtime`` are built around it; ``observability``, ``cli`` and ``workers`` (the
Celery app) sit outside. ``dev`` serves the demo and tests only.
"""

__version__ = "0.1.0"
