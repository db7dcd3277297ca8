"""An HTTP server for the antivirus's tests and the demo, each answer written the way the test needs
(not http.server's, which writes headers and body apart):

- ``GET /NAME``: NAME's bytes from FOLDER, headers and body in one write, so a small file travels
  in the same segment as its headers and the antivirus answers with its block page in its place;
- ``GET /CODING/NAME``: NAME's bytes under ``Content-Encoding`` CODING (``gzip``, ``deflate``, or
  layered ``gzip,deflate``), chunked in 700-byte chunks, each chunk its own write (as a streaming
  server sends them).

``python -m lab.fileserver PORT FOLDER``; with a file in place of FOLDER, every GET is answered
with that file in one write (the demo's infected download, whatever its name).
"""
from __future__ import annotations

import gzip
import socket
import sys
import threading
import zlib
from pathlib import Path

CODINGS = {
    "gzip": (b"gzip", gzip.compress),
    "deflate": (b"deflate", zlib.compress),
    "gzip,deflate": (b"gzip, deflate", lambda d: zlib.compress(gzip.compress(d))),
}


def _request_path(conn: socket.socket) -> str | None:
    buf = b""
    while b"\r\n\r\n" not in buf:
        got = conn.recv(4096)
        if not got:
            return None
        buf += got
    return buf.split(b" ", 2)[1].decode(errors="replace")


def _answer(conn: socket.socket, root: Path) -> None:
    with conn:
        conn.settimeout(10)
        try:
            path = _request_path(conn)
            if path is None:
                return
            parts = path.strip("/").split("/")
            file = root if root.is_file() else root / Path(parts[-1]).name
            if not file.is_file():
                conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                return
            coding = CODINGS.get(parts[0]) if len(parts) == 2 and not root.is_file() else None
            if coding is None:
                body = file.read_bytes()
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\n"
                             b"Connection: close\r\n\r\n%s" % (len(body), body))
                return
            body = coding[1](file.read_bytes())
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Encoding: " + coding[0]
                         + b"\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
            for i in range(0, len(body), 700):
                piece = body[i:i + 700]
                conn.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
            conn.sendall(b"0\r\n\r\n")
        except OSError:  # the box cut the connection (an infected file)
            pass


def serve(port: int, root: Path) -> None:
    srv = socket.create_server(("0.0.0.0", port))
    while True:
        conn, _ = srv.accept()
        threading.Thread(target=_answer, args=(conn, root), daemon=True).start()


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit("usage: python -m lab.fileserver PORT FOLDER|FILE")
    serve(int(sys.argv[1]), Path(sys.argv[2]))
