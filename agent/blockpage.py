"""The block page server on the box's management address: where DNS-sinkholed names land."""
from __future__ import annotations

import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

from filters.webfilter import page

log = logging.getLogger(__name__)


def make_handler(describe: Callable[[str], tuple[list[str], str]], box: str) -> type[BaseHTTPRequestHandler]:
    """``describe(host)`` gives the blocked categories and the reason for the page."""

    class Handler(BaseHTTPRequestHandler):
        server_version = "VCR-blockpage"

        def do_GET(self) -> None:  # noqa: N802 - http.server naming
            host = (self.headers.get("Host") or "").split(":")[0][:253]
            cats, reason = describe(host)
            body = page.render(host + self.path[:512], cats, reason, box=box).encode("utf-8")
            self.send_response(403)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        do_HEAD = do_GET  # noqa: N815

        def log_message(self, fmt: str, *args: Any) -> None:
            log.debug("blockpage: " + fmt, *args)

    return Handler


class _Server(ThreadingHTTPServer):
    daemon_threads = True


class _Server6(_Server):
    address_family = socket.AF_INET6


class BlockPageServer:
    """A small threaded HTTP server, started and stopped by the daemon."""

    def __init__(self, address: str, port: int, describe: Callable[[str], tuple[list[str], str]], box: str = "") -> None:
        server = _Server6 if ":" in address else _Server
        self.httpd = server((address, port), make_handler(describe, box))
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="blockpage", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
