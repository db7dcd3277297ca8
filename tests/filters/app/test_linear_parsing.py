"""Parsing of hostile lines stays linear: the regexes on attacker bytes must not backtrack
quadratically (a request line of 18 kB of blanks took seconds through re.search)."""
from __future__ import annotations

import re
import time

from hypothesis import given, settings, strategies as st

from filters.app.http import HttpParser
from filters.app.http.streams import _last_token, split_request_line

_OLD = re.compile(rb"[ \t\x0b\x0c]+(\S+)$")


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=40).map(lambda b: bytes(b" \t\r\n\x0b\x0caH/"[x % 9] for x in b)))
def test_last_token_is_the_regex_search(rest):
    rest = rest.strip(b" \t\r\n\x0b\x0c")
    m = _OLD.search(rest)
    assert _last_token(rest) == ((m.start(), m.group(1)) if m else None)


def test_a_request_line_of_blanks_is_parsed_in_linear_time():
    line = b"GET a\t" + b"\t" * 17_000 + b"x y\r\n"
    start = time.perf_counter()
    for _ in range(5):
        method, uri, protocol, _lead = split_request_line(line)
    assert time.perf_counter() - start < 1.0  # re.search took ~3 s per line here
    assert method == b"GET" and protocol == b"y"
    p = HttpParser()
    start = time.perf_counter()
    events = p.feed(True, b"GET a" + b" " * 17_000 + b"b HTTP/1.1\r\nHost: x\r\n\r\n")
    assert time.perf_counter() - start < 1.0
    assert events and events[0].tx.protocol == b"HTTP/1.1"
