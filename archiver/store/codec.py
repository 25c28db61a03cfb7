"""Turning script replies into Python values, and seconds into the milliseconds scripts take."""

from __future__ import annotations

from typing import Any


def text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))
