"""Distributed write-ahead-log archiver.

The pure core (``lsn``, ``keys``, ``partition``, ``notification``, ``tarball``) knows nothing of
Redis, Celery or boto3; the adapters (``state_store``, ``sinks``, ``taskqueue``, ``scheduler``,
``cli``) are built around it.
"""

__version__ = "0.1.0"
