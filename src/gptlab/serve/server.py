"""Running the app under uvicorn: graceful SIGTERM, a port chosen by the OS, a thread.

On SIGTERM or Ctrl-C uvicorn stops accepting connections and waits for open ones; we also
tell the app (`ServerState.begin_shutdown`), which lets running completions go on for
`drain_s` seconds and then ends them with an error event. uvicorn's own graceful timeout
backs that up, so the process is gone within `drain_s + 10` seconds.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

import uvicorn
from starlette.applications import Starlette

from gptlab.errors import GptlabError

logger = logging.getLogger(__name__)

# How often Python hands the GIL between threads (its default is 5 ms). Generation threads
# hold it between torch calls; a shorter interval lets the event loop answer /health and
# turn away excess requests (429) promptly while they run.
GIL_SWITCH_INTERVAL_S = 0.0005


class GracefulServer(uvicorn.Server):
    """uvicorn.Server that also starts the app's own drain on SIGTERM / SIGINT."""

    def __init__(self, config: uvicorn.Config, app: Starlette) -> None:
        super().__init__(config)
        self.gptlab_app = app
        self.loop: asyncio.AbstractEventLoop | None = None

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self.loop = asyncio.get_running_loop()
        await super().serve(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        self.begin_shutdown()

    def begin_shutdown(self) -> None:
        """Thread-safe: ask the app to drain and uvicorn to exit."""
        self.should_exit = True
        if self.loop is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self.gptlab_app.state.gptlab.begin_shutdown)


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on `host:port` (port 0: one the OS picks)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto=IPPROTO_TCP: asyncio sets TCP_NODELAY on accepted connections only when the
    # socket says it is TCP; without it each keep-alive response waits for a delayed ACK
    # (Nagle's algorithm).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise GptlabError(
            f"cannot listen on {host}:{port} ({exc.strerror}): pick another --port or --host"
        ) from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def make_server(app: Starlette, log_level: str = "warning") -> GracefulServer:
    drain_s = app.state.gptlab.settings.drain_s
    config = uvicorn.Config(app, log_level=log_level, access_log=False, lifespan="off",
                            timeout_graceful_shutdown=int(drain_s) + 5)
    return GracefulServer(config, app)


def run_server(
    app: Starlette,
    host: str = "127.0.0.1",
    port: int = 8000,
    on_ready: Callable[[str], None] | None = None,
    log_level: str = "warning",
) -> None:
    """Serve `app` until SIGTERM / SIGINT; `on_ready(url)` is called once listening.

    Owns the process: it also sets the interpreter's GIL switch interval."""
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
    sock = bind_socket(host, port)
    server = make_server(app, log_level)
    if on_ready is not None:
        on_ready(url_of(sock))
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()


@contextmanager
def serve_in_thread(app: Starlette, host: str = "127.0.0.1") -> Iterator[str]:
    """Serve `app` on a free port in a background thread; yields its base URL (tests,
    benchmarks). The server drains and stops when the block ends."""
    sock = bind_socket(host, 0)
    server = make_server(app)
    thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])), daemon=True)
    thread.start()
    try:
        while not server.started and thread.is_alive():
            threading.Event().wait(0.01)
        yield url_of(sock)
    finally:
        server.begin_shutdown()
        thread.join(timeout=30)
        sock.close()
