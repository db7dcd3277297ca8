"""Hostile HTTP/2 input never crashes the parser (no ``http2.parser_error``: the guard that would
hide a bug is not reached) and its memory stays bounded; the streaming HPACK decoder decodes what
the reference decoder does, however the block is cut."""
from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hpack import Decoder, Encoder

from filters.app.http2 import Http2Parser
from filters.app.http2.hpack import HpackStream
from tests.filters.app.h2_traffic import block, client_start, evil_exchange, frame, upgrade_exchange
from tests.filters.factories import mutated

FUZZ = settings(max_examples=400, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])

_EVIL = evil_exchange().wire
_UPGRADE = upgrade_exchange()[0]
_HEAD = [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"a"), (b":path", b"/x")]
FRAME_SEEDS = [
    frame(1, 0x5, 1, block(_HEAD)),
    frame(1, 0x8 | 0x20 | 0x4, 3, bytes([2]) + b"\x00\x00\x00\x01\x10" + block(_HEAD) + b"\x00\x00"),
    frame(1, 0, 5, block(_HEAD)[:3]) + frame(9, 0x4, 5, block(_HEAD)[3:]),
    frame(0, 0x9, 1, b"\x01ab\x00"),
    frame(4, 0, 0, b"\x00\x05\x00\x00\x40\x00\x00\x01\x00\x00\x10\x00"),
    frame(6, 0, 0, b"12345678"), frame(7, 0, 0, b"\x00\x00\x00\x01\x00\x00\x00\x00debug"),
    frame(3, 0, 1, b"\x00\x00\x00\x08"), frame(8, 0, 0, b"\x00\x00\x10\x00"),
    frame(5, 0x4, 1, b"\x00\x00\x00\x02" + block(_HEAD)),
]


def cuts(draw: st.DrawFn, data: bytes) -> list[bytes]:
    points = sorted(set(draw(st.lists(st.integers(0, len(data)), max_size=6))))
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)]) if b > a]


def check(p: Http2Parser) -> None:
    assert "http2.parser_error" not in p.counters, p.counters
    assert p.held_bytes() < 2_000_000
    assert len(p.streams) <= p.max_streams
    for tx in p.transactions:
        assert isinstance(tx.method, bytes) and isinstance(tx.uri, bytes) and isinstance(tx.host, bytes)
        assert all(isinstance(k, bytes) and isinstance(v, bytes) for k, v in tx.request_headers + tx.response_headers)


@FUZZ
@given(st.data())
def test_random_frames_after_the_preface(data: st.DataObject) -> None:
    p = Http2Parser(max_streams=16)
    frames_ = data.draw(st.lists(st.sampled_from(FRAME_SEEDS).flatmap(mutated), max_size=12))
    junk = data.draw(st.binary(max_size=64))
    wire = client_start() + b"".join(frames_) + junk
    for piece in cuts(data.draw, wire):
        p.feed(True, piece)
    server = data.draw(st.lists(st.sampled_from(FRAME_SEEDS).flatmap(mutated), max_size=6))
    for piece in cuts(data.draw, b"".join(server)):
        p.feed(False, piece)
    if data.draw(st.booleans()):
        p.gap(data.draw(st.booleans()), data.draw(st.integers(1, 100)))
        p.feed(True, data.draw(st.binary(max_size=40)))
    p.close()
    check(p)


@FUZZ
@given(st.data())
def test_mutated_real_conversations(data: st.DataObject) -> None:
    wire = data.draw(st.sampled_from([_EVIL, _UPGRADE[2:]]))
    p = Http2Parser()
    victim = data.draw(st.integers(0, len(wire) - 1))
    for i, (to_server, chunk) in enumerate(wire):
        if i == victim:
            chunk = data.draw(mutated([chunk]))
        for piece in cuts(data.draw, chunk):
            p.feed(to_server, piece)
    p.close()
    check(p)


@FUZZ
@given(st.binary(max_size=400))
def test_any_bytes(blob: bytes) -> None:
    p = Http2Parser()
    p.feed(True, client_start() + blob)
    p.feed(False, blob)
    p.close()
    check(p)


_NAMES = st.sampled_from([b"x-a", b"x-b", b"cookie", b"content-type", b":path", b"user-agent", b"x-long-name-here"])


@FUZZ
@given(st.data())
def test_streaming_hpack_matches_the_reference_decoder(data: st.DataObject) -> None:
    enc, ref, ours = Encoder(), Decoder(), HpackStream()
    for _ in range(data.draw(st.integers(1, 4))):
        if data.draw(st.booleans()):
            enc.header_table_size = data.draw(st.sampled_from([0, 256, 4096]))
        headers = data.draw(st.lists(st.tuples(_NAMES, st.binary(max_size=60)), max_size=12))
        blk = enc.encode(headers, huffman=data.draw(st.booleans()))
        expected = [(bytes(k), bytes(v)) for k, v in ref.decode(blk, raw=True)]
        ours.begin()
        for piece in cuts(data.draw, blk):
            ours.feed(piece)
        assert ours.end() == expected
        assert not ours.errors
