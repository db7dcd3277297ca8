"""HTTP/2 in clear text (filters/app/http2): prior-knowledge h2c and ``Upgrade: h2c`` read as the
same ``HttpTransaction``s as HTTP/1, malformed frames raising Suricata's http2 anomalies, and the
bounds (streams, header lists, CONTINUATION floods, HPACK tables)."""
from __future__ import annotations

import gzip
import zlib
from typing import Any

import pytest
from hpack import Decoder, Encoder

from filters.app.events import FileEvent, HttpEvent
from filters.app.http2 import PREFACE, Http2Parser
from filters.app.http2.hpack import HpackStream
from filters.app.layer import AppLayer, AppProto, flow_app_proto
from filters.engine import Hook
from tests.filters.app.h2_traffic import (
    EVIL_PAGE,
    GET_EVIL,
    SETTINGS_EMPTY,
    UPLOAD,
    H2Talk,
    block,
    client_start,
    evil_exchange,
    frame,
    upgrade_exchange,
)
from tests.filters.factories import tflow

GET = [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"a.example"), (b":path", b"/")]


def play(wire: list[tuple[bool, bytes]], app: AppLayer | None = None, *, close: bool = True, split: int = 0):
    """Feed (to_server, bytes) as the pipeline does (``split``: in pieces of that size)."""
    app = app or AppLayer()
    flow = tflow()
    off = {True: 0, False: 0}
    out: list[tuple[Hook, Any]] = []
    for to_server, data in wire:
        pieces = [data[i:i + split] for i in range(0, len(data), split)] if split else [data]
        for piece in pieces:
            out += app.on_chunk(flow, to_server, piece, off[to_server])
            off[to_server] += len(piece)
            app.inspected(flow)
    if close:
        out += app.on_close(flow)
    return app, flow, out


def stages(out: list[tuple[Hook, Any]]) -> list[tuple[int, str]]:
    return [(e.tx.tx_id, e.stage) for h, e in out if isinstance(e, HttpEvent)]


def txs(out: list[tuple[Hook, Any]]) -> list[Any]:
    seen: dict[int, Any] = {}
    for _, e in out:
        if isinstance(e, HttpEvent):
            seen.setdefault(id(e.tx), e.tx)
    return list(seen.values())


def parser_with(*frames_: bytes, server: list[bytes] = ()) -> tuple[Http2Parser, list[HttpEvent]]:
    p = Http2Parser()
    events = p.feed(True, client_start() + b"".join(frames_))
    if server:
        events += p.feed(False, SETTINGS_EMPTY + b"".join(server))
    return p, events


# -- prior knowledge ---------------------------------------------------------------------------------


def test_prior_knowledge_get_and_post_are_http_transactions() -> None:
    app, flow, out = play(evil_exchange().wire)
    assert flow_app_proto(flow) == "http2"
    assert stages(out) == [(0, "request_headers"), (0, "request_done"), (0, "response_headers"),
                           (0, "response_body"), (0, "response_done"), (1, "request_headers"),
                           (1, "request_body"), (1, "request_done"), (1, "response_headers"), (1, "response_done")]
    get, post = txs(out)
    assert (get.method, get.uri_raw, get.uri) == (b"GET", b"/evil/../evil/payload?x=1", b"/evil/payload?x=1")
    assert (get.host, get.host_raw) == (b"evil.example", b"Evil.Example:8080")
    assert get.protocol == b"HTTP/2" and get.request_line == b"GET /evil/../evil/payload?x=1 HTTP/2"
    assert get.user_agent == b"h2-test/1.0"
    assert get.request_headers == [(b"user-agent", b"h2-test/1.0"), (b"accept-encoding", b"gzip")]
    assert b":authority: Evil.Example:8080\r\n" in get.request_headers_raw
    assert (get.status_code, get.status_line, get.response_protocol) == (b"200", b"HTTP/2 200", b"HTTP/2")
    assert get.response_content_type == b"text/html"
    assert get.request_done and get.response_done and not get.anomalies
    assert post.method == b"POST" and post.request_content_type == b"application/octet-stream"
    assert post.status_code == b"201" and not post.anomalies
    files = [e for h, e in out if h is Hook.FILE]
    assert [(f.name, f.to_server, f.proto, f.size) for f in files] == [
        (b"payload", False, "http2", len(EVIL_PAGE)), (b"tool.exe", True, "http2", len(UPLOAD))]
    assert files[0].data == EVIL_PAGE  # gzip decoded
    assert files[1].data == UPLOAD and not files[1].truncated
    assert app.held_total == 0  # everything inspected and released, the flow closed


def test_bodies_are_decoded_and_capped_like_http1() -> None:
    talk = H2Talk()
    talk.request(1, GET)
    page = b"x" * 300_000
    talk.respond(1, [(":status", "200"), ("content-encoding", "deflate")], zlib.compress(page))
    _, _, out = play(talk.wire)
    (tx,) = txs(out)
    assert tx.response_body_truncated and "http.body_limit" in tx.anomalies
    files = [e for h, e in out if h is Hook.FILE]
    assert files[0].truncated and files[0].size == 100 * 1024


def test_preface_in_small_segments_is_detected() -> None:
    app, flow, out = play(evil_exchange().wire, split=5)
    assert flow_app_proto(flow) == "http2"
    assert [t.uri for t in txs(out)] == [b"/evil/payload?x=1", b"/upload/tool.exe"]
    assert [e for h, e in out if h is Hook.FILE][1].data == UPLOAD


def test_http2_disabled_leaves_the_flow_undetected() -> None:
    from filters.app.layer import AppSettings

    app = AppLayer(AppSettings(enabled=frozenset({AppProto.HTTP, AppProto.TLS})))
    _, flow, out = play(evil_exchange().wire, app)
    assert flow_app_proto(flow) == "failed" and not out


# -- Upgrade: h2c -------------------------------------------------------------------------------------


def test_upgrade_h2c_makes_the_http1_request_stream_1() -> None:
    wire, _ = upgrade_exchange()
    app, flow, out = play(wire)
    assert flow_app_proto(flow) == "http2"
    assert app.counters["app.http2.upgrade"] == 1
    assert stages(out) == [(0, "request_headers"), (0, "request_done"), (0, "response_headers"), (0, "response_done"),
                           (1, "response_headers"), (1, "response_body"), (1, "response_done"),
                           (2, "request_headers"), (2, "request_done"), (2, "response_headers"), (2, "response_done")]
    h1, stream1, stream3 = txs(out)
    assert h1.protocol == b"HTTP/1.1" and h1.status_code == b"101"
    # stream 1: the HTTP/1 request's fields (inspected as HTTP/1 already: no request events again)
    assert stream1.protocol == b"HTTP/2" and stream1.uri == b"/evil/start" and stream1.host == b"evil.example"
    assert stream1.response_body == b"" and stream1.status_code == b"200"
    assert [e.data for h, e in out if h is Hook.FILE] == [b"upgraded malicious-marker body"]
    assert stream3.uri == b"/second" and stream3.status_code == b"404"
    assert not (h1.anomalies or stream1.anomalies or stream3.anomalies)


def test_upgrade_refused_stays_http1() -> None:
    wire = [(True, b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n"),
            (False, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),
            (True, b"GET /next HTTP/1.1\r\nHost: a\r\n\r\n")]
    _, flow, out = play(wire)
    assert flow_app_proto(flow) == "http"
    assert [t.uri for t in txs(out)] == [b"/", b"/next"]


def test_upgrade_to_something_else_is_not_http2() -> None:
    wire = [(True, b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"),
            (False, b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n\x81\x02hi")]
    app, flow, _ = play(wire)
    assert flow_app_proto(flow) != "http2" and "app.http2.upgrade" not in app.counters


def test_upgrade_with_bad_settings_header_is_an_anomaly() -> None:
    wire, _ = upgrade_exchange()
    first = wire[0][1].replace(b"HTTP2-Settings: ", b"HTTP2-Settings: *", 1)
    _, _, out = play([(True, first)] + wire[1:])
    stream1 = txs(out)[1]
    assert "http2.invalid_http1_settings" in stream1.anomalies


def test_upgrade_without_the_client_preface_is_an_anomaly() -> None:
    p = Http2Parser(upgrade=evil_h1_tx())
    p.feed(True, b"GET / HTTP/1.1\r\n\r\n")
    assert "http2.invalid_client_magic" in p.anomalies


def evil_h1_tx():
    from filters.app.events import HttpTransaction

    tx = HttpTransaction(tx_id=0, method=b"GET", uri=b"/", uri_raw=b"/", protocol=b"HTTP/1.1")
    tx.request_headers = [(b"Upgrade", b"h2c"), (b"HTTP2-Settings", b"AAMAAABkAAQAAP__")]
    return tx


# -- streams -------------------------------------------------------------------------------------------


def test_interleaved_streams_keep_their_bodies_apart() -> None:
    enc = Encoder()
    post = [(b":method", b"POST"), (b":scheme", b"http"), (b":authority", b"a"), (b":path", b"/p")]
    p, events = parser_with(
        frame(1, 0x4, 1, block(post, enc)), frame(1, 0x4, 3, block(post, enc)),
        frame(0, 0, 1, b"one-"), frame(0, 0, 3, b"three-"), frame(0, 0x1, 3, b"end3"), frame(0, 0x1, 1, b"end1"))
    one, three = p.transactions
    assert (one.request_body, three.request_body) == (b"one-end1", b"three-end3")
    assert [e.tx.tx_id for e in events if e.stage == "request_done"] == [1, 0]


def test_padding_priority_trailers_and_cookies() -> None:
    enc = Encoder()
    head = block(GET[:3] + [(b":path", b"/t"), (b"cookie", b"a=1"), (b"cookie", b"b=2")], enc)
    padded = bytes([3]) + b"\x00\x00\x00\x00\x10" + head + b"\x00" * 3  # PADDED + PRIORITY
    trailers = block([(b"x-checksum", b"abc")], enc)
    p, _ = parser_with(frame(1, 0x8 | 0x20 | 0x4, 1, padded), frame(0, 0x8, 1, bytes([2]) + b"data" + b"\0\0"),
                       frame(1, 0x4 | 0x1, 1, trailers))
    (tx,) = p.transactions
    assert tx.uri == b"/t" and tx.cookie == b"a=1; b=2" and tx.request_body == b"data"
    assert tx.header(b"x-checksum") == b"abc" and tx.request_done and not tx.anomalies


def test_informational_responses_are_skipped() -> None:
    enc, senc = Encoder(), Encoder()
    p, events = parser_with(frame(1, 0x5, 1, block(GET, enc)),
                            server=[frame(1, 0x4, 1, block([(b":status", b"103"), (b"link", b"</s.css>")], senc)),
                                    frame(1, 0x5, 1, block([(b":status", b"204")], senc))])
    (tx,) = p.transactions
    assert tx.status_code == b"204" and tx.response_headers == [] and tx.response_done
    assert [e.stage for e in events].count("response_headers") == 1


def test_rst_stream_ends_the_transaction_incomplete() -> None:
    enc = Encoder()
    post = [(b":method", b"POST"), (b":scheme", b"http"), (b":authority", b"a"), (b":path", b"/big")]
    p, events = parser_with(frame(1, 0x4, 1, block(post, enc)), frame(0, 0, 1, b"partial"),
                            frame(3, 0, 1, b"\x00\x00\x00\x08"))
    (tx,) = p.transactions
    assert tx.request_done and tx.request_body_incomplete and tx.request_body == b"partial"
    assert events[-1].stage == "request_done" and not p.streams


def test_server_push_is_read() -> None:
    enc, senc = Encoder(), Encoder()
    pushed = [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"a"), (b":path", b"/pushed.js")]
    p, events = parser_with(frame(1, 0x5, 1, block(GET, enc)), server=[
        frame(5, 0x4, 1, b"\x00\x00\x00\x02" + block(pushed, senc)),
        frame(1, 0x4, 1, block([(b":status", b"200")], senc)), frame(0, 1, 1, b"main"),
        frame(1, 0x4, 2, block([(b":status", b"200")], senc)), frame(0, 1, 2, b"evil-js")])
    main, push = p.transactions
    assert push.uri == b"/pushed.js" and push.response_body == b"evil-js" and main.response_body == b"main"
    assert not any(e.tx is push and e.to_server for e in events)  # the client asked nothing
    assert not (main.anomalies or push.anomalies or p.anomalies)


def test_hpack_dynamic_table_carries_across_blocks_per_direction() -> None:
    talk = H2Talk()
    for sid in (1, 3, 5):
        talk.request(sid, [(":method", "GET"), (":path", f"/r{sid}"), (":scheme", "http"), (":authority", "same.example"),
                           ("x-long-custom-header", "value-repeated-and-indexed")])
        talk.respond(sid, [(":status", "200"), ("x-server", "indexed-too")], b"")
    _, _, out = play(talk.wire)
    got = txs(out)
    assert [t.uri for t in got] == [b"/r1", b"/r3", b"/r5"]
    assert all(t.host == b"same.example" and t.header(b"x-long-custom-header") == b"value-repeated-and-indexed"
               and t.header(b"x-server", response=True) == b"indexed-too" for t in got)


# -- anomalies -------------------------------------------------------------------------------------------


def _anomalies(p: Http2Parser) -> set[str]:
    return set(p.anomalies) | {a for tx in p.transactions for a in tx.anomalies}


@pytest.mark.parametrize(("frames_", "server", "expected"), [
    ([frame(6, 0, 0, b"1234567")], [], "http2.invalid_frame_length"),  # PING of 7 bytes
    ([frame(4, 0, 0, b"\x00\x01\x00")], [], "http2.invalid_frame_length"),  # SETTINGS not a multiple of 6
    ([frame(4, 0, 0, b"\x00\x05\x00\x00\x00\x01")], [], "http2.invalid_frame_data"),  # MAX_FRAME_SIZE of 1
    ([frame(0, 0, 0, b"data")], [], "http2.data_stream_zero"),
    ([frame(1, 0x8 | 0x4, 1, bytes([200]) + block(GET))], [], "http2.invalid_frame_data"),  # padding > frame
    ([frame(9, 0x4, 1, block(GET))], [], "http2.invalid_frame_header"),  # CONTINUATION without HEADERS
    ([frame(1, 0, 1, block(GET)), frame(6, 0, 0, b"12345678")], [], "http2.invalid_frame_header"),  # block cut
    ([frame(1, 0x5, 1, b"\xff\xff\xff\xff\xff\xff\x7f")], [], "http2.header_integer_overflow"),
    ([frame(1, 0x5, 1, b"\xbf\x7f" + block(GET))], [], "http2.invalid_header"),  # dynamic index not there
    ([frame(1, 0x5, 1, block(GET + [(b"Upper", b"x")]))], [], "http2.invalid_header"),
    ([frame(1, 0x5, 1, block(GET + [(b"connection", b"close")]))], [], "http2.invalid_header"),
    ([frame(1, 0x5, 1, block(GET + [(b"x", b"a\r\nInjected: 1")]))], [], "http2.invalid_header"),
    ([frame(1, 0x5, 1, block([(b"x", b"1")] + GET))], [], "http2.invalid_header"),  # pseudo after regular
    ([frame(1, 0x5, 1, block([(b":method", b"GET"), (b":authority", b"a")]))], [], "http2.invalid_header"),
    ([frame(1, 0x5, 1, block(GET[:2] + [(b":authority", b"a.example"), (b":path", b"/"), (b"host", b"b.example")]))],
     [], "http2.authority_host_mismatch"),
    ([frame(1, 0x5, 1, block(GET[:2] + [(b":authority", b"user:pw@a.example"), (b":path", b"/")]))], [],
     "http2.userinfo_in_uri"),
    ([frame(1, 0x5, 3, block(GET)), frame(1, 0x5, 1, block(GET))], [], "http2.stream_id_reuse"),
    ([frame(1, 0x5, 1, block(GET)), frame(1, 0x5, 1, block(GET))], [], "http2.stream_id_reuse"),
    ([frame(0, 0x1, 7, b"x")], [], "http2.data_without_stream"),
    ([frame(0, 0, 1, b"x" * 20000)], [], "http2.long_frame_data"),  # over the default max frame size
    ([frame(1, 0x4, 1, block(GET[:3] + [(b":path", b"/")] + [(b"content-length", b"10")])),
      frame(0, 1, 1, b"short")], [], "http2.content_length_mismatch"),
    ([frame(1, 0x4, 1, block([(b":method", b"POST"), (b":scheme", b"http"), (b":authority", b"a"), (b":path", b"/"),
                              (b"content-encoding", b"gzip")])), frame(0, 1, 1, b"not gzip at all")],
     [], "http2.failed_decompression"),
    ([frame(1, 0x5, 1, block(GET))], [frame(1, 0x5, 9, block([(b":status", b"200")]))],
     "http2.response_without_request"),
    ([frame(1, 0x5, 1, block(GET))], [frame(1, 0x5, 1, block([(b":status", b"20x")]))], "http2.invalid_header"),
    ([frame(1, 0x5, 1, block(GET))], [frame(5, 0x4, 1, b"\x00\x00\x00\x03" + block(GET))],
     "http2.invalid_frame_data"),  # a push on an odd stream
])
def test_malformed_input_raises_anomalies(frames_: list[bytes], server: list[bytes], expected: str) -> None:
    p, _ = parser_with(*frames_, server=server)
    assert expected in _anomalies(p)
    assert "http2.parser_error" not in p.counters


def test_bad_client_magic() -> None:
    p = Http2Parser()
    p.feed(True, b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n")
    assert p.anomalies == ["http2.invalid_client_magic"]


def test_valid_traffic_raises_no_anomaly() -> None:
    wire = evil_exchange().wire
    p = Http2Parser()
    for to_server, data in wire:
        p.feed(to_server, data)
    p.close()
    assert _anomalies(p) == set() and p.counters.get("http2.frames", 0) > 10


def test_gap_inside_data_keeps_reading_and_elsewhere_stops_the_direction() -> None:
    enc = Encoder()
    post = [(b":method", b"POST"), (b":scheme", b"http"), (b":authority", b"a"), (b":path", b"/p")]
    p = Http2Parser()
    p.feed(True, client_start() + frame(1, 0x4, 1, block(post, enc)) + frame(0, 1, 1, b"0123456789")[:12])
    p.gap(True, 5)  # bytes 3..7 of the DATA payload
    p.feed(True, b"89" + frame(1, 0x5, 3, block(GET, enc)))
    one, three = p.transactions
    assert one.request_body == b"01289" and one.request_body_incomplete and one.request_done
    assert three.uri == b"/" and three.request_done
    p.gap(True, 100)  # frame boundaries lost
    p.feed(True, frame(1, 0x5, 5, block(GET, enc)))
    assert "http2.gap" in p.anomalies and len(p.transactions) == 2


# -- bounds ---------------------------------------------------------------------------------------------


def test_too_many_streams_closes_the_oldest() -> None:
    enc = Encoder()
    p = Http2Parser(max_streams=8)
    p.feed(True, client_start())
    for sid in range(1, 40, 2):
        p.feed(True, frame(1, 0x4, sid, block(GET, enc)))  # requests whose body never ends
    assert len(p.streams) == 8 and "http2.too_many_streams" in _anomalies(p)
    assert p.transactions[0].request_done and p.transactions[0].request_body_incomplete
    assert p.transactions[-1].uri == b"/" and not p.transactions[-1].request_done


def test_continuation_flood_holds_little() -> None:
    """HEADERS then 20 MB of CONTINUATION frames: the decoder streams, the list is capped, the
    block still ends in a transaction with its pseudo-headers."""
    app = AppLayer()
    flow = tflow()
    start = client_start() + frame(1, 0, 1, block(GET))
    app.on_chunk(flow, True, start, 0)
    off = len(start)
    filler = Encoder()
    piece = filler.encode([(b"x-flood", b"y" * 200)], huffman=False)  # literal, new name each time
    chunk = b"".join(frame(9, 0, 1, piece) for _ in range(64))
    peak = 0
    for _ in range(20_000_000 // len(chunk)):
        app.on_chunk(flow, True, chunk, off)
        off += len(chunk)
        app.inspected(flow)
        peak = max(peak, app.held_total)
    out = app.on_chunk(flow, True, frame(9, 0x4, 1, b""), off)
    p = flow.app_state.parser
    assert peak < 300_000, peak  # the dynamic table (4 KiB), the list cap (64 KiB) and their Python cost
    (tx,) = p.transactions
    assert tx.uri == b"/" and tx.host == b"a.example"
    assert {"http2.reassembly_limit_reached", "http2.header_list_too_large"} <= set(tx.anomalies)
    assert [e.stage for _, e in out] == ["request_headers"]


def test_huge_indexed_literal_empties_the_table_like_the_peer() -> None:
    """A 200 KiB literal with incremental indexing is skipped, not kept, and the table is emptied
    as the server's decoder empties it: the next blocks decode the same as a reference decoder."""
    enc = Encoder()
    blocks = [block([(b":method", b"GET"), (b"x-a", b"first")], enc),
              enc.encode([(b"x-huge", b"h" * 200_000)], huffman=False),
              block([(b"x-a", b"first"), (b"x-b", b"second")], enc)]
    ref = Decoder()
    ref.max_header_list_size = 1 << 30
    ref.max_allowed_table_size = 1 << 20
    ours = HpackStream()
    for i, blk in enumerate(blocks):
        expected = ref.decode(blk, raw=True)
        ours.begin()
        for j in range(0, len(blk), 1000):
            ours.feed(blk[j:j + 1000])
        got = ours.end()
        if i == 1:
            assert got == [] and ours.oversize and ours.held_bytes() < 10_000
        else:
            assert got == [(bytes(k), bytes(v)) for k, v in expected] and not ours.errors


def test_table_size_updates_are_bounded() -> None:
    ours = HpackStream(max_table_size=4096)
    ours.begin()
    ours.feed(b"\x3f\xe1\xff\x03")  # size update to 65536 + 31
    ours.end()
    assert ours.errors == ["http2.invalid_header"] and ours.table.maxsize == 4096


def test_control_frames_and_headers_are_not_buffered_whole() -> None:
    p = Http2Parser()
    p.feed(True, client_start() + frame(7, 0, 0, length=10_000_000)[:9] + b"x" * 100_000)  # GOAWAY claim
    assert p.held_bytes() < 20_000
    p = Http2Parser()
    p.feed(True, client_start() + frame(0, 0, 1, length=10_000_000)[:9] + b"x" * 100_000)  # DATA claim
    assert p.held_bytes() < 20_000


# -- the app layer ---------------------------------------------------------------------------------------


def test_request_events_carry_the_upload_as_a_file() -> None:
    _, _, out = play(evil_exchange().wire)
    files = [e for h, e in out if isinstance(e, FileEvent) and e.to_server]
    assert files and files[0].tx.protocol == b"HTTP/2" and files[0].content_type == b"application/octet-stream"


def test_http2_parser_error_is_contained(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*_: Any) -> None:
        raise RuntimeError("bug")

    p = Http2Parser()
    monkeypatch.setattr(p, "_frame_start", boom)
    p.feed(True, client_start())
    assert p.counters["http2.parser_error"] == 1 and p.feed(True, b"more") == []


def test_prior_knowledge_needs_the_whole_preface() -> None:
    app, flow, out = play([(True, PREFACE[:20] + b"XXXX" + b"\x00" * 30)])
    assert flow_app_proto(flow) != "http2" and not out


def test_gzip_layer_on_request_body() -> None:
    talk = H2Talk()
    talk.request(1, [(":method", "PUT"), (":path", "/f"), (":scheme", "http"), (":authority", "a"),
                     ("content-encoding", "gzip")], gzip.compress(b"secret-upload" * 100))
    _, _, out = play(talk.wire)
    assert txs(out)[0].request_body == b""  # released once inspected
    assert [e.data for h, e in out if h is Hook.FILE] == [b"secret-upload" * 100]


def test_get_evil_headers_constant_is_what_the_client_sent() -> None:
    talk = evil_exchange()
    sent = next(ev.headers for ev in talk.received if getattr(ev, "stream_id", 0) == 1 and hasattr(ev, "headers"))
    assert [(k.decode(), v.decode()) for k, v in sent] == GET_EVIL


def test_upgrade_with_frames_sent_before_the_101() -> None:
    """A client that sends its preface and a second request right behind the upgrade request (an
    h2c server reads them after the switch): they are HTTP/2, not HTTP/1 junk."""
    talk = H2Talk(upgrade=True)
    settings = talk.client.initiate_upgrade_connection()
    request = (b"GET /start HTTP/1.1\r\nHost: evil.example\r\nConnection: Upgrade, HTTP2-Settings\r\n"
               b"Upgrade: h2c\r\nHTTP2-Settings: " + settings + b"\r\n\r\n")
    talk.client.send_headers(3, [(":method", "GET"), (":path", "/evil/hidden"), (":scheme", "http"),
                                 (":authority", "evil.example")], end_stream=True)
    early = talk.client.data_to_send()
    assert early.startswith(PREFACE)
    talk.server.initiate_upgrade_connection(settings)
    talk.server.receive_data(early)
    wire = [(True, request + early),
            (False, b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n"
             + talk.server.data_to_send())]
    _, flow, out = play(wire)
    assert flow_app_proto(flow) == "http2"
    assert [t.uri for t in txs(out)] == [b"/start", b"/evil/hidden"]
    assert not any(t.anomalies for t in txs(out))


def test_pipelined_http1_after_a_refused_upgrade_is_parsed() -> None:
    wire = [(True, b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n"
                   b"GET /evil HTTP/1.1\r\nHost: a\r\n\r\n"),
            (False, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")]
    _, flow, out = play(wire, close=False)
    assert flow_app_proto(flow) == "http"
    assert [(t.uri, t.status_code) for t in txs(out)] == [(b"/", b"200"), (b"/evil", b"404")]


def test_upgrade_request_without_answer_is_parsed_at_close() -> None:
    wire = [(True, b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: h2c\r\n\r\nGET /evil HTTP/1.1\r\nHost: a\r\n\r\n")]
    _, _, out = play(wire)
    assert [t.uri for t in txs(out)] == [b"/", b"/evil"]
