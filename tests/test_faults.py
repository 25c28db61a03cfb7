"""The fault proxy does what the recovery tests rely on."""

from __future__ import annotations

import socket

import pytest

from tests.faults import FaultProxy


def _answers(proxy: FaultProxy) -> bytes:
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
        sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
        return sock.recv(64)


def test_a_proxy_that_stops_accepting_lets_connects_time_out_until_it_starts_again(
    proxy: FaultProxy,
) -> None:
    assert _answers(proxy).startswith(b"HTTP/")
    proxy.stop_accepting()
    for _ in range(3):
        with pytest.raises(TimeoutError):
            socket.create_connection(("127.0.0.1", proxy.port), timeout=1).close()
    proxy.start_accepting()
    assert _answers(proxy).startswith(b"HTTP/")
