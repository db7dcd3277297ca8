"""A verdict lookup service for the deferred-verdict tests: answers by the queried port.

8081 -> allow at once, 8082 -> block at once, 8083 -> allow after 3 s (slower than the hold).
"""
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

ANSWERS = {"8081": (0.0, b"allow"), "8082": (0.0, b"block"), "8083": (3.0, b"allow")}


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802
        port = parse_qs(urlparse(self.path).query).get("port", [""])[0]
        delay, body = ANSWERS.get(port, (0.0, b"allow"))
        time.sleep(delay)
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


ThreadingHTTPServer(("0.0.0.0", int(sys.argv[1])), Handler).serve_forever()
