"""Small on the wire, large in memory: what the parsers and reassembly of one worker hold stays bounded.

Each test builds an amplifying input (gzip bombs, pipelined requests, header floods, DNS pointer
loops, TLS length claims, SMTP long lines and DATA, out-of-order segments with gaps) and measures
both the parsers' own accounting (``held_bytes``, ``AppLayer.held_total``, ``pending_total``) and
what Python really allocated (tracemalloc). The figures in the comments were measured here.
"""
from __future__ import annotations

import gzip
import struct
import tracemalloc
import zlib
from contextlib import contextmanager

from filters.app.dns import DnsTcpParser, parse_dns
from filters.app.layer import AppLayer
from filters.app.smtp import MAX_LINE_BUFFER, SmtpParser
from filters.app.tls import MAX_HANDSHAKE, TlsParser
from filters.engine import Action, Engine
from filters.flow import FlowTable
from filters.packet import PROTO_TCP
from filters.pipeline import Pipeline
from filters.stream import SEGMENT_OVERHEAD
from tests.filters.factories import send, tflow, tpacket

MiB = 1 << 20
BODY = b"A" * (100 * 1024)  # inflates to the default body limit
GZ = gzip.compress(BODY, 9)  # ~130 bytes on the wire


@contextmanager
def traced():
    """Peak and retained bytes allocated inside the block (tracemalloc)."""
    tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    out: dict[str, int] = {}
    try:
        yield out
    finally:
        cur, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        out["peak"], out["retained"] = peak - base, cur - base


def post(i: int) -> bytes:
    return (b"POST /u%d HTTP/1.1\r\nHost: a\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % (i, len(GZ))) + GZ


def chunks(data: bytes, size: int = 1448):
    for i in range(0, len(data), size):
        yield data[i:i + size]


def drive(app: AppLayer, flow, to_server: bool, data: bytes, offset: int = 0) -> int:
    """Feed like the pipeline does: a chunk, its events through the engines, then ``inspected``."""
    n = 0
    for piece in chunks(data):
        n += len(app.on_chunk(flow, to_server, piece, offset))
        offset += len(piece)
        app.inspected(flow)
    return n


# -- HTTP ------------------------------------------------------------------------------------------------


def test_pipelined_gzip_posts_do_not_accumulate():
    """The reviewer's case: 2,000 pipelined gzip POSTs, 100 KiB inflated each (held 104.6 MiB before)."""
    app = AppLayer()
    flow = tflow()
    wire = b"".join(post(i) for i in range(2000))
    with traced() as mem:
        drive(app, flow, True, wire)
        held = app.held_total
    # 64 wait for a response at most; their bodies went once inspected: measured ~0.2 MiB held
    assert held < 1 * MiB, held
    assert mem["retained"] < 4 * MiB and mem["peak"] < 8 * MiB, mem
    assert app.state(flow).parser.counters.get("http.too_many_transactions")


def test_answered_pipelined_gzip_posts_stay_bounded():
    """Every request answered, so all 400 are parsed and inflated: bodies never pile up."""
    app = AppLayer()
    flow = tflow()
    resp = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
    req_off = resp_off = 0
    peak_held = 0
    with traced() as mem:
        for batch in range(8):
            reqs = b"".join(post(batch * 50 + i) for i in range(50))
            drive(app, flow, True, reqs, req_off)
            req_off += len(reqs)
            peak_held = max(peak_held, app.held_total)
            drive(app, flow, False, resp * 50, resp_off)
            resp_off += len(resp) * 50
    parser = app.state(flow).parser
    assert parser._next_id == 400 and not parser.counters.get("http.too_many_transactions")
    # one 1448-byte chunk holds ~7 requests: ~0.7 MiB decoded at most before they are inspected
    assert peak_held < 2 * MiB, peak_held
    assert mem["peak"] < 12 * MiB, mem


def test_layered_gzip_bomb_is_cut_at_the_body_limit():
    inner = gzip.compress(b"\0" * (64 * MiB), 9)
    bomb = gzip.compress(inner, 9)  # ~2 kB on the wire, 64 MiB inside two layers
    app = AppLayer()
    flow = tflow()
    head = b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip, gzip\r\nContent-Length: %d\r\n\r\n" % len(bomb)
    drive(app, flow, True, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    with traced() as mem:
        events = []
        for piece in chunks(head + bomb):
            events += app.on_chunk(flow, False, piece, 0)
        parser = app.state(flow).parser
        during = parser.held_bytes()
        app.inspected(flow)
    tx = events[-1][1].tx
    assert tx.response_body_truncated and "http.body_limit" in tx.anomalies
    assert during < 2 * len(BODY) + 256 * 1024  # the body twice (buffer and copy) and two inflaters
    assert app.held_total < 64 * 1024  # released once inspected
    assert mem["peak"] < 4 * MiB, mem


def test_header_floods_are_capped():
    """1,024 tiny headers per request (~40x in Python objects), pipelined without answers."""
    app = AppLayer()
    flow = tflow()
    req = b"GET / HTTP/1.1\r\n" + b"".join(b"h%d:x\r\n" % i for i in range(1024)) + b"\r\n"
    with traced() as mem:
        drive(app, flow, True, req * 80)
        held = app.held_total
    parser = app.state(flow).parser
    # 64 waiting requests at most (each ~75 kB of header objects): measured ~5 MiB by both counts
    assert held < 8 * MiB, held
    assert mem["retained"] < 2 * held + MiB, (mem, held)
    big = b"GET / HTTP/1.1\r\n" + b"".join(b"h%d:%s\r\n" % (i, b"v" * 17000) for i in range(100)) + b"\r\n"
    p2 = AppLayer()
    f2 = tflow()
    drive(p2, f2, True, big)
    assert "http.request_headers_too_large" in p2.state(f2).parser.transactions[0].anomalies
    assert p2.held_total < 256 * 1024 + 64 * 1024 + 4 * 18000
    assert parser.held_bytes() == held


# -- DNS, TLS, SMTP --------------------------------------------------------------------------------------


def test_dns_compression_pointers_cannot_amplify():
    header = struct.pack("!HHHHHH", 1, 0x8180, 1, 256, 0, 0)
    question = b"\x3f" + b"a" * 63 + b"\x3f" + b"b" * 63 + b"\x3f" + b"c" * 63 + b"\x3d" + b"d" * 61 + b"\x00" + b"\x00\x01\x00\x01"
    loop = b"\xc0\x0c"  # every answer name points at the 255-byte question name
    answers = (loop + struct.pack("!HHIH", 5, 1, 60, 2) + b"\xc0\x0c") * 256
    msg = header + question + answers
    self_loop = struct.pack("!HHHHHH", 2, 0, 1, 0, 0, 0) + b"\xc0\x0c\x00\x01\x00\x01"
    with traced() as mem:
        parsed = parse_dns(msg, False)
        assert parse_dns(self_loop, True) is None or parse_dns(self_loop, True).truncated
        del parsed
    assert mem["peak"] < 2 * MiB and mem["retained"] < 64 * 1024, mem
    tcp = DnsTcpParser()
    tcp.feed(False, struct.pack("!H", 65535) + b"\x00" * 60000)  # a message that never completes
    assert tcp.held_bytes() <= 65537


def test_tls_length_claims_are_not_buffered():
    parser = TlsParser()
    record = b"\x16\x03\x01\x40\x00"  # a handshake record of 16 KiB
    claim = b"\x01\xff\xff\xff"  # a ClientHello claiming 16 MiB
    parser.feed(True, record + claim + b"\x00" * (0x4000 - 4))
    for _ in range(64):
        parser.feed(True, record + b"\x00" * 0x4000)
    assert parser.held_bytes() <= 2 * (MAX_HANDSHAKE + 5)
    assert "tls.handshake_too_long" in parser.anomalies
    huge = TlsParser()
    huge.feed(True, b"\x16\x03\x01\xff\xff" + b"\x01")
    assert huge.failed and huge.held_bytes() == 0


def test_smtp_long_lines_and_huge_data_are_capped():
    parser = SmtpParser(max_message=1 * MiB)
    parser.feed(False, b"220 mx ESMTP\r\n")
    parser.feed(True, b"EHLO x" + b"A" * (4 * MiB))  # a command line that never ends
    assert parser.held_bytes() <= MAX_LINE_BUFFER + 1024
    parser.feed(True, b"\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n")
    parser.feed(False, b"250 ok\r\n250 ok\r\n250 ok\r\n354 go\r\n")
    for _ in range(80):
        parser.feed(True, b"x" * 65536 + b"\r\n")
    assert parser.held_bytes() <= 1 * MiB + MAX_LINE_BUFFER + 4096
    assert parser.overflow_bytes > 0


# -- reassembly --------------------------------------------------------------------------------------------


def test_out_of_order_segments_with_gaps_stay_under_the_table_cap():
    cap = 1 * MiB
    table = FlowTable(max_pending_total=cap, memcap=0)
    with traced() as mem:
        for port in range(10):  # (buffering is quadratic in segments per stream: kept small here)
            handshake_flow(table, port)
            for k in range(1000):  # 1-byte segments, each after a hole: nothing is ever in order
                send(table, 2 + 2 * k, b"x", sport=40000 + port)
        total = table.pending_total
    assert total <= cap
    # real memory per buffered byte is ~100x for 1-byte segments: the overhead is in the count
    assert mem["retained"] < 2 * cap, (mem, total)


def handshake_flow(table: FlowTable, port: int) -> None:
    from tests.filters.factories import feed
    from filters.packet import ACK, SYN
    feed(table, tpacket(tcp_flags=SYN, seq=999, ack=0, sport=40000 + port))
    feed(table, tpacket(reply=True, tcp_flags=SYN | ACK, seq=4999, ack=1000, dport=40000 + port))
    feed(table, tpacket(tcp_flags=ACK, seq=1000, ack=5000, sport=40000 + port))


# -- the worker's budget -------------------------------------------------------------------------------


class Taker(Engine):
    """Wants every flow's HTTP requests and never lets go: the flows' parked bytes pile up."""

    name = "taker"

    def on_http_request(self, flow, ev):
        return None

    def needs_more(self, flow):
        return True


def test_the_worker_memcap_cuts_the_largest_holders():
    records: list[dict] = []
    memcap = 4 * MiB
    table = FlowTable(memcap=memcap)
    pipe = Pipeline([Taker()], table, emit=records.append)
    huge_headers = b"GET / HTTP/1.1\r\n" + b"".join(b"h%d:x\r\n" % i for i in range(1024)) + b"\r\n"
    worst = 0
    with traced() as mem:
        for port in range(12):  # each flow parks ~64 requests with 1,024 headers: ~5 MiB per flow
            sport = 41000 + port
            pipe.process(tpacket(tcp_flags=0x02, seq=0, ack=0, sport=sport), None)
            pipe.process(tpacket(reply=True, tcp_flags=0x12, seq=0, ack=1, dport=sport), None)
            seq = 1
            for piece in chunks(huge_headers * 8, 16000):
                pipe.process(tpacket(tcp_flags=0x18, seq=seq, ack=1, sport=sport, payload=piece), None)
                seq += len(piece)
                worst = max(worst, pipe.app.held_total + table.pending_total)
    cut = [r for r in records if r.get("event_type") == "anomaly"]
    assert cut and all(r["anomaly"]["event"] == "memcap_exceeded" for r in cut)
    assert pipe.counters["memcap.cut"] == len(cut) and pipe.app.counters["app.memcap_cut"] == len(cut)
    assert worst <= memcap + 2 * MiB  # over the cap only by what one packet's parsing adds
    assert mem["retained"] < 3 * memcap, mem


def test_the_drop_policy_drops_a_cut_flow():
    table = FlowTable(memcap=256 * 1024, memcap_policy="drop")
    pipe = Pipeline([Taker()], table)
    req = b"GET / HTTP/1.1\r\n" + b"".join(b"h%d:x\r\n" % i for i in range(1024)) + b"\r\n"
    pipe.process(tpacket(tcp_flags=0x02, seq=0, ack=0), None)
    pipe.process(tpacket(reply=True, tcp_flags=0x12, seq=0, ack=1), None)
    pipe.process(tpacket(tcp_flags=0x18, seq=1, ack=1, payload=req * 8), None)
    flow = next(iter(table))
    assert flow.decided is Action.DROP and pipe.counters["memcap.cut"] == 1
