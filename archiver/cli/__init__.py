"""The ``archiver`` command."""

from archiver.cli import (  # noqa: F401
    admin_commands,
    archive_commands,
    inspect_commands,
    run_commands,
)
from archiver.cli.common import main

__all__ = ["main"]
