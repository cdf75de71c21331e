"""`runner serve` listens on a socket whose connections send small writes at once: the
JSON of a page follows its headers in a second write, and without TCP_NODELAY a
keep-alive client's delayed ACK held it 40 ms (every request after the first)."""

from __future__ import annotations

import asyncio
import socket

import pytest

from runner.server.serve import listen


def _accepted_nodelay(listener: socket.socket) -> int:
    """TCP_NODELAY of a connection asyncio accepted on `listener`, as uvicorn's are."""

    async def main() -> int:
        seen: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        def connected(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            sock = writer.get_extra_info("socket")
            seen.set_result(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()

        server = await asyncio.start_server(connected, sock=listener)
        host, port = listener.getsockname()[:2]
        _, writer = await asyncio.open_connection(host, port)
        try:
            return await asyncio.wait_for(seen, timeout=10)
        finally:
            writer.close()
            server.close()

    return asyncio.run(main())


def test_accepted_connections_have_nodelay() -> None:
    listener = listen("127.0.0.1", 0)
    try:
        assert _accepted_nodelay(listener) != 0
    finally:
        listener.close()


def test_a_port_in_use_or_an_unknown_host_is_an_os_error() -> None:
    """What `serve` turns into "cannot listen on HOST:PORT" (a usage error, exit 2)."""
    taken = listen("127.0.0.1", 0)
    try:
        with pytest.raises(OSError):
            listen("127.0.0.1", taken.getsockname()[1])
        with pytest.raises(OSError):
            listen("no-such-host.invalid", 0)
    finally:
        taken.close()
