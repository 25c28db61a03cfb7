"""Redis connections with deadlines: a dead or black-holed server fails a call, never hangs it."""

from __future__ import annotations

import redis

SOCKET_TIMEOUT = 10.0
CONNECT_TIMEOUT = 5.0


def connect(url: str, decode_responses: bool = True) -> redis.Redis:
    return redis.Redis.from_url(
        url,
        socket_timeout=SOCKET_TIMEOUT,
        socket_connect_timeout=CONNECT_TIMEOUT,
        health_check_interval=30,
        decode_responses=decode_responses,
    )
