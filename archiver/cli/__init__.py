"""The ``archiver`` command."""

from archiver.cli import archive_commands, inspect_commands, run_commands  # noqa: F401
from archiver.cli.common import main

__all__ = ["main"]
