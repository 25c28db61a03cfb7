"""A TCP proxy that delays every byte by a fixed time in each direction, as a network link to a
distant object store does. Chunks keep their order and are not held back by one another, so
only latency is added, not a bandwidth limit.

    .venv/bin/python -m bench.delay_proxy --listen 9100 --target 127.0.0.1:9000 --delay 0.02
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib


async def _carry(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def deliver() -> None:
        while True:
            due, data = await queue.get()
            if (wait := due - loop.time()) > 0:
                await asyncio.sleep(wait)
            if not data:
                break
            writer.write(data)
            await writer.drain()
        with contextlib.suppress(OSError):
            writer.write_eof()

    delivering = asyncio.create_task(deliver())
    try:
        while data := await reader.read(256 * 1024):
            queue.put_nowait((loop.time() + delay, data))
    except OSError:
        pass
    queue.put_nowait((loop.time() + delay, b""))
    with contextlib.suppress(OSError):
        await delivering


async def _serve(listen: int, host: str, port: int, delay: float) -> None:
    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            server_r, server_w = await asyncio.open_connection(host, port)
        except OSError:
            client_w.close()
            return
        await asyncio.gather(_carry(client_r, server_w, delay), _carry(server_r, client_w, delay))
        for w in (client_w, server_w):
            w.close()

    server = await asyncio.start_server(handle, "127.0.0.1", listen)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", type=int, required=True)
    parser.add_argument("--target", required=True, help="host:port")
    parser.add_argument("--delay", type=float, required=True, help="seconds, each direction")
    args = parser.parse_args()
    host, port = args.target.rsplit(":", 1)
    asyncio.run(_serve(args.listen, host, int(port), args.delay))


if __name__ == "__main__":
    main()
