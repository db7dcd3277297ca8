"""The block page server on the box's management address: where DNS-sinkholed names land.

Bounded (security issue, item 2): one thread per connection, but at most ``max_connections`` at
once and ``max_per_client`` from one address; a connection over either cap is closed at once
(no thread, nothing read). A connection has ``request_timeout`` seconds from accept to the end of
its answer (a reaper thread shuts down the sockets that overstay, so a client trickling a byte
now and then cannot keep its thread either), and reads at most ``MAX_REQUEST_BYTES`` of request
line and headers. Who may reach the port at all is the kernel's business: the box's INPUT policy
(agent/dataplane/ruleset.py, ``VCR-IN``) lets TCP 80 in from the LAN port only.
"""
from __future__ import annotations

import logging
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Sequence

from filters.webfilter import page

log = logging.getLogger(__name__)

MAX_CONNECTIONS = 64  # connections served at once (one thread each)
MAX_PER_CLIENT = 16  # of them from one address (a browser opens about 6)
REQUEST_TIMEOUT = 10.0  # seconds from accept to the end of the answer
MAX_REQUEST_BYTES = 32 * 1024  # request line and headers read at most


class _Limited:
    """The request's rfile, ending (EOF) after ``budget`` bytes: a client cannot make the server
    buffer 100 header lines of 64 KiB each."""

    def __init__(self, raw: Any, budget: int) -> None:
        self.raw = raw
        self.left = budget

    def _cap(self, size: int | None) -> int:
        return self.left if size is None or size < 0 else min(size, self.left)

    def readline(self, size: int | None = -1) -> bytes:
        if self.left <= 0:
            return b""
        line = self.raw.readline(self._cap(size))
        self.left -= len(line)
        return line

    def read(self, size: int | None = -1) -> bytes:
        if self.left <= 0:
            return b""
        data = self.raw.read(self._cap(size))
        self.left -= len(data)
        return data

    def close(self) -> None:
        self.raw.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.raw, name)


def first_block(pages: Sequence[Any]) -> Callable[[str], tuple[Any, ...]]:
    """One ``describe`` over several engines' block pages: the first that blocked the name (a reason
    other than "" and "category", or categories to show) decides; else the last one's answer."""
    def describe(host: str) -> tuple[Any, ...]:
        res: tuple[Any, ...] = ([], "category")
        for p in pages:
            res = tuple(p.describe(host))
            if res[1] in ("threat", "deny list") or (res[1] and res[0]):
                return res
        return res

    return describe


def make_handler(describe: Callable[[str], tuple[Any, ...]], box: str,
                 timeout: float = REQUEST_TIMEOUT) -> type[BaseHTTPRequestHandler]:
    """``describe(host)`` gives the blocked categories and the reason for the page."""

    class Handler(BaseHTTPRequestHandler):
        server_version = "VCR-blockpage"

        def setup(self) -> None:
            self.timeout = timeout + 1.0  # each read and write (a fallback: the reaper ends it at the deadline)
            super().setup()
            self.rfile = _Limited(self.rfile, MAX_REQUEST_BYTES)  # type: ignore[assignment]

        def do_GET(self) -> None:  # noqa: N802 - http.server naming
            host = (self.headers.get("Host") or "").split(":")[0][:253]
            res = describe(host)
            cats, reason = res[0], res[1] or "category"
            threat = res[2] if len(res) > 2 else ""
            body = page.render(host + self.path[:512], cats, reason, box=box, threat=threat).encode("utf-8")
            self.send_response(403)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        do_HEAD = do_GET  # noqa: N815

        def log_message(self, fmt: str, *args: Any) -> None:
            log.debug("blockpage: " + fmt, *args)

    return Handler


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], *,
                 max_connections: int, max_per_client: int, request_timeout: float) -> None:
        self.max_connections = max_connections
        self.max_per_client = max_per_client
        self.request_timeout = request_timeout
        self.lock = threading.Lock()
        self.deadlines: dict[socket.socket, float] = {}
        self.per_client: dict[str, int] = {}
        self.counts = {"accepted": 0, "rejected": 0, "timed_out": 0}
        self.closing = threading.Event()
        super().__init__(address, handler)

    # accept: take a slot or close the connection at once
    def process_request(self, request: Any, client_address: Any) -> None:
        client = str(client_address[0])
        with self.lock:
            full = (len(self.deadlines) >= self.max_connections
                    or self.per_client.get(client, 0) >= self.max_per_client)
            if full:
                self.counts["rejected"] += 1
            else:
                self.counts["accepted"] += 1
                self.deadlines[request] = time.monotonic() + self.request_timeout
                self.per_client[client] = self.per_client.get(client, 0) + 1
        if full:
            log.debug("blockpage: connection from %s closed (%d connections, cap %d/%d per client)", client,
                      len(self.deadlines), self.max_connections, self.max_per_client)
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)  # one thread for this connection
        except BaseException:
            self._release(request, client)
            self.shutdown_request(request)
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._release(request, str(client_address[0]))

    def _release(self, request: Any, client: str) -> None:
        with self.lock:
            if self.deadlines.pop(request, None) is not None:
                n = self.per_client.get(client, 1) - 1
                if n > 0:
                    self.per_client[client] = n
                else:
                    self.per_client.pop(client, None)

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("blockpage: connection from %s ended with an error", client_address, exc_info=True)

    # the reaper: connections past their deadline are shut down, their thread then ends
    def reap(self) -> None:
        interval = max(0.05, min(1.0, self.request_timeout / 4))
        while not self.closing.wait(interval):
            now = time.monotonic()
            with self.lock:
                late = [s for s, d in self.deadlines.items() if d <= now]
                for s in late:
                    self.deadlines[s] = float("inf")  # once
                self.counts["timed_out"] += len(late)
            for s in late:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass  # already closed by its thread


class _Server6(_Server):
    address_family = socket.AF_INET6


class BlockPageServer:
    """A small bounded threaded HTTP server, started and stopped by the daemon."""

    def __init__(self, address: str, port: int, describe: Callable[[str], tuple[Any, ...]], box: str = "", *,
                 max_connections: int = MAX_CONNECTIONS, max_per_client: int = MAX_PER_CLIENT,
                 request_timeout: float = REQUEST_TIMEOUT) -> None:
        server = _Server6 if ":" in address else _Server
        self.httpd = server((address, port), make_handler(describe, box, request_timeout),
                            max_connections=max_connections, max_per_client=max_per_client,
                            request_timeout=request_timeout)
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="blockpage", daemon=True)
        self.reaper = threading.Thread(target=self.httpd.reap, name="blockpage-reaper", daemon=True)

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    def start(self) -> None:
        self.reaper.start()
        self.thread.start()

    def stop(self) -> None:
        self.httpd.closing.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        with self.httpd.lock:
            open_ = list(self.httpd.deadlines)
        for s in open_:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def status(self) -> dict[str, Any]:
        h = self.httpd
        with h.lock:
            active = len(h.deadlines)
        return {"active": active, **h.counts, "max_connections": h.max_connections,
                "max_per_client": h.max_per_client, "request_timeout": h.request_timeout}
