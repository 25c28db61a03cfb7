"""Running the Lua scripts of ``archiver/store/lua/`` by SHA, on a client or in a pipeline."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from importlib import resources
from typing import Any

import redis
import redis.cluster
from redis.exceptions import NoScriptError

from archiver.store.cluster_pipeline import ClusterBatch


def load_script(name: str, prelude: str = "") -> str:
    """A script from ``archiver/store/lua/``, with the shared helpers in front, then ``prelude``
    (tests replace the clock with one)."""
    package = resources.files("archiver.store") / "lua"
    common = (package / "common.lua").read_text()
    return common + "\n" + prelude + "\n" + (package / f"{name}.lua").read_text()


PIPELINES = (redis.client.Pipeline, redis.cluster.ClusterPipeline, ClusterBatch)


class LuaScripts:
    """The partition scripts, run by SHA.

    Unlike redis-py's registered scripts, a pipeline of these costs one round trip: redis-py
    asks SCRIPT EXISTS before every pipeline that holds a script. Here a script the server lost
    (a restart, SCRIPT FLUSH) is loaded again when a call meets NOSCRIPT, and the call (or the
    whole pipeline, see ``RedisStateStore.pipelined``) is made again. Every script and pipeline
    that may be made twice is idempotent or fenced.
    """

    def __init__(
        self,
        client: redis.Redis | redis.cluster.RedisCluster,
        names: Iterable[str],
        prelude: str = "",
    ) -> None:
        self.client: Any = client
        self.sources = {name: load_script(name, prelude) for name in names}
        self.shas = {
            name: hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()
            for name, source in self.sources.items()
        }

    def load(self) -> None:
        # One call per script: on a cluster, each is sent to every primary.
        for source in self.sources.values():
            self.client.script_load(source)

    def __call__(
        self,
        name: str,
        keys: list[str],
        args: list[Any],
        client: redis.Redis | redis.client.Pipeline | None = None,
    ) -> Any:
        """Run ``name`` now, or queue it on ``client`` when that is a pipeline."""
        target = self.client if client is None else client
        call = (self.shas[name], len(keys), *keys, *args)
        if isinstance(target, PIPELINES):
            target.evalsha(*call)
            return None
        try:
            return target.evalsha(*call)
        except NoScriptError:
            self.load()
            return target.evalsha(*call)

    def pipelined(self, fill: Callable[[redis.client.Pipeline], None]) -> list[Any]:
        """One round trip for what ``fill`` queues; made again, refilled, if the server had
        lost the scripts."""
        for attempt in (1, 2):
            pipe: Any = (
                ClusterBatch(self.client)
                if isinstance(self.client, redis.cluster.RedisCluster)
                else self.client.pipeline(transaction=False)
            )
            fill(pipe)
            try:
                replies: list[Any] = pipe.execute()
                return replies
            except NoScriptError:
                if attempt == 2:
                    raise
                self.load()
        raise AssertionError("unreachable")
