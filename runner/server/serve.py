"""`runner serve`: the service and its HTTP app under uvicorn, with our own shutdown.

On SIGTERM or Ctrl-C the server drains: triggers stop, new work is refused (503), the API
keeps answering (reads, logs, health saying `stopping`), running executions go on for
`--grace`, then those still running are killed as `runner kill` would (recorded KILLED,
containers and workspaces removed); then uvicorn closes. A second signal kills the
running executions at once; a third leaves without waiting.

uvicorn's own `Server.run` re-raises the signal after its shutdown (the process would end
with -15 before our code could run) and knows no grace period for work outside HTTP, so
`_Server` replaces its signal handling; see docs/design/server.md.
"""

from __future__ import annotations

import signal
import socket
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import uvicorn

from runner import api
from runner.logs import module_logger
from runner.server.app import create_app
from runner.server.service import Service

__all__ = ["ServeOptions", "serve"]

log = module_logger("runner")

GRACEFUL_HTTP_S = 5.0
"""After draining, how long uvicorn waits for open connections (log streams end by
themselves once the executions they follow have ended) before closing them."""


@dataclass(frozen=True)
class ServeOptions:
    host: str
    port: int
    flows_dir: Path
    workers: int
    grace_s: float
    db_url: str | None = None


class _Server(uvicorn.Server):
    """uvicorn, with signals that drain the service before it stops serving."""

    def __init__(
        self, config: uvicorn.Config, drain: Callable[[], None], hurry: Callable[[], None]
    ) -> None:
        super().__init__(config)
        self._drain = drain
        self._hurry = hurry
        self._signals = 0

    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        handled = (signal.SIGINT, signal.SIGTERM)
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        # Unlike uvicorn's: the signal is not raised again; `runner serve` exits 0.

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self._signals += 1
        if self._signals == 1:
            log.info("serve_stopping", signal=signal.Signals(sig).name)
            threading.Thread(target=self._drain_then_exit, name="drain", daemon=True).start()
        elif self._signals == 2:
            log.warning("serve_hurrying", signal=signal.Signals(sig).name)
            threading.Thread(target=self._hurry, name="hurry", daemon=True).start()
        else:
            self.should_exit = self.force_exit = True

    def _drain_then_exit(self) -> None:
        try:
            self._drain()
        finally:
            self.should_exit = True


def serve(options: ServeOptions, *, announce: Callable[[str], None] | None = None) -> None:
    """Run the server until a signal drains and stops it."""
    store = api.open_store(
        options.db_url, notify=lambda text: log.warning("serve_recovery", message=text)
    )
    try:
        backend = api.default_backend()
    except BaseException:
        store.close()
        raise
    service = Service(store, backend, flows_dir=options.flows_dir, workers=options.workers)
    try:
        listener = listen(options.host, options.port)
    except OSError as exc:
        service.close()
        from runner.errors import UsageError

        raise UsageError(
            f"cannot listen on {options.host}:{options.port}: {exc.strerror or exc}"
        ) from None
    try:
        service.start()
        host, port = listener.getsockname()[:2]
        url = f"http://{_url_host(options.host)}:{port}"
        log.info(
            "serve_listening",
            host=host,
            port=port,
            url=url,
            flows=str(options.flows_dir),
            workers=options.workers,
            database=store.url,
        )
        if announce is not None:
            announce(f"runner serve: listening on {url} (API {url}/api/v1, docs {url}/docs)")
        config = uvicorn.Config(
            create_app(service),
            log_config=None,
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=int(GRACEFUL_HTTP_S),
        )
        server = _Server(config, drain=lambda: service.drain(options.grace_s), hurry=service.hurry)
        server.run(sockets=[listener])
    finally:
        listener.close()
        service.close()
        log.info("serve_stopped")


def listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket for uvicorn. asyncio sets TCP_NODELAY on an accepted
    connection only when the socket's `proto` says TCP, and `socket.create_server` leaves
    it 0: without NODELAY, uvicorn's second write (the body after the headers) waits for
    the client's delayed ACK, and every request but the first on a keep-alive connection
    took 40 ms more."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host or None,
        port,
        type=socket.SOCK_STREAM,
        proto=socket.IPPROTO_TCP,
        flags=socket.AI_PASSIVE,
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        if hasattr(socket, "SO_REUSEADDR") and sys.platform != "win32":  # as create_server
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen()
    except BaseException:
        sock.close()
        raise
    return sock


def _url_host(host: str) -> str:
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host
