"""The block page server (agent/dataplane/blockpage.py) under idle and half-sent connections
(security issue, item 2): a connection cap (overall and per client) and a request timeout."""
from __future__ import annotations

import socket
import threading
import time

import pytest

from agent.dataplane.blockpage import BlockPageServer


def describe(host: str) -> tuple[list[str], str]:
    return ["phishing"], "category"


@pytest.fixture
def server():
    srv = BlockPageServer("127.0.0.1", 0, describe, box="test", max_connections=12, max_per_client=4,
                          request_timeout=1.5)
    srv.start()
    yield srv
    srv.stop()


def half_open(port: int, source: str = "127.0.0.1") -> socket.socket:
    """A request that never finishes: the request line and one header, then nothing."""
    s = socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(source, 0))
    s.sendall(b"GET / HTTP/1.1\r\nHost: phish.example\r\n")
    return s


def get(port: int, source: str = "127.0.0.1") -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(source, 0)) as s:
        s.sendall(b"GET /login HTTP/1.1\r\nHost: phish.example\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return data


def closed_within(s: socket.socket, seconds: float) -> bool:
    """True if the server closed (EOF or reset) this connection within ``seconds``."""
    s.settimeout(seconds)
    try:
        return s.recv(1) == b""
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


def wait_for(cond, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return cond()


def test_serves_the_block_page(server):
    answer = get(server.port)
    assert answer.startswith(b"HTTP/1.0 403") and "フィッシング".encode() in answer and b"phish.example" in answer


def test_idle_half_sent_requests_do_not_pile_up_threads(server):
    """The attack: 300 half-sent requests from many addresses. Before: 300 threads that stayed."""
    before = threading.active_count()
    conns = [half_open(server.port, f"127.0.0.{2 + i % 60}") for i in range(300)]
    try:
        assert wait_for(lambda: server.status()["accepted"] + server.status()["rejected"] >= 300, 5)
        st = server.status()
        # never more than the cap at once (a slot freed by a deadline may be taken again on a slow machine)
        assert st["active"] <= 12 and st["rejected"] >= 300 - st["accepted"]
        assert st["rejected"] >= 200
        assert threading.active_count() - before <= 12
        # the connections over the cap were closed at once
        assert sum(closed_within(c, 0.5) for c in conns) >= st["rejected"]
        # the ones holding a slot are closed when their time is up, and their threads end
        t0 = time.monotonic()
        assert all(closed_within(c, 5.0) for c in conns)
        assert time.monotonic() - t0 < 5.0
        assert wait_for(lambda: server.status()["active"] == 0, 3)
        assert wait_for(lambda: threading.active_count() <= before, 3)
        assert server.status()["timed_out"] >= 1
    finally:
        for c in conns:
            c.close()
    assert get(server.port).startswith(b"HTTP/1.0 403")  # and it still serves


def test_one_client_cannot_take_every_slot(server):
    mine = [half_open(server.port, "127.0.0.9") for _ in range(20)]
    try:
        assert wait_for(lambda: server.status()["accepted"] + server.status()["rejected"] >= 20, 5)
        assert server.status()["active"] == 4 and server.status()["rejected"] == 16
        assert get(server.port, "127.0.0.10").startswith(b"HTTP/1.0 403")  # others are still served
    finally:
        for c in mine:
            c.close()


def test_a_trickling_client_is_cut_at_the_deadline(server):
    """A byte every half second keeps each read alive; the connection still ends at the deadline."""
    s = half_open(server.port)
    t0 = time.monotonic()
    cut = False
    try:
        while time.monotonic() - t0 < 6:
            try:
                s.sendall(b"X")
            except OSError:
                cut = True
                break
            if closed_within(s, 0.5):
                cut = True
                break
    finally:
        s.close()
    assert cut and time.monotonic() - t0 < 4


def test_oversized_headers_are_not_buffered(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: phish.example\r\n")
        try:
            for _ in range(64):
                s.sendall(b"X-Pad: " + b"a" * 4000 + b"\r\n")
        except OSError:
            pass  # the server stopped reading: fine
        s.settimeout(5)
        try:
            answer = s.recv(65536)
        except ConnectionResetError:
            answer = b""
    assert answer == b"" or answer.startswith(b"HTTP/1.0")


def test_a_name_sinkholed_by_threat_protection_gets_the_threat_page():
    """ATP and the web filter both offer the page: a listed C&C name shows the threat advice (the PC
    may be infected), a blocked category the policy page; the first engine that blocked it decides."""
    from agent.dataplane.blockpage import first_block
    from filters.engine import BlockPage

    atp = BlockPage(lambda h: (["malware"], "threat", "Emotet") if h == "cnc.example" else ([], "", ""))
    web = BlockPage(lambda h: (["games"], "category") if h == "games.example" else ([], "category"))
    describe = first_block([atp, web])
    assert describe("cnc.example") == (["malware"], "threat", "Emotet")
    assert describe("games.example") == (["games"], "category")
    assert describe("other.example") == ([], "category")
    srv = BlockPageServer("127.0.0.1", 0, describe)
    srv.start()
    try:
        port = srv.httpd.server_address[1]
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: cnc.example\r\n\r\n")
            body = b""
            while chunk := s.recv(65536):
                body += chunk
        assert b"403" in body.split(b"\r\n", 1)[0] and "Emotet".encode() in body
    finally:
        srv.stop()
