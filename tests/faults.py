"""A fault-injecting TCP proxy on loopback, put between workers and the S3 server.

It forwards bytes, or on command (or at random, for the chaos suite): stalls them, resets
connections, or answers HTTP 503. It stands in for a flaky network and a sick object store,
which cannot be had otherwise on one machine.
"""

from __future__ import annotations

import contextlib
import random
import select
import socket
import struct
import threading
import time
from collections import Counter
from dataclasses import dataclass

_BODY_503 = (
    b"<?xml version='1.0' encoding='UTF-8'?>"
    b"<Error><Code>SlowDown</Code><Message>injected fault</Message></Error>"
)
_RESPONSE_503 = (
    b"HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\nConnection: close\r\n"
    + f"Content-Length: {len(_BODY_503)}\r\n\r\n".encode()
    + _BODY_503
)


@dataclass
class RandomFaults:
    """Per-connection fault odds for the chaos suite."""

    reset: float = 0.0
    error: float = 0.0
    stall: float = 0.0
    # How long a stalled connection holds its bytes (longer than the client's read timeout).
    stall_seconds: float = 3.0


def _hard_close(sock: socket.socket) -> None:
    """Close with RST rather than FIN."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()


def _listen(port: int, backlog: int) -> socket.socket:
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(backlog)
    return listener


class FaultProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.listener = _listen(0, 128)
        self.port = int(self.listener.getsockname()[1])
        # While not accepting: a full queue that drops new connections' SYNs, and its fillers.
        self._refusing: list[socket.socket] = []
        self.url = f"http://127.0.0.1:{self.port}"
        # "pass", "stall" (hold all bytes), "reset" (refuse every connection), "error" (503)
        self.mode = "pass"
        self.random = RandomFaults()
        self.injected: Counter[str] = Counter()
        self.connections = 0
        self._flowing = threading.Event()
        self._flowing.set()
        # While cleared, requests that start with PUT are held; counted in held_puts.
        self._puts_flowing = threading.Event()
        self._puts_flowing.set()
        self.held_puts = 0
        # While set, If-None-Match headers are renamed on their way: a store that ignores them.
        self.strip_conditional_writes = False
        self._closed = False
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._rng = random.Random(20261124)
        threading.Thread(target=self._accept_loop, daemon=True).start()

    # control ---------------------------------------------------------------------------------

    def stall(self) -> None:
        self.mode = "stall"
        self._flowing.clear()

    def resume(self) -> None:
        self.mode = "pass"
        self._flowing.set()

    def hold_puts(self) -> None:
        """Hold uploads (and only uploads) until release_puts: a worker stuck mid-upload."""
        self._puts_flowing.clear()

    def release_puts(self) -> None:
        self._puts_flowing.set()

    def stop_accepting(self) -> None:
        """From now on connections are never accepted (their SYNs go unanswered, as behind a
        firewall that drops them): a client's connect can only time out. Open ones are reset."""
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accept loop, which ends
        self.listener.close()
        full = _listen(self.port, 0)
        self._refusing = [full]
        # The kernel queues one connection beyond a backlog of 0, then drops the SYNs.
        for _ in range(8):
            filler = socket.socket()
            filler.setblocking(False)
            self._refusing.append(filler)
            filler.connect_ex(("127.0.0.1", self.port))
            if not select.select([], [filler], [], 0.5)[1]:
                break  # its SYN went unanswered: the queue is full
            assert filler.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
        else:
            raise AssertionError("the listen queue never filled")
        self.reset_all()

    def start_accepting(self) -> None:
        for sock in self._refusing:
            _hard_close(sock)
        self._refusing = []
        self.listener = _listen(self.port, 128)
        threading.Thread(target=self._accept_loop, daemon=True).start()

    def reset_all(self) -> None:
        """Reset every open connection now."""
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            _hard_close(sock)
        self.injected["reset"] += len(sockets)

    def close(self) -> None:
        self._closed = True
        self._flowing.set()
        self._puts_flowing.set()
        with contextlib.suppress(OSError):
            self.listener.close()
        for sock in self._refusing:
            _hard_close(sock)
        self.reset_all()

    # plumbing --------------------------------------------------------------------------------

    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _pick_fault(self) -> str | None:
        if self.mode in ("reset", "error"):
            return self.mode
        roll = self._rng.random()
        for name, odds in (
            ("reset", self.random.reset),
            ("error", self.random.error),
            ("stall", self.random.stall),
        ):
            if roll < odds:
                return name
            roll -= odds
        return None

    def _serve(self, client: socket.socket) -> None:
        fault = self._pick_fault()
        if fault == "reset" and self.mode == "reset":
            self.injected["reset"] += 1
            _hard_close(client)
            return
        if fault == "error":
            self.injected["error"] += 1
            self._answer_503(client)
            return
        try:
            upstream = socket.create_connection(self.target, timeout=5)
        except OSError:
            _hard_close(client)
            return
        upstream.settimeout(None)
        with self._lock:
            self._sockets.update((client, upstream))
        stall_until = 0.0
        reset_after = None
        if fault == "stall":
            self.injected["stall"] += 1
            stall_until = time.monotonic() + self.random.stall_seconds
        elif fault == "reset":
            self.injected["reset"] += 1
            reset_after = self._rng.randint(0, 64 * 1024)
        threading.Thread(
            target=self._pump, args=(upstream, client, 0.0, None, False), daemon=True
        ).start()
        self._pump(client, upstream, stall_until, reset_after, True)

    def _pump(
        self,
        src: socket.socket,
        dst: socket.socket,
        stall_until: float,
        reset_after: int | None,
        from_client: bool,
    ) -> None:
        sent = 0
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                self._flowing.wait()
                if from_client and data.startswith(b"PUT ") and not self._puts_flowing.is_set():
                    self.held_puts += 1
                    self._puts_flowing.wait()
                if from_client and self.strip_conditional_writes:
                    data = data.replace(b"If-None-Match:", b"X-Ignored-Cnd:")
                delay = stall_until - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                if reset_after is not None and sent + len(data) > reset_after:
                    _hard_close(src)
                    _hard_close(dst)
                    return
                dst.sendall(data)
                sent += len(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_WR)
            with self._lock:
                self._sockets.discard(src)

    def _answer_503(self, client: socket.socket) -> None:
        client.settimeout(5)
        try:
            seen = b""
            while b"\r\n\r\n" not in seen and len(seen) < 65536:
                chunk = client.recv(65536)
                if not chunk:
                    break
                seen += chunk
            client.sendall(_RESPONSE_503)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                client.close()
