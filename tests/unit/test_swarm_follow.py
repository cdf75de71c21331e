"""The Swarm backend's live log follow against a local HTTP server that streams frames
forever, as the manager does for a running task: closing follows while other requests
share the client's connection pool must never hand one connection to two requests."""

from __future__ import annotations

import struct
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import docker
import pytest

from runner.backends.swarm import _Follow


class _Endless(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        if "/logs" not in self.path:
            body = b'{"ApiVersion": "1.41"}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/vnd.docker.multiplexed-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            for n in range(1_000_000):
                line = f"2026-12-03T20:00:00.{n:09d}Z line {n}\n".encode()
                frame = struct.pack(">BxxxL", 1, len(line)) + line
                self.wfile.write(b"%x\r\n%s\r\n" % (len(frame), frame))
                self.wfile.flush()
                time.sleep(0.001)
        except OSError:
            pass

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def api() -> Iterator[docker.APIClient]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Endless)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    client = docker.APIClient(base_url=f"tcp://127.0.0.1:{server.server_port}", version="1.41")
    try:
        yield client
    finally:
        client.close()
        server.shutdown()
        server.server_close()


class _Backend:
    def __init__(self, api: docker.APIClient) -> None:
        self._api = api


def test_closing_follows_never_shares_a_connection_between_two_requests(
    api: docker.APIClient,
) -> None:
    failures: list[BaseException] = []
    stop = threading.Event()

    def others() -> None:  # the poller and the other tasks' reads, on the same client
        while not stop.is_set():
            try:
                api.get(f"{api.base_url}/v1.41/version").raise_for_status()
            except BaseException as exc:  # any failure is the finding
                failures.append(exc)

    # the race (a connection closed by one thread after the other pooled it) is narrow:
    # the code before the fix failed about once in 1,500 follows closed
    threads = [threading.Thread(target=others, daemon=True) for _ in range(6)]
    for thread in threads:
        thread.start()
    try:
        for _ in range(1500):
            follow = _Follow(_Backend(api), "task")  # type: ignore[arg-type]
            deadline = time.monotonic() + 5
            while not follow.take(timeout=0.1) and time.monotonic() < deadline:
                pass
            follow.close()
            assert not follow._thread.is_alive(), "closing did not wake the reader"
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=10)
    assert failures == [], f"{len(failures)} requests failed, first: {failures[0]!r}"
