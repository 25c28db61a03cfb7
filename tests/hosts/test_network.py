"""The test hosts themselves: they reach each other, and a fault drops packets as said."""

from __future__ import annotations

import subprocess
import sys

from tests.hosts.network import PREFIX, Host, Network

# Connects to HOST:PORT with a deadline; prints "ok" or the error's name.
_CONNECT = """
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=1.5).close()
    print("ok")
except OSError as exc:
    print(type(exc).__name__)
"""


def _listen(host: Host, port: int) -> subprocess.Popen[bytes]:
    code = (
        f"import socket; s=socket.socket(); s.bind(('0.0.0.0', {port})); s.listen(); "
        "print('up', flush=True)\nwhile True: s.accept()"
    )
    server = subprocess.Popen(
        [*host.launcher(), sys.executable, "-c", code], stdout=subprocess.PIPE
    )
    assert server.stdout is not None
    assert server.stdout.readline().strip() == b"up"
    return server


def _connect(source: Host, target: Host, port: int) -> str:
    done = subprocess.run(
        [*source.launcher(), sys.executable, "-c", _CONNECT, target.address, str(port)],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    return done.stdout.strip()


def test_hosts_reach_each_other_and_a_fault_drops_packets_silently(network: Network) -> None:
    a, b, c = network.add("a"), network.add("b"), network.add("c")
    servers = [_listen(a, 7000), _listen(b, 7000), _listen(c, 7000)]
    try:
        assert _connect(a, b, 7000) == "ok"
        assert _connect(a, c, 7000) == "ok"
        # a loses b both ways: a connect times out (no reset), c is still reached.
        a.drop([b])
        assert _connect(a, b, 7000) == "TimeoutError"
        assert _connect(a, c, 7000) == "ok"
        # One way only: a's packets reach b, b's replies never come back.
        a.drop([b], inbound=True, outbound=False)
        assert _connect(a, b, 7000) == "TimeoutError"
        assert _connect(b, a, 7000) == "TimeoutError"  # b's SYNs are dropped at a
        assert _connect(c, a, 7000) == "ok"
        # Isolated: nothing in or out.
        a.drop()
        assert _connect(a, c, 7000) == "TimeoutError"
        a.heal()
        assert _connect(a, b, 7000) == "ok"
        assert _connect(a, c, 7000) == "ok"
    finally:
        for server in servers:
            server.kill()
            server.wait()


def test_closing_the_network_removes_every_namespace(network: Network) -> None:
    network.add("a")
    network.add("b")
    network.close()
    listed = subprocess.run(
        ["ip", "netns", "list"], capture_output=True, text=True, check=True
    ).stdout  # fmt: skip
    assert PREFIX + network.tag not in listed
