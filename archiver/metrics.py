"""Prometheus metrics. Names start with ``archiver_``; no label is per partition, since a fleet
has hundreds of thousands of them (per-partition detail belongs to ``archiver inspect``)."""

from __future__ import annotations

from prometheus_client import Counter, start_http_server

NOTIFICATIONS = Counter(
    "archiver_notifications",
    "Watermark notifications handled by the scheduler, by result",
    ["result"],  # applied, stale, gap, rejected
)
ACKNOWLEDGEMENTS = Counter(
    "archiver_acknowledgements", "Acknowledgements published, repeated ones included"
)

for _result in ("applied", "stale", "gap", "rejected"):
    NOTIFICATIONS.labels(result=_result)


def serve(port: int, address: str = "0.0.0.0") -> None:  # noqa: S104 - scraped from outside
    """Serve /metrics from a background thread."""
    start_http_server(port, addr=address)
