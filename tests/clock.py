"""A clock the test controls, for the Lua scripts: each reads it instead of the server's."""

from __future__ import annotations

import redis

CLOCK_KEY = "test:clock"
# Loaded before every script in place of common.lua's now_ms.
TEST_CLOCK = f"""
local function now_ms()
  return tonumber(redis.call('GET', '{CLOCK_KEY}'))
end
"""


class Clock:
    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self.ms = 1_000_000
        self.client.set(CLOCK_KEY, self.ms)

    def __call__(self) -> int:
        return self.ms

    def advance(self, ms: int) -> None:
        self.ms += ms
        self.client.set(CLOCK_KEY, self.ms)
