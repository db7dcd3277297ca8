"""The plain header block fast path (``plain_headers``) against libhtp's header grammar (``HeaderScanner``).

The fast path must read a block exactly as the scanner does, or leave it to the scanner: these
tests compare the two on random and crafted blocks, and whole exchanges with the fast path on and off."""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from filters.app.http import HttpParser, headers as headers_mod, streams as streams_mod
from filters.app.http.chars import TOKEN
from filters.app.http.headers import HeaderScanner, NeedMore, NoMatch, header_map, header_value, plain_headers
from tests.filters.app.test_http import snapshot

FUZZ = settings(max_examples=1500, deadline=None, database=None, suppress_health_check=list(HealthCheck))

NAME_CHARS = bytes(sorted(TOKEN))
ODD = b"\x00\r\n \t\x0b\x0c:\x7f\xff\x80\"()"
NAMES = st.one_of(
    st.sampled_from([b"Host", b"User-Agent", b"Content-Length", b"content-length", b"Transfer-Encoding",
                     b"Connection", b"X-Forwarded-For", b"Accept", b"Set-Cookie", b"A"]),
    st.binary(min_size=1, max_size=8).map(lambda b: bytes(NAME_CHARS[c % len(NAME_CHARS)] for c in b)),
    st.binary(max_size=6),  # anything, odd bytes included: the fast path must refuse or agree
)
VALUES = st.one_of(
    st.sampled_from([b"", b"close", b"example.com", b"5", b" 5 ", b"chunked", b"a, b", b"x:y", b"\t\tv\t",
                     b"Mozilla/5.0 (X11; Linux x86_64)", b"   "]),
    st.lists(st.one_of(st.sampled_from([b" ", b"\t", b"\x0b", b"\x0c", b"\x00", b"\r", b"\n", b"\r\n ", b":"]),
                       st.binary(max_size=4)), max_size=6).map(b"".join),
)
SEPS = st.sampled_from([b": ", b":", b":\t", b": \t ", b" : ", b"\x00: "])
EOLS = st.sampled_from([b"\r\n"] * 6 + [b"\n", b"\r", b"\n\r", b"\r\r\n", b"\r\n ", b"\r\n\t", b"\r\n\x00"])
TAILS = st.one_of(st.just(b""), st.sampled_from([b"\r", b"\n", b"\r\n", b" ", b"\t", b"\x00", b"X: y\r\n",
                                                 b"HTTP/1.1 200 OK\r\n"]), st.binary(max_size=6))
LINE = st.tuples(NAMES, SEPS, VALUES, EOLS).map(b"".join)
BLOCK = st.tuples(st.lists(LINE, min_size=0, max_size=8).map(b"".join),
                  st.sampled_from([b"\r\n"] * 4 + [b"\n", b"\r", b"\n\r", b""]), TAILS).map(b"".join)


def scanner_view(data: bytes, response: bool, closed: bool, block_start: bool) -> object:
    try:
        return HeaderScanner(data, response, closed).headers(0, block_start)
    except (NeedMore, NoMatch) as e:
        return type(e).__name__


def agrees(data: bytes) -> bool:
    """Whether the fast path took ``data``; asserts it read it as the scanner does in every mode."""
    plain = plain_headers(data)
    if plain is None:
        return False
    end, pairs = plain
    expected = (end, [(n, v, True) for n, v in pairs], True)
    for response in (False, True):
        for closed in (False, True):
            for block_start in (False, True):
                assert scanner_view(data, response, closed, block_start) == expected, (response, closed, block_start)
    return True


CRAFTED = [
    b"Host: a\r\n\r\n",
    b"Host: a\r\n\r\n\r\n",
    b"Host: a\r\n\r\n\r",
    b"Host: a\r\n\r\n\n",
    b"Host: a\r\n\r\n ",
    b"Host: a\r\n\r\n\t x",
    b"Host: a\r\n\r\n\x00",
    b"Host: a\r\n\r\n\r\r\n",
    b"Host: a\r\n\r\n\r \t\n",
    b"Host:\r\n\r\n",
    b"Host:   \r\n\r\n",
    b"Host: \t\r\nX: \x0bv\x0c \r\n\r\n",
    b"Host: a b  c \r\nAccept: */*\r\nUser-Agent: curl/8.0\r\nConnection: close\r\n\r\nbody",
    b"A:x:y:z\r\nB: \x7f\x80\xff\r\n\r\n",
    b"Content-Length: 5\r\ncontent-length: 6\r\n\r\nhello",
    b"X: 1\r\nx: 2\r\nY: 3\r\nX: 4\r\n\r\n",
]


@pytest.mark.parametrize("data", CRAFTED)
def test_crafted_plain_blocks_take_the_fast_path_and_agree(data: bytes) -> None:
    assert agrees(data)


@pytest.mark.parametrize("data", [
    b"Host: a\r\n", b"Host: a\r\n\r", b"Host: a\r\n b\r\n\r\n", b"Host: a\r\n\tb\r\n\r\n", b"Host: a\r\n\x00b\r\n\r\n",
    b"Host: a\n\r\n", b"Host: a\r\n\n", b"Host: a\rb\r\n\r\n", b"Host: a\nb\r\n\r\n", b"Host: a\x00\r\n\r\n",
    b"Host : a\r\n\r\n", b" Host: a\r\n\r\n", b"Ho\x00st: a\r\n\r\n", b"Ho(st: a\r\n\r\n", b"Host a\r\n\r\n",
    b": a\r\n\r\n", b"\r\n\r\n", b"\r\n", b"", b"Host: a\r\nX\r\n\r\n", b"Host: a\r\r\n\r\n",
])
def test_anything_else_is_left_to_the_scanner(data: bytes) -> None:
    assert plain_headers(data) is None


@FUZZ
@given(BLOCK)
@example(b"Host: a\r\n\r\n\r\r\n")
@example(b"Host: \x0b\r\n\r\n")
def test_fast_path_matches_the_scanner(data: bytes) -> None:
    agrees(data)


def test_random_blocks_do_take_the_fast_path() -> None:
    """The differential test above means something only if many random blocks are plain ones."""
    taken = 0

    @settings(max_examples=300, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(st.lists(st.tuples(NAMES, VALUES), min_size=1, max_size=6), TAILS)
    def probe(lines: list[tuple[bytes, bytes]], tail: bytes) -> None:
        nonlocal taken
        taken += agrees(b"".join(n + b": " + v + b"\r\n" for n, v in lines) + b"\r\n" + tail)

    probe()
    assert taken >= 30


# -- whole exchanges with the fast path on and off ------------------------------------------------

def run(request: bytes, response: bytes, cuts: list[int], header_bytes: int, fast: bool,
        monkeypatch: pytest.MonkeyPatch) -> object:
    with monkeypatch.context() as m:
        if not fast:
            m.setattr(streams_mod, "plain_headers", lambda data: None)
        parser = HttpParser(decompress_layers=3, max_headers=6, max_header_line=120, max_header_bytes=header_bytes)
        stages = []
        held = []
        for to_server, data in ((True, request), (False, response)):
            bounds = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
            for a, b in zip(bounds, bounds[1:]):
                stages += [(e.tx.tx_id, e.stage, e.to_server) for e in parser.feed(to_server, data[a:b])]
                held.append((parser.meta_held, parser.held_bytes()))
        stages += [(e.tx.tx_id, e.stage, e.to_server) for e in parser.close()]
        return snapshot(parser), stages, dict(parser.counters), held


BODY = st.sampled_from([b"", b"hello", b"5\r\nhello\r\n0\r\n\r\n", b"0\r\nX-T: 1\r\n\r\n",
                        b"3\r\nabc\r\n0\r\nTrailer: v\r\nT2:\r\n\r\n"])


@settings(max_examples=300, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(BLOCK, BLOCK, BODY, BODY, st.lists(st.integers(0, 400), max_size=4), st.sampled_from([300, 600, 65536]))
def test_exchanges_are_the_same_with_and_without_the_fast_path(
        req_block: bytes, resp_block: bytes, req_body: bytes, resp_body: bytes, cuts: list[int],
        header_bytes: int) -> None:
    monkeypatch = pytest.MonkeyPatch()
    request = b"POST /p HTTP/1.1\r\n" + req_block + req_body + b"GET /2 HTTP/1.1\r\nHost: b\r\n\r\n"
    response = b"HTTP/1.1 200 OK\r\n" + resp_block + resp_body + b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx"
    fast = run(request, response, cuts, header_bytes, True, monkeypatch)
    assert fast == run(request, response, cuts, header_bytes, False, monkeypatch)


@settings(max_examples=500, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(st.lists(st.tuples(st.one_of(NAMES, st.sampled_from([b"HOST", b"Ho\x00st", b"\x00host\x00", b"hos"])),
                          st.binary(max_size=3)), max_size=8),
       st.sampled_from([b"host", b"content-length", b"transfer-encoding", b"a", b"x"]))
def test_header_map_looks_up_as_header_value(headers: list[tuple[bytes, bytes]], name: bytes) -> None:
    assert header_map(headers).get(name) == header_value(headers, name)


def test_headers_module_exports_the_fast_path() -> None:
    assert streams_mod.plain_headers is headers_mod.plain_headers


# -- request lines --------------------------------------------------------------------------------

LINE_ATOMS = [b"GET", b"POST", b"get", b" ", b"  ", b"\t", b"\x0b", b"\x0c", b"\x00", b"/", b"/a b", b"/x?y=1",
              b"HTTP/1.1", b"http/1.0", b"HTTP/", b"HTTPS/1", b"HTTP", b"\r", b"\n", b"\r\n", b"\xff"]


@FUZZ
@given(st.lists(st.one_of(st.sampled_from(LINE_ATOMS), st.binary(max_size=3)), max_size=10).map(b"".join))
@example(b"GET / HTTP/1.1\r\n")
@example(b"GET / HTTP/1.1\r\r\n")
@example(b"GET /a HTTP/1.1 x\r\n")
def test_request_line_fast_path_matches_the_general_split(line: bytes) -> None:
    assert streams_mod.split_request_line(line) == streams_mod.split_request_line_general(line)


@pytest.mark.parametrize("line", [b"GET / HTTP/1.1\r\n", b"POST /x?a=b HTTP/1.0\n", b"G /u http/2", b"M\x00 u HTTP/"])
def test_plain_request_lines_take_the_fast_path(line: bytes) -> None:
    assert streams_mod._PLAIN_REQUEST_LINE.fullmatch(line)
    assert streams_mod.split_request_line(line) == streams_mod.split_request_line_general(line)
