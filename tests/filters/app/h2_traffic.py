"""HTTP/2 traffic for the tests: two real endpoints (the ``h2`` package, as a browser and a server
would speak) with every byte they send recorded, and hand-made frames for malformed input."""
from __future__ import annotations

import gzip
from typing import Any, Iterable

import h2.config
import h2.connection
import h2.events
from hpack import Encoder

from filters.app.http2 import PREFACE

Wire = list[tuple[bool, bytes]]  # (to_server, bytes) in the order sent

GET_EVIL = [(":method", "GET"), (":path", "/evil/../evil/payload?x=1"), (":scheme", "http"),
            (":authority", "Evil.Example:8080"), ("user-agent", "h2-test/1.0"), ("accept-encoding", "gzip")]
EVIL_PAGE = b"<html>" + b"malicious-marker " * 200 + b"</html>"
UPLOAD = b"MZ\x90\x00" + bytes(range(256)) * 40  # a 10 KiB "executable"


def frame(ftype: int, flags: int, sid: int, payload: bytes = b"", *, length: int | None = None) -> bytes:
    n = len(payload) if length is None else length
    return n.to_bytes(3, "big") + bytes([ftype, flags]) + sid.to_bytes(4, "big") + payload


def block(headers: Iterable[tuple[str | bytes, str | bytes]], encoder: Encoder | None = None) -> bytes:
    """An HPACK header block (a fresh encoder unless one is given: its dynamic table goes on)."""
    return (encoder or Encoder()).encode(list(headers))


SETTINGS_EMPTY = frame(4, 0, 0)


def client_start() -> bytes:
    return PREFACE + SETTINGS_EMPTY


class H2Talk:
    """A client and a server ``h2`` connection wired together; ``wire`` records what each sent."""

    def __init__(self, *, upgrade: bool = False) -> None:
        self.client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.server = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        self.wire: Wire = []
        self.received: list[Any] = []  # the events the endpoints saw
        if not upgrade:
            self.client.initiate_connection()
            self.server.initiate_connection()
            self.pump()

    def pump(self) -> None:
        while True:
            moved = False
            for to_server, src, dst in ((True, self.client, self.server), (False, self.server, self.client)):
                data = src.data_to_send()
                if data:
                    moved = True
                    self.wire.append((to_server, data))
                    for ev in dst.receive_data(data):
                        self.received.append(ev)
                        if isinstance(ev, h2.events.DataReceived) and ev.flow_controlled_length:
                            dst.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            if not moved:
                return

    def _send(self, conn: Any, sid: int, headers: list[tuple[str, str]], body: bytes | None, end: bool) -> None:
        conn.send_headers(sid, headers, end_stream=body is None and end)
        if body is not None:
            step = 16384
            for i in range(0, max(len(body), 1), step):
                last = i + step >= len(body)
                while conn.local_flow_control_window(sid) < len(body[i:i + step]):
                    self.pump()
                conn.send_data(sid, body[i:i + step], end_stream=last and end)
                self.pump()
        self.pump()

    def request(self, sid: int, headers: list[tuple[str, str]], body: bytes | None = None, *, end: bool = True) -> None:
        self._send(self.client, sid, headers, body, end)

    def respond(self, sid: int, headers: list[tuple[str, str]], body: bytes | None = None, *, end: bool = True) -> None:
        self._send(self.server, sid, headers, body, end)


def evil_exchange() -> H2Talk:
    """Prior-knowledge h2c: a GET of /evil answered with a gzip page, then a POST upload."""
    talk = H2Talk()
    talk.request(1, GET_EVIL)
    talk.respond(1, [(":status", "200"), ("content-type", "text/html; charset=utf-8"), ("content-encoding", "gzip")],
                 gzip.compress(EVIL_PAGE))
    talk.request(3, [(":method", "POST"), (":path", "/upload/tool.exe"), (":scheme", "http"),
                     (":authority", "evil.example"), ("content-type", "application/octet-stream"),
                     ("content-length", str(len(UPLOAD)))], UPLOAD)
    talk.respond(3, [(":status", "201"), ("content-length", "0")], b"")
    return talk


def upgrade_exchange() -> tuple[Wire, H2Talk]:
    """``Upgrade: h2c``: the HTTP/1 request, 101, then HTTP/2 with the answer on stream 1 and a
    second request on stream 3."""
    talk = H2Talk(upgrade=True)
    settings = talk.client.initiate_upgrade_connection()
    request = (b"GET /evil/start HTTP/1.1\r\nHost: evil.example\r\nConnection: Upgrade, HTTP2-Settings\r\n"
               b"Upgrade: h2c\r\nHTTP2-Settings: " + settings + b"\r\nUser-Agent: h2-test/1.0\r\n\r\n")
    talk.server.initiate_upgrade_connection(settings)
    switching = b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n"
    wire: Wire = [(True, request)]
    # the server's 101 and its first frames come in one segment, as servers write them
    first = talk.server.data_to_send()
    wire.append((False, switching + first))
    for ev in talk.client.receive_data(first):
        talk.received.append(ev)
    talk.pump()
    talk.respond(1, [(":status", "200"), ("content-type", "text/plain")], b"upgraded malicious-marker body")
    talk.request(3, [(":method", "GET"), (":path", "/second"), (":scheme", "http"), (":authority", "evil.example")])
    talk.respond(3, [(":status", "404")], b"")
    return wire + talk.wire, talk
