"""A real Redis Cluster on loopback for tests: ``redis-server --cluster-enabled yes`` nodes
joined by ``redis-cli --cluster create``, with replicas if asked for."""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import redis

from archiver.dev.local_redis import redis_server_binary
from tests.support import wait_for


@dataclass
class ClusterNodes:
    ports: list[int]
    processes: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def url(self) -> str:
        """What ``ARCHIVER_REDIS_URL`` says for it: any node, with ``?cluster=yes``."""
        return f"redis://127.0.0.1:{self.ports[0]}/0?cluster=yes"

    def master_of(self, key: str) -> int:
        """The port of the master serving ``key``'s slot now."""
        for port in self.live_ports():
            try:
                client = redis.Redis(port=port, socket_timeout=2)
                slot = int(client.cluster("keyslot", key))
                for start, end, master, *_ in client.cluster("slots"):
                    if start <= slot <= end:
                        return int(master[1])
            except redis.RedisError:
                continue
        raise AssertionError(f"no node knows who serves {key!r}")

    def live_ports(self) -> list[int]:
        return [port for port, process in self.processes.items() if process.poll() is None]

    def healthy(self) -> bool:
        try:
            return all(
                redis.Redis(port=port, socket_timeout=1).cluster("info")["cluster_state"] == "ok"
                for port in self.live_ports()
            )
        except redis.RedisError:
            return False

    def replicas_synced(self) -> bool:
        try:
            infos = [redis.Redis(port=p, socket_timeout=1).info("replication") for p in self.ports]
        except redis.RedisError:
            return False
        replicas = [i for i in infos if i.get("role") == "slave"]
        return bool(replicas) and all(i.get("master_link_status") == "up" for i in replicas)

    def kill(self, port: int) -> None:
        self.processes[port].kill()
        self.processes[port].wait()

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()
                process.wait(10)


def start_cluster(
    directory: Path, masters: int = 3, replicas: int = 0, node_timeout_ms: int = 15_000
) -> ClusterNodes:
    server = redis_server_binary()
    cli = shutil.which("redis-cli", path=str(Path(server).parent)) or shutil.which("redis-cli")
    assert cli, "redis-cli is needed to create the cluster (Debian package redis-tools)"
    nodes = ClusterNodes(cluster_ports(masters * (1 + replicas)))
    try:
        for port in nodes.ports:
            node_dir = directory / f"node-{port}"
            node_dir.mkdir(parents=True)
            nodes.processes[port] = subprocess.Popen(
                [
                    server,
                    "--port", str(port),
                    "--bind", "127.0.0.1",
                    "--cluster-enabled", "yes",
                    "--cluster-config-file", str(node_dir / "nodes.conf"),
                    "--cluster-node-timeout", str(node_timeout_ms),
                    "--dir", str(node_dir),
                    "--save", "",
                    "--appendonly", "no",
                    # A replica's first sync starts at once (a replica never synced is never
                    # promoted).
                    "--repl-diskless-sync-delay", "0",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )  # fmt: skip
        for port in nodes.ports:
            wait_for(lambda p=port: _answers(p), timeout=20, what=f"node {port}")  # type: ignore[misc]
        create = [cli, "--cluster", "create", *(f"127.0.0.1:{p}" for p in nodes.ports)]
        subprocess.run(
            [*create, "--cluster-replicas", str(replicas), "--cluster-yes"],
            check=True,
            capture_output=True,
            timeout=60,
        )
        wait_for(nodes.healthy, timeout=30, what="the cluster to be ok")
        if replicas:
            wait_for(nodes.replicas_synced, timeout=30, what="every replica to be in sync")
    except BaseException:
        nodes.stop()
        raise
    return nodes


def cluster_ports(count: int) -> list[int]:
    """Free ports whose cluster bus ports (10,000 higher) are free too."""
    ports: list[int] = []
    while len(ports) < count:
        port = random.randint(20_000, 50_000)
        if port not in ports and _free(port) and _free(port + 10_000):
            ports.append(port)
    return ports


def _free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _answers(port: int) -> bool:
    try:
        return bool(redis.Redis(port=port, socket_timeout=1).ping())
    except redis.RedisError:
        return False
