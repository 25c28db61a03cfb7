"""Partition state in Redis, in parts over one client and one script runner: the partitions'
transitions, the due index, the fleet pause, counters, operators' changes and reading records
back. Every transition is one Lua script over one partition's keys."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import redis
import redis.cluster

from archiver.store.admin import AdminOperations
from archiver.store.counters import Counters
from archiver.store.due_index import DueIndex
from archiver.store.fleet_pause import FleetPause
from archiver.store.keys import RedisKeys
from archiver.store.mirrors import MirrorProgressStore
from archiver.store.records import PartitionRecords
from archiver.store.scripts import LuaScripts
from archiver.store.streams import STREAM_SCRIPTS
from archiver.store.transitions import PartitionTransitions

SCRIPTS = (
    "apply_notification",
    "claim_next_entry",
    "renew_lease",
    "commit_success",
    "record_failure",
    "release_claim",
    "mark_conflict",
    "reconcile",
    "mark_dispatched",
    "fleet_failure",
    "fleet_success",
    "fleet_pause_left",
    "admin_pause",
    "admin_release",
    "admin_requeue",
    "admin_skip_to",
    "mirror_progress",
    *STREAM_SCRIPTS,
)


class RedisStateStore:
    def __init__(
        self,
        client: redis.Redis | redis.cluster.RedisCluster,
        keys: RedisKeys,
        script_prelude: str = "",
        mirror_targets: Mapping[str, str] | None = None,
    ) -> None:
        self.client: Any = client
        self.keys = keys
        self.scripts = LuaScripts(client, SCRIPTS, script_prelude)
        self.transitions = PartitionTransitions(self.scripts, keys)
        self.due = DueIndex(client, keys)
        self.fleet = FleetPause(self.scripts, keys)
        self.counters = Counters(client, keys)
        self.admin = AdminOperations(self.scripts, keys, self.due, self.server_time_ms)
        self.records = PartitionRecords(client, keys)
        self.mirrors = MirrorProgressStore(client, self.scripts, keys, mirror_targets)

    def server_time_ms(self) -> int:
        """Redis's clock, which every stored time was read from."""
        seconds, micros = self.client.time()
        return int(seconds) * 1000 + int(micros) // 1000
