"""Log format shared by every process: ``time level logger message key=value ...``."""

from __future__ import annotations

import logging
import os
import sys


def configure_logging(level: str | None = None) -> None:
    level = level or os.environ.get("ARCHIVER_LOG_LEVEL", "INFO")
    root = logging.getLogger()
    if getattr(root, "_archiver_configured", False):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root.addHandler(handler)
    root.setLevel(level.upper())
    # boto's and urllib3's debug chatter is not ours to show.
    for noisy in ("botocore", "boto3", "urllib3", "s3transfer"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    root._archiver_configured = True  # type: ignore[attr-defined]
