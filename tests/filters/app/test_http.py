"""Unit tests for filters.app.http: libhtp-like parsing, evasions, decoding, limits, events and fuzzing."""
from __future__ import annotations

import dataclasses
import gzip
import lzma
import struct
import zlib

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from filters.app.events import HttpEvent, HttpTransaction
from filters.app.http import HttpParser, normalize_uri, parse_chunk_length, parse_content_length

EICAR = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
GET = b"GET /f HTTP/1.1\r\nHost: example.com\r\n\r\n"
FUZZ = settings(max_examples=400, deadline=None, database=None, suppress_health_check=list(HealthCheck))


def pieces(data: bytes, step: int) -> list[bytes]:
    return [data] if step <= 0 else [data[i:i + step] for i in range(0, len(data), step)]


def exchange(request: bytes, response: bytes = b"", *, step: int = 0, close: bool = True,
             **kw: int) -> tuple[HttpParser, list[HttpEvent]]:
    """Feed a whole request stream, then a whole response stream (in ``step``-byte pieces), then close."""
    parser = HttpParser(**kw)
    events: list[HttpEvent] = []
    for to_server, data in ((True, request), (False, response)):
        for piece in pieces(data, step):
            events += parser.feed(to_server, piece)
    if close:
        events += parser.close()
    return parser, events


def one(request: bytes, response: bytes = b"", **kw: int) -> HttpTransaction:
    parser, _ = exchange(request, response, **kw)
    assert len(parser.transactions) == 1, parser.transactions
    return parser.transactions[0]


def response(headers: bytes, body: bytes = b"", status: bytes = b"HTTP/1.1 200 OK\r\n") -> bytes:
    return status + headers + b"\r\n" + body


def stages(events: list[HttpEvent]) -> list[tuple[int, str]]:
    return [(e.tx.tx_id, e.stage) for e in events]


def gzip_member(body: bytes, *, flags: int = 0, extra: bytes = b"", name: bytes = b"", comment: bytes = b"",
                trailer: bytes | None = None) -> bytes:
    """A gzip member with chosen header flags (FHCRC 2, FEXTRA 4, FNAME 8, FCOMMENT 16, reserved 0xE0)."""
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = b"\x1f\x8b\x08" + bytes([flags]) + b"\0\0\0\0\0\x03"
    if flags & 4:
        head += len(extra).to_bytes(2, "little") + extra
    if flags & 8:
        head += name + b"\0"
    if flags & 16:
        head += comment + b"\0"
    if flags & 2:
        head += b"\xaa\xbb"
    tail = struct.pack("<II", zlib.crc32(body), len(body)) if trailer is None else trailer
    return head + comp.compress(body) + comp.flush() + tail


def raw_deflate(body: bytes) -> bytes:
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    return comp.compress(body) + comp.flush()


def chunked(body: bytes, size: int = 7, ext: bytes = b"") -> bytes:
    parts = [body[i:i + size] for i in range(0, len(body), size)]
    return b"".join(b"%x%s\r\n%s\r\n" % (len(p), ext, p) for p in parts) + b"0\r\n\r\n"


def snapshot(parser: HttpParser) -> list[dict[str, object]]:
    """Every transaction's fields; anomalies as a set (which ones, not the order they were noticed in)."""
    out = [dataclasses.asdict(tx) for tx in parser.transactions]
    for tx in out:
        tx["anomalies"] = sorted(tx["anomalies"])
    return out


# -- request line and URI -------------------------------------------------------------------------

def test_request_line_and_headers() -> None:
    tx = one(b"GET /a/b?x=1 HTTP/1.1\r\nHost: Example.COM:8080\r\nUser-Agent: ua/1\r\nCookie: c=1\r\n"
             b"Content-Type: Text/HTML; charset=x\r\n\r\n")
    assert (tx.method, tx.uri_raw, tx.uri, tx.protocol) == (b"GET", b"/a/b?x=1", b"/a/b?x=1", b"HTTP/1.1")
    assert tx.request_line == b"GET /a/b?x=1 HTTP/1.1"
    assert (tx.host, tx.host_raw) == (b"example.com", b"Example.COM:8080")
    assert (tx.user_agent, tx.cookie, tx.request_content_type) == (b"ua/1", b"c=1", b"text/html")
    assert tx.request_headers[0] == (b"Host", b"Example.COM:8080")
    assert tx.request_headers_raw.endswith(b"\r\n\r\n") and tx.request_headers_raw.startswith(b"Host:")
    assert tx.request_headers_done and tx.request_done and not tx.anomalies


@pytest.mark.parametrize("line", [b"GET   /p   HTTP/1.1", b"GET\t/p\tHTTP/1.1", b"  GET /p HTTP/1.1",
                                  b"GET /p HTTP/1.1 "])
def test_request_line_whitespace(line: bytes) -> None:
    tx = one(line + b"\r\nHost: h\r\n\r\n")
    assert (tx.method, tx.uri_raw, tx.protocol) == (b"GET", b"/p", b"HTTP/1.1")


def test_empty_lines_before_request_are_skipped() -> None:
    tx = one(b"\r\n\r\n\nGET / HTTP/1.1\r\n\r\n")
    assert tx.method == b"GET" and tx.request_done


def test_absolute_uri_gives_host() -> None:
    tx = one(b"GET http://User@WWW.Example.com.:8080/a/../b?q=%41 HTTP/1.1\r\nHost: other.org\r\n\r\n")
    assert tx.host == b"www.example.com"
    assert tx.uri == b"/b?q=A"
    assert "http.host_ambiguous" in tx.anomalies


@pytest.mark.parametrize(("raw", "uri"), [
    (b"/a/./b/../c", b"/a/c"),
    (b"/a//b///c", b"/a/b/c"),
    (b"/a%2fb%5Cc\\d", b"/a/b/c/d"),
    (b"/%41%42%zz%4", b"/AB%zz%4"),
    (b"/%u0041%uFF0E%uFF0E/x", b"/A../x"),
    (b"/../../etc/passwd", b"/etc/passwd"),
    (b"/a/%2e%2e/b", b"/b"),
    (b"/p?a=%2F..%2f&b=+#frag%41", b"/p?a=/../&b=+#fragA"),
    (b"/%ef%bc%8f", b"/"),  # UTF-8 fullwidth solidus, best-fit mapped (IDS personality)
    (b"*", b"*"),
])
def test_uri_normalization(raw: bytes, uri: bytes) -> None:
    assert normalize_uri(raw)[0] == uri


def test_http09_request_and_response_to_close() -> None:
    parser, events = exchange(b"GET /old\r\n", b"<html>no headers at all</html>")
    tx = parser.transactions[0]
    assert (tx.method, tx.uri_raw, tx.protocol) == (b"GET", b"/old", b"")
    assert tx.response_body == b"<html>no headers at all</html>"
    assert tx.status_line == b"" and tx.response_done
    assert stages(events) == [(0, "request_headers"), (0, "request_done"), (0, "response_headers"),
                              (0, "response_body"), (0, "response_done")]


def test_request_without_protocol_but_with_headers_is_not_http09() -> None:
    tx = one(b"GET /x\r\nHost: a\r\n\r\n", response(b"Content-Length: 2\r\n", b"ok"))
    assert tx.request_headers == [(b"Host", b"a")]
    assert tx.response_body == b"ok" and "http.request_line_no_protocol" in tx.anomalies


def test_unknown_method_and_protocol_are_anomalies() -> None:
    tx = one(b"FOO /x HTTP/7.7\r\n\r\n")
    assert tx.method == b"FOO"
    assert {"http.request_unknown_method", "http.request_invalid_protocol"} <= set(tx.anomalies)


# -- headers ----------------------------------------------------------------------------------------

def test_header_folding_request_and_response() -> None:
    tx = one(b"GET / HTTP/1.1\r\nX-A: one\r\n two\r\n\tthree\r\nHost: h\r\n\r\n",
             response(b"X-B: a\r\n b\r\nContent-Length: 1\r\n", b"z"))
    assert tx.header(b"x-a") == b"one two\tthree"
    assert tx.header(b"x-b", response=True) == b"a b"
    assert tx.response_body == b"z"


def test_lf_only_and_cr_only_line_ends() -> None:
    tx = one(b"GET / HTTP/1.1\nHost: h\n\n", b"HTTP/1.1 200 OK\rContent-Length: 3\r\rabc")
    assert tx.host == b"h"
    assert tx.response_body == b"abc"


def test_nul_and_space_before_colon() -> None:
    tx = one(GET, b"HTTP/1.1 200 OK\r\nTransfer\x00-Encoding : chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
    assert tx.response_body == b"abc"
    assert "http.response_header_invalid_name" in tx.anomalies


def test_duplicate_headers_are_merged_and_content_length_keeps_first() -> None:
    tx = one(GET, response(b"X: 1\r\nx: 2\r\nContent-Length: 2\r\nContent-Length: 5\r\n", b"abcde"))
    assert tx.header(b"X", response=True) == b"1, 2"
    assert tx.response_body == b"abcde"  # two bytes of body, then junk that browsers append too
    assert {"http.response_duplicate_content_length", "http.response_body_unexpected"} <= set(tx.anomalies)


def test_line_without_colon_is_kept_as_nameless_header() -> None:
    tx = one(GET, response(b"Content-Length: 1\r\nthis is junk\r\n", b"q"))
    assert (b"", b"this is junk") in tx.response_headers
    assert tx.response_body == b"q" and "http.response_header_missing_colon" in tx.anomalies


# -- framing ---------------------------------------------------------------------------------------

def test_transfer_encoding_wins_over_content_length() -> None:
    tx = one(GET, response(b"Content-Length: 100\r\nTransfer-Encoding: chunked\r\n", chunked(EICAR)))
    assert tx.response_body == EICAR
    assert "http.response_smuggling" in tx.anomalies


@pytest.mark.parametrize("chunks", [
    b"3;name=value\r\nabc\r\n0\r\n\r\n",
    b"0003\r\nabc\r\n0000\r\n\r\n",
    b" 3 \r\nabc\r\n0\r\n\r\n",
    b"\t3\r\nabc\r\n\x0b0\r\n\r\n",
    b"3\x00\r\nabc\r\n0\r\n\r\n",
    b"\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    b"3\nabc\n0\n\n",
    b"3\r\nabcJUNK\r\n0\r\n\r\n",
])
def test_chunked_variants(chunks: bytes) -> None:
    tx = one(GET, response(b"Transfer-Encoding: chunked\r\n", chunks))
    assert tx.response_body == b"abc" and tx.response_done


def test_chunked_trailers_and_pipelined_next_response() -> None:
    req = GET + GET
    resp = response(b"Transfer-Encoding: chunked\r\n", b"2\r\nok\r\n0\r\nX-Trailer: t\r\n\r\n") + \
        response(b"Content-Length: 2\r\n", b"hi")
    parser, _ = exchange(req, resp)
    first, second = parser.transactions
    assert first.response_body == b"ok" and first.header(b"x-trailer", response=True) == b"t"
    assert second.response_body == b"hi"


def test_chunked_without_final_chunk_ends_at_close() -> None:
    parser, _ = exchange(GET, response(b"Transfer-Encoding: chunked\r\n", b"4\r\nabcd\r\n2\r\nef"))
    tx = parser.transactions[0]
    assert tx.response_body == b"abcdef" and tx.response_done


def test_invalid_chunk_length_makes_the_rest_identity_body() -> None:
    tx = one(GET, response(b"Transfer-Encoding: chunked\r\n", EICAR))
    assert tx.response_body == EICAR  # libhtp: the stream continues as body until close
    assert "http.invalid_chunk_length" in tx.anomalies


def test_chunk_length_parser() -> None:
    assert parse_chunk_length(b"1F;x\r\n") == 31
    assert parse_chunk_length(b"\r\n \t1f  \r\n") == 31
    assert parse_chunk_length(b"zz\r\n") is None
    assert parse_chunk_length(b"ffffffffff\r\n") == -1  # above i32: the line is skipped, as libhtp does
    assert parse_content_length(b" x12y ") == 12 and parse_content_length(b"none") is None


def test_body_delimited_by_close() -> None:
    parser, events = exchange(GET, response(b"Connection: close\r\n", b"all the rest"), close=False)
    tx = parser.transactions[0]
    assert tx.response_body == b"all the rest" and not tx.response_done
    assert stages(parser.close()) == [(0, "response_done")]
    assert tx.response_done


def test_content_length_too_small_junk_is_appended() -> None:
    tx = one(GET, response(b"Content-Length: 10\r\n", EICAR))
    assert tx.response_body == EICAR and "http.response_body_unexpected" in tx.anomalies


def test_pipelining_matches_responses_in_order() -> None:
    req = b"GET /1 HTTP/1.1\r\n\r\nHEAD /2 HTTP/1.1\r\n\r\nPOST /3 HTTP/1.1\r\nContent-Length: 4\r\n\r\nbody" \
          b"GET /4 HTTP/1.1\r\n\r\n"
    resp = response(b"Content-Length: 1\r\n", b"1") + response(b"Content-Length: 50\r\n") + \
        response(b"", status=b"HTTP/1.1 204 No Content\r\n") + response(b"Content-Length: 1\r\n", b"4")
    parser, events = exchange(req, resp)
    assert [tx.uri for tx in parser.transactions] == [b"/1", b"/2", b"/3", b"/4"]
    assert [tx.response_body for tx in parser.transactions] == [b"1", b"", b"", b"4"]
    assert [tx.status_code for tx in parser.transactions] == [b"200", b"200", b"204", b"200"]
    assert parser.transactions[2].request_body == b"body"
    assert all(tx.request_done and tx.response_done for tx in parser.transactions)


def test_100_continue_is_interim() -> None:
    req = b"POST /u HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc"
    resp = b"HTTP/1.1 100 Continue\r\n\r\n" + response(b"Content-Length: 2\r\n", b"ok")
    tx = one(req, resp)
    assert tx.status_code == b"200" and tx.response_body == b"ok" and tx.request_body == b"abc"


def test_expectation_failed_ends_request_without_body() -> None:
    parser = HttpParser()
    parser.feed(True, b"POST /u HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n")
    events = parser.feed(False, response(b"Content-Length: 0\r\n", status=b"HTTP/1.1 417 Nope\r\n"))
    assert (0, "request_done") in stages(events)
    parser.feed(True, b"GET /next HTTP/1.1\r\n\r\n")
    assert [tx.uri for tx in parser.transactions] == [b"/u", b"/next"]


@pytest.mark.parametrize("status", [b"HTTP/1.1 204 No\r\n", b"HTTP/1.1 304 Not Modified\r\n",
                                    b"HTTP/1.1 102 Processing\r\n"])
def test_no_body_status_codes(status: bytes) -> None:
    parser, _ = exchange(GET + GET, response(b"X: y\r\n", status=status) + response(b"Content-Length: 1\r\n", b"a"))
    assert [tx.response_body for tx in parser.transactions] == [b"", b"a"]


def test_204_with_content_length_has_a_body_like_browsers() -> None:
    tx = one(GET, response(b"Content-Length: 68\r\n", EICAR, status=b"HTTP/1.1 204 ok\r\n"))
    assert tx.response_body == EICAR


def test_head_response_has_no_body() -> None:
    parser, _ = exchange(b"HEAD / HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n\r\n",
                         response(b"Content-Length: 100\r\n") + response(b"Content-Length: 2\r\n", b"ok"))
    assert [tx.response_body for tx in parser.transactions] == [b"", b"ok"]


def test_connect_established_is_a_tunnel() -> None:
    parser = HttpParser()
    parser.feed(True, b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n")
    parser.feed(False, b"HTTP/1.1 200 Connection established\r\n\r\n")
    assert parser.feed(True, b"\x16\x03\x01\x02\x00GET / HTTP/1.1\r\n\r\n") == []
    assert parser.feed(False, b"\x16\x03\x03 server hello") == []
    tx, = parser.transactions
    assert (tx.method, tx.host, tx.uri) == (b"CONNECT", b"example.com", b"example.com:443")
    assert parser.counters["http.tunnel"] == 1


def test_connect_established_then_plain_http_is_still_parsed() -> None:
    parser = HttpParser()
    parser.feed(True, b"CONNECT proxy:80 HTTP/1.1\r\n\r\n")
    parser.feed(False, b"HTTP/1.1 200 OK\r\n\r\n")
    parser.feed(True, b"GET /inner HTTP/1.1\r\nHost: inner\r\n\r\n")
    parser.feed(False, response(b"Content-Length: 68\r\n", EICAR))
    assert [(tx.uri, tx.response_body) for tx in parser.transactions] == [(b"proxy:80", b""), (b"/inner", EICAR)]


def test_connect_refused_continues_http() -> None:
    req = b"CONNECT a:443 HTTP/1.1\r\n\r\nGET /next HTTP/1.1\r\n\r\n"
    resp = response(b"Content-Length: 0\r\n", status=b"HTTP/1.1 407 Auth\r\n") + \
        response(b"Content-Length: 1\r\n", b"n")
    parser, _ = exchange(req, resp)
    assert [(tx.method, tx.response_body) for tx in parser.transactions] == [(b"CONNECT", b""), (b"GET", b"n")]


def test_switching_protocols_is_a_tunnel() -> None:
    parser = HttpParser()
    parser.feed(True, b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\n\r\n")
    parser.feed(False, response(b"Upgrade: websocket\r\n", b"\x81\x05hello", status=b"HTTP/1.1 101 Switching\r\n"))
    assert parser.feed(True, b"GET /x HTTP/1.1\r\n\r\n") == []
    assert len(parser.transactions) == 1 and parser.transactions[0].response_body == b""
    assert parser.counters["http.tunnel"] == 1


def test_response_without_request_and_without_status_line() -> None:
    parser, _ = exchange(b"", response(b"Content-Length: 2\r\n", b"hi"))
    tx, = parser.transactions
    assert tx.response_body == b"hi" and "http.response_without_request" in tx.anomalies
    tx = one(GET, b"no status line here\r\nmore body\r\n")
    assert tx.response_body == b"no status line here\r\nmore body\r\n"
    assert "http.response_without_status_line" in tx.anomalies


# -- content encoding ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("coding", "encoded"), [
    (b"gzip", gzip.compress(EICAR)),
    (b"x-gzip", gzip.compress(EICAR)),
    (b"GZIP", gzip.compress(EICAR)),
    (b"deflate", raw_deflate(EICAR)),
    (b"deflate", zlib.compress(EICAR)),  # zlib-wrapped, as many servers send it
    (b"gzip", zlib.compress(EICAR)),  # the wrong name still decodes (libhtp retries the other formats)
    (b"lzma", lzma.compress(EICAR, format=lzma.FORMAT_ALONE)),
    (b"gzip, deflate", raw_deflate(gzip.compress(EICAR))),
    (b"identity, gzip", gzip.compress(EICAR)),
    (b"gzip", EICAR),  # not compressed at all: passed through raw
])
def test_content_encodings(coding: bytes, encoded: bytes) -> None:
    tx = one(GET, response(b"Content-Encoding: " + coding + b"\r\nContent-Length: %d\r\n" % len(encoded), encoded))
    assert tx.response_body == EICAR


def test_layered_encodings_and_layer_limit() -> None:
    encoded = gzip.compress(raw_deflate(gzip.compress(raw_deflate(EICAR))))
    resp = response(b"Content-Encoding: deflate, gzip, deflate, gzip\r\n", encoded)
    assert one(GET, resp, decompress_layers=4).response_body == EICAR
    tx = one(GET, resp, decompress_layers=2)
    assert EICAR not in tx.response_body and "http.too_many_encoding_layers" in tx.anomalies


def test_chunked_gzip_split_everywhere() -> None:
    body = EICAR * 50
    resp = response(b"Transfer-Encoding: chunked\r\nContent-Encoding: gzip\r\n", chunked(gzip.compress(body), size=5))
    for step in (0, 1, 3):
        parser, _ = exchange(GET, resp, step=step)
        assert parser.transactions[0].response_body == body


@pytest.mark.parametrize("member", [
    gzip_member(EICAR, flags=0x04, extra=b"AB\x02\x00xy"),
    gzip_member(EICAR, flags=0x08, name=b"eicar.txt"),
    gzip_member(EICAR, flags=0x10, comment=b"a comment"),
    gzip_member(EICAR, flags=0x02),
    gzip_member(EICAR, flags=0x1E, extra=b"e", name=b"n", comment=b"c"),
    gzip_member(EICAR, flags=0xE1),  # FTEXT and reserved bits: ignored
    gzip_member(EICAR, trailer=b"\xff\xff\xff\xff\x00\x00\x00\x00"),  # wrong CRC and ISIZE
    gzip_member(EICAR, trailer=b""),  # no trailer
    gzip_member(EICAR) + b"trailing garbage",
])
def test_broken_gzip_is_read_leniently(member: bytes) -> None:
    assert one(GET, response(b"Content-Encoding: gzip\r\n", member)).response_body == EICAR


def test_truncated_and_corrupt_streams_keep_what_decoded() -> None:
    body = bytes(range(256)) * 40
    encoded = gzip.compress(body)
    truncated = one(GET, response(b"Content-Encoding: gzip\r\n", encoded[:len(encoded) // 2])).response_body
    assert 0 < len(truncated) < len(body) and body.startswith(truncated)
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    first = comp.compress(EICAR) + comp.flush(zlib.Z_FULL_FLUSH)
    corrupt = gzip_member(b"", trailer=b"")[:10] + first + b"\x07 reserved block type, then junk"
    for step in (0, 1):
        parser, _ = exchange(GET, response(b"Content-Encoding: gzip\r\n", corrupt), step=step)
        assert parser.transactions[0].response_body == EICAR


def test_decompression_bomb_is_capped() -> None:
    bomb = gzip.compress(gzip.compress(b"\0" * (40 << 20)))  # ~100 bytes on the wire
    tx = one(GET, response(b"Content-Encoding: gzip, gzip\r\n", bomb), response_body_limit=0, max_decompressed=1 << 20)
    assert (1 << 20) - (64 << 10) <= len(tx.response_body) <= 1 << 20
    assert tx.response_body_truncated and "http.decompression_bomb" in tx.anomalies
    # libhtp's rule needs both size and ratio: one deflate layer never exceeds ~1032:1 < 2048
    plain = one(GET, response(b"Content-Encoding: gzip\r\n", gzip.compress(b"\0" * (3 << 20))), response_body_limit=0)
    assert len(plain.response_body) == 3 << 20 and "http.decompression_bomb" not in plain.anomalies
    tight = one(GET, response(b"Content-Encoding: gzip\r\n", gzip.compress(b"\0" * (3 << 20))), response_body_limit=0,
                decompress_ratio=100)
    assert len(tight.response_body) <= (1 << 20) + (64 << 10) and tight.response_body_truncated


# -- limits -----------------------------------------------------------------------------------------

def test_body_limits_truncate_and_count() -> None:
    parser, events = exchange(b"POST / HTTP/1.1\r\nContent-Length: 20\r\n\r\n" + b"q" * 20,
                              response(b"Content-Length: 30\r\n", b"r" * 30), step=4,
                              request_body_limit=10, response_body_limit=12)
    tx = parser.transactions[0]
    assert (tx.request_body, tx.response_body) == (b"q" * 10, b"r" * 12)
    assert tx.request_body_truncated and tx.response_body_truncated
    assert parser.counters["http.body_limit"] == 2
    assert tx.request_done and tx.response_done


def test_header_count_cap_is_counted_and_framing_still_honoured() -> None:
    headers = b"".join(b"X-%d: v\r\n" % i for i in range(20)) + b"Content-Length: 2\r\n"
    parser, _ = exchange(GET, response(headers, b"ok"), max_headers=5)
    tx = parser.transactions[0]
    assert len(tx.response_headers) == 6 and tx.response_body == b"ok"
    assert parser.counters["http.response_too_many_headers"] == 16


def test_line_length_cap_is_counted() -> None:
    long_value = b"v" * 5000
    parser, _ = exchange(b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\nX: " + long_value + b"\r\nHost: h\r\n\r\n",
                         response(b"X-Long: " + long_value + b"\r\nContent-Length: 2\r\n", b"ok"), step=100,
                         max_header_line=1000)
    tx = parser.transactions[0]
    assert tx.host == b"h" and tx.response_body == b"ok"
    assert len(tx.uri_raw) < 1000 and len(tx.header(b"x-long", response=True) or b"") < 1000
    assert parser.counters["http.line_too_long"] >= 3


def test_transactions_are_pruned() -> None:
    parser, _ = exchange(GET * 20, response(b"Content-Length: 0\r\n") * 20, max_transactions=5)
    assert len(parser.transactions) == 5 and parser.transactions[-1].tx_id == 19
    assert parser.counters["http.transactions_pruned"] == 15


# -- events, gaps, feeding ---------------------------------------------------------------------------

def test_event_order_and_body_events() -> None:
    parser = HttpParser()
    assert stages(parser.feed(True, b"POST /p HTTP/1.1\r\nContent-Length: 4\r\n\r\nab")) == [
        (0, "request_headers"), (0, "request_body")]
    assert stages(parser.feed(True, b"cd")) == [(0, "request_body"), (0, "request_done")]
    assert stages(parser.feed(False, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n")) == [(0, "response_headers")]
    events = parser.feed(False, b"ok")
    assert stages(events) == [(0, "response_body"), (0, "response_done")]
    assert events[0].to_server is False and events[0].tx.response_body == b"ok"
    assert parser.close() == []


def test_gap_in_body_and_in_headers() -> None:
    parser = HttpParser()
    parser.feed(True, GET)
    parser.feed(False, b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
    parser.gap(False, 4)
    events = parser.feed(False, b"xyz")
    tx = parser.transactions[0]
    assert tx.response_body == b"abcxyz" and tx.response_done and "http.body_gap" in tx.anomalies
    assert (0, "response_done") in stages(events)
    parser.feed(True, b"GET /lost HTTP/1.1\r\nHo")
    parser.gap(True, 100)
    parser.feed(True, b"st: x\r\n\r\nGET /found HTTP/1.1\r\n\r\n")
    assert [tx.uri for tx in parser.transactions] == [b"/f", b"/lost", b"/found"]


SAMPLES = [
    (GET, response(b"Content-Length: 68\r\n", EICAR)),
    (GET + GET, response(b"Transfer-Encoding: chunked\r\n", chunked(EICAR, 5, b";x=1")) + response(b"", EICAR)),
    (b"GET / HTTP/1.1\nHost: a\n\n", b"HTTP/1.1 200 OK\nX: a\n b\nContent-Encoding: gzip\n\n" + gzip.compress(EICAR)),
    (GET, b"HTTP/1.1 200 ok\n\rContent-Length: 68\n\r\r\n\r\n" + EICAR),
    (GET, b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 ok\rContent-Encoding: deflate\r\r" + zlib.compress(EICAR)),
    (b"GET /\r\n", EICAR),
    (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\nGET /2 HTTP/1.1\r\n\r\n",
     response(b"Content-Length: 1\r\n", b"1") + b"junk\r\n" + response(b"Content-Length: 1\r\n", b"2")),
]


@pytest.mark.parametrize("sample", range(len(SAMPLES)))
def test_byte_at_a_time_equals_whole(sample: int) -> None:
    request, resp = SAMPLES[sample]
    whole, whole_events = exchange(request, resp, decompress_layers=3)
    split, split_events = exchange(request, resp, step=1, decompress_layers=3)
    assert snapshot(split) == snapshot(whole)
    assert split.counters == whole.counters
    assert {(e.tx.tx_id, e.stage) for e in split_events} == {(e.tx.tx_id, e.stage) for e in whole_events}
    assert any(EICAR in tx.response_body for tx in whole.transactions) or sample == 6


def test_bad_settings_are_rejected() -> None:
    with pytest.raises(ValueError):
        HttpParser(response_body_limit=-1)
    with pytest.raises(ValueError):
        HttpParser(max_headers=0)


# -- fuzzing ------------------------------------------------------------------------------------------

ATOMS = [b"\r\n", b"\n", b"\r", b" ", b"\t", b"\x00", b":", b"\n\r", b"\r\n ", b"HTTP/1.1 200 OK",
         b"HTTP/1.0 100 Continue", b"HTTP/1.1 204 x", b"HTTP/1.1 101 s", b"Content-Length: 5", b"Content-Length: 0",
         b"Transfer-Encoding: chunked",
         b"Content-Encoding: gzip", b"Content-Encoding: deflate, gzip", b"5", b"0", b"3;e\r\nabc\r\n", b"hello",
         b"X: y", b"GET / HTTP/1.1", b"POST /p HTTP/1.1", b"HEAD / HTTP/1.1", b"GET /", b"CONNECT h:1 HTTP/1.1",
         b"Expect: 100-continue", gzip.compress(b"hello world"), zlib.compress(b"zz"), b"\x1f\x8b\x08", b"http"]
HTTPISH = st.lists(st.one_of(st.sampled_from(ATOMS), st.binary(max_size=6)), max_size=40).map(b"".join)
CUTS = st.lists(st.integers(0, 4000), max_size=25)


def feed_cut(request: bytes, resp: bytes, cuts_req: list[int], cuts_resp: list[int]) -> HttpParser:
    parser = HttpParser(decompress_layers=3, max_header_line=200, max_headers=8)
    for to_server, data, cuts in ((True, request, cuts_req), (False, resp, cuts_resp)):
        bounds = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
        for a, b in zip(bounds, bounds[1:]):
            parser.feed(to_server, data[a:b])
    parser.close()
    return parser


@FUZZ
@given(HTTPISH, HTTPISH, CUTS, CUTS)
# a stalled line that fits the cap but whose CRLF crosses it used to be "cut" to nothing, forever
@example(b"", b"Content-Length: 5" + b"Transfer-Encoding: chunked" * 3 + b"HTTP/1.1 200 OK" * 7 + b"\r\n",
         [], [])
@example(b"", b"Content-Length: 5" + b"Transfer-Encoding: chunked" * 3 + b"HTTP/1.1 200 OK" * 7 + b"\r\n",
         [], [199, 200, 201])
# a complete overlong request line is cut like a stalled one, so a segment boundary inside it changes nothing
@example(b"HTTP/1.1 200 OK" * 8 + b"HTTP/1.0 100 Continue" + b"Content-Encoding: deflate, gzip" * 2 + b"\r\n", b"",
         [201], [])
@example(b"", b"\r\n\nHTTP/1.1 200 OK\r\nabc\r\n\n\rxyz", [], [25])  # the excluded boundary: no failure
@example(b"", b"\r" + b"HTTP/1.1 200 OK" * 12 + b"HTTP/1.0 100 Continue\r\n", [], [2])
@example(b"\x00\r\n\r\n \x00:", b"", [7], [])  # the colon after a folded line end decides the header
@example(b"", b"HTTP/1.1 200 OK" * 7 + b"HTTP/1.0 100 Continue" + b"Transfer-Encoding: chunked" * 3 + b"\r\r\n", [], [201])
@example(b"", b"Content-Length: 5Transfer-Encoding: chunked" + b"HTTP/1.1 200 OK" * 10 + b"Content-Length: 5" * 3 + b"\r\n",
         [], [201])
def test_fuzz_split_invariance_and_no_errors(request: bytes, resp: bytes, cuts_req: list[int],
                                             cuts_resp: list[int]) -> None:
    whole = feed_cut(request, resp, [], [])
    # A header block whose blank line ends a segment ends there, without waiting for the CR of a
    # deformed LF-CR or CRLF-CR line end (HttpStream._parse_headers): no cut between them.
    cuts_resp = [c for c in cuts_resp if not (resp[c % (len(resp) + 1):][:1] == b"\r" and resp[:c % (len(resp) + 1)].endswith(b"\n"))]
    split = feed_cut(request, resp, cuts_req, cuts_resp)
    assert "http.parser_error" not in whole.counters and "http.parser_stuck" not in whole.counters
    assert snapshot(split) == snapshot(whole)


@FUZZ
@given(st.lists(st.tuples(st.booleans(), st.binary(max_size=64)), max_size=30),
       st.lists(st.tuples(st.booleans(), st.integers(1, 500)), max_size=3))
def test_fuzz_random_bytes_never_raise(chunks: list[tuple[bool, bytes]], gaps: list[tuple[bool, int]]) -> None:
    parser = HttpParser(max_header_line=100)
    for i, (to_server, data) in enumerate(chunks):
        events = parser.feed(to_server, data)
        assert all(isinstance(e, HttpEvent) for e in events)
        if i < len(gaps):
            parser.gap(*gaps[i])
    parser.close()
    assert "http.parser_error" not in parser.counters


@FUZZ
@given(st.integers(0, len(SAMPLES) - 1),
       st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=8))
def test_fuzz_mutated_samples_never_raise(sample: int, flips: list[tuple[int, int]]) -> None:
    request, resp = (bytearray(x) for x in SAMPLES[sample])
    for pos, value in flips:
        target = request if pos % 2 else resp
        if target:
            target[pos % len(target)] = value
    parser = feed_cut(bytes(request), bytes(resp), [7, 30, 61], [5, 50, 99])
    assert "http.parser_error" not in parser.counters
