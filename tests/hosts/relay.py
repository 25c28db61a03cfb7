"""Relays byte streams between a TCP address and a Unix socket, either way round:

    python -m tests.hosts.relay --listen tcp:10.1.2.3:9000 --to unix:/tmp/x/s3.sock
    python -m tests.hosts.relay --listen unix:/tmp/x/s3.sock --to tcp:127.0.0.1:4566

With ``--delay S`` every chunk waits S seconds before it is passed on: an object store far
away, so that uploads take long enough for faults to land in the middle of them.

A Unix socket crosses network namespaces (it is a file), so a pair of relays brings a server
on this machine's loopback onto a test host's address, with the test host's network (and its
faults) on the way.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import threading
import time
from typing import Any


def _address(spec: str) -> tuple[int, Any]:
    kind, _, rest = spec.partition(":")
    if kind == "unix":
        return socket.AF_UNIX, rest
    host, _, port = rest.rpartition(":")
    return socket.AF_INET, (host, int(port))


def _pump(source: socket.socket, sink: socket.socket, delay: float) -> None:
    try:
        while data := source.recv(65536):
            time.sleep(delay)
            sink.sendall(data)
        sink.shutdown(socket.SHUT_WR)
    except OSError:
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_RDWR)
            source.shutdown(socket.SHUT_RDWR)


def _serve(client: socket.socket, target: tuple[int, Any], delay: float) -> None:
    upstream = socket.socket(target[0], socket.SOCK_STREAM)
    try:
        upstream.connect(target[1])
    except OSError:
        client.close()
        upstream.close()
        return
    back = threading.Thread(target=_pump, args=(upstream, client, delay), daemon=True)
    back.start()
    _pump(client, upstream, delay)
    back.join()
    client.close()
    upstream.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", required=True)
    parser.add_argument("--to", required=True)
    parser.add_argument("--delay", type=float, default=0.0, help="seconds per chunk, each way")
    args = parser.parse_args()
    family, address = _address(args.listen)
    target = _address(args.to)
    server = socket.socket(family, socket.SOCK_STREAM)
    if family == socket.AF_UNIX:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(address)
    else:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(address)
    server.listen(128)
    print("listening", flush=True)
    while True:
        client, _ = server.accept()
        threading.Thread(target=_serve, args=(client, target, args.delay), daemon=True).start()


if __name__ == "__main__":
    main()
