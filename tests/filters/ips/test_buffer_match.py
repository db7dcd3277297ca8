"""Tests for filters.ips.buffer_match: content/pcre/byte_*/isdataat/bsize/urilen/base64 semantics on buffers, transforms and limits."""
from __future__ import annotations

import hashlib
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from filters.ips.buffer_match import (
    MatchContext,
    apply_transforms,
    match_items,
    match_section,
    strtoull,
)
from filters.ips.netspec import Variables
from filters.ips.rule import Transform
from filters.ips.rule_parser import parse_rule

VARS = Variables.suricata_defaults()


def m(options: str, data: bytes, buffer: str = "pkt", ctx: MatchContext | None = None) -> bool:
    r = parse_rule(f"alert tcp any any -> any any ({options} sid:1;)", vars=VARS)
    section = r.section(buffer)
    assert section is not None
    return match_section(section, data, ctx or MatchContext())


# -- content ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options,data,expected",
    [
        ('content:"cd";', b"abcdef", True),
        ('content:"CD";', b"abcdef", False),
        ('content:"CD"; nocase;', b"abcdef", True),
        ('content:"cd"; offset:2;', b"abcdef", True),
        ('content:"cd"; offset:3;', b"abcdef", False),
        ('content:"de"; depth:4;', b"abcdef", False),
        ('content:"de"; depth:5;', b"abcdef", True),
        ('content:"cd"; offset:2; depth:2;', b"abcdef", True),  # depth counts from offset
        ('content:"cd"; depth:2; offset:2;', b"abcdef", True),
        ('content:"cd"; offset:1; depth:2;', b"abcdef", False),
        ('content:"abc"; startswith;', b"abcdef", True),
        ('content:"bcd"; startswith;', b"abcdef", False),
        ('content:"def"; endswith;', b"abcdef", True),
        ('content:"de"; endswith;', b"abcdef", False),
        ('content:"ab"; endswith;', b"abab", True),  # a later occurrence ends the buffer
        ('content:"abcdef"; startswith; endswith;', b"abcdef", True),
        ('content:"abcdef"; startswith; endswith;', b"abcdefg", False),
        ('content:!"xyz";', b"abcdef", True),
        ('content:!"cd";', b"abcdef", False),
        ('content:!"ef"; endswith;', b"abcdef", False),
        ('content:!"ef"; endswith;', b"abcdefg", True),
        ('content:"a";', b"", False),
        ('content:!"a";', b"", True),
        ('content:"abcdefg";', b"abcdef", False),
    ],
)
def test_content_absolute(options, data, expected):
    assert m(options, data) is expected


@pytest.mark.parametrize(
    "options,data,expected",
    [
        ('content:"one"; content:"two"; distance:0;', b"one two", True),
        ('content:"one"; content:"two"; distance:0;', b"two one", False),
        ('content:"one"; content:"two"; distance:1;', b"one two", True),
        ('content:"one"; content:"two"; distance:2;', b"one two", False),
        ('content:"one"; content:"two"; within:4;', b"one two", True),
        ('content:"one"; content:"two"; within:3;', b"one two", False),
        ('content:"one"; content:"two"; distance:1; within:3;', b"one two", True),
        ('content:"one"; content:"two"; distance:2; within:3;', b"one two", False),
        ('content:"one"; content:"two"; distance:0; within:3;', b"one  two", False),
        # negative distance: look back before the end of the previous match
        ('content:"def"; content:"bcd"; distance:-5; within:3;', b"abcdef", True),
        ('content:"def"; content:"abc"; distance:-5; within:3;', b"abcdef", False),
        ('content:"def"; content:"abc"; distance:-100;', b"abcdef", True),
        # negated relative content
        ('content:"a"; content:!"b"; distance:0; within:1;', b"ab", False),
        ('content:"a"; content:!"b"; distance:0; within:1;', b"ac", True),
        ('content:"a"; content:!"b"; distance:0; within:1;', b"acb", True),
        ('content:"a"; content:!"b"; within:1; content:"c"; distance:0;', b"ac", True),
        # endswith on a relative content (suricata-verify bug-2158 style)
        ('content:"Test"; content:"yYY"; distance:1; within:8; endswith;', b"Test aayYY", True),
        ('content:"Test"; content:"yYY"; distance:1; within:8; endswith;', b"Test aayYYz", False),
        # a second absolute content is independent of the first
        ('content:"b"; content:"a";', b"ab", True),
    ],
)
def test_content_relative(options, data, expected):
    assert m(options, data) is expected


def test_backtracking_retries_the_previous_content():
    # first "abc" is followed by X; the retry finds the second one followed by Y
    assert m('content:"abc"; content:"Y"; within:1;', b"abcXabcY")
    assert m('content:"abc"; content:"Y"; distance:0; within:1;', b"abcXabcY")
    assert not m('content:"abc"; content:"Y"; within:1;', b"abcXabcZ")
    # three-deep chain: the middle content is retried, then the first
    assert m('content:"a"; content:"b"; distance:0; content:"c"; within:1;', b"abXabc")
    assert m('content:"k"; content:"a"; within:2; content:"b"; within:1;', b"k1aXk2ab")


def test_retry_through_relative_byte_test_and_isdataat():
    assert m('content:"ID"; byte_test:1,=,0x32,0,relative;', b"ID1 ID2")
    assert m('content:"ID"; isdataat:!3,relative;', b"IDxxxxx ID")


def test_independent_failure_stops_at_once():
    ctx = MatchContext()
    assert not m('content:"a"; content:"zzz";', b"a" * 200, ctx=ctx)
    assert ctx.steps <= 3


def test_recursion_limit_counts_as_no_match():
    data = b"a" * 5000
    ctx = MatchContext()
    assert not m('content:"a"; content:"b"; within:1;', data, ctx=ctx)
    assert ctx.limit_hit and ctx.steps >= ctx.recursion_limit
    ctx = MatchContext(recursion_limit=10)
    assert not m('content:"a"; content:"b"; within:1;', b"aaaaaaaaaaaaaaab", ctx=ctx)
    assert m('content:"a"; content:"b"; within:1;', b"aaaaaaaaaaaaaaab")


# -- pcre ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options,data,expected",
    [
        ('pcre:"/^gEt/i";', b"GET / HTTP/1.1", True),
        ('pcre:"/^gEt/";', b"GET / HTTP/1.1", False),
        ('pcre:!"/two/";', b"one", True),
        ('pcre:!"/two/";', b"two", False),
        ('content:"GET"; pcre:"/^ \\//R";', b"GET /x", True),  # ^ anchors at the cursor
        ('content:"GET"; pcre:"/^\\//R";', b"GET /x", False),
        ('content:"GET"; pcre:"/\\s+HTTP/R";', b"GET /two/ HTTP/1.0", True),
        ('content:"HTTP"; pcre:"/GET/R";', b"GET / HTTP/1.0", False),
        ('content:"x"; pcre:"/(?<=x)y/R";', b"xy", False),  # lookbehind cannot see before the cursor
        ('pcre:"/a.c/s";', b"a\nc", True),
        ('pcre:"/a.c/";', b"a\nc", False),
        ('pcre:"/^b/m";', b"a\nb", True),
        ('pcre:"/^b/";', b"a\nb", False),
        ('pcre:"/a b/x";', b"ab", True),
        ('pcre:"/b/A";', b"ab", False),
        ('pcre:"/a/A";', b"ab", True),
        ('content:"a"; pcre:"/c/AR";', b"abc", False),
        ('content:"b"; pcre:"/c/AR";', b"abc", True),
        ('pcre:"/\\x41\\x{42}/";', b"AB", True),
        ('pcre:"/caf\u00e9/";', "caf\u00e9".encode(), True),
    ],
)
def test_pcre(options, data, expected):
    assert m(options, data) is expected


def test_pcre_moves_the_cursor_and_is_retried():
    assert m('pcre:"/a./"; content:"Z"; within:1;', b"abacZ")
    assert not m('pcre:"/a./"; content:"Z"; within:1;', b"abacY")
    assert m('pcre:"/[0-9]+/"; content:"x"; distance:0; within:1;', b"12y34x")


def test_pcre_buffer_flag_section():
    assert m('pcre:"/\\/two\\//U";', b"/one/two/", buffer="http.uri")


# -- isdataat / bsize / urilen --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options,expected",
    [
        ("isdataat:6;", True),  # "Hi all!" has a byte at index 6
        ("isdataat:7;", False),
        ("isdataat:!7;", True),
        ('content:"all"; isdataat:1,relative;', True),
        ('content:"Hi"; isdataat:5,relative;', True),
        ('content:"Hi"; isdataat:6,relative;', False),
        ('content:"Hi"; isdataat:!6,relative;', True),
        ('content:"all!"; isdataat:!1,relative;', True),
        ('content:"all"; isdataat:!1,relative;', False),
        ('content:"Hi"; isdataat:!1,relative;', False),
    ],
)
def test_isdataat(options, expected):
    assert m(options, b"Hi all!") is expected


@pytest.mark.parametrize(
    "test,size,expected",
    [
        ("10", 10, True), ("10", 11, False), ("<10", 9, True), ("<10", 10, False), (">10", 11, True),
        ("<=10", 10, True), (">=10", 9, False), ("!10", 9, True), ("5<>10", 6, True), ("5<>10", 5, False),
        ("5-10", 10, False), ("!5-10", 5, True), ("!5-10", 7, False), ("&0x0f=0x05", 0x15, True),
        ("&0x0f!=0x05", 0x15, False), ("0", 0, True),
    ],
)
def test_bsize(test, size, expected):
    assert m(f"http.uri; bsize:{test};", b"x" * size, buffer="http.uri") is expected


def test_bsize_with_content():
    assert m('http.uri; content:"/a"; bsize:2;', b"/a", buffer="http.uri")
    assert not m('http.uri; content:"/a"; bsize:2;', b"/ab", buffer="http.uri")


def test_urilen():
    assert m("urilen:>3;", b"/abc", buffer="http.uri")
    assert not m("urilen:>3;", b"/ab", buffer="http.uri")
    assert m("urilen:2<>5,raw;", b"/ab", buffer="http.uri.raw")


# -- byte_test / byte_jump / byte_extract -----------------------------------------------------------------

DATA = bytes([0x01, 0x00, 0x80, 0x10, 0xFF, 0x00, 0x02])


@pytest.mark.parametrize(
    "options,data,expected",
    [
        ("byte_test:1,=,1,0;", DATA, True),
        ("byte_test:2,=,0x0100,0;", DATA, True),
        ("byte_test:2,=,1,0,little;", DATA, True),
        ("byte_test:1,&,128,2;", DATA, True),
        ("byte_test:1,!&,128,2;", DATA, False),
        ("byte_test:1,^,0x80,2;", DATA, False),
        ("byte_test:1,>,0x0f,3;", DATA, True),
        ("byte_test:1,<,0x10,3;", DATA, False),
        ("byte_test:1,<=,0x10,3;", DATA, True),
        ("byte_test:1,>=,0x11,3;", DATA, False),
        ("byte_test:1,!=,0x10,3;", DATA, False),
        ("byte_test:1,!,0x11,3;", DATA, True),
        ("byte_test:4,>,0,4;", DATA, False),  # only 3 bytes left
        ("byte_test:1,=,2,-1;", DATA, False),
        ("byte_test:2,=,0x0f,3,bitmask 0x0ff0;", DATA, True),  # 0x10ff & 0x0ff0 = 0x00f0, >> 4
        ('content:"|80|"; byte_test:1,=,0x10,0,relative;', DATA, True),
        ('content:"|80|"; byte_test:1,=,0x80,-1,relative;', DATA, True),
        ('content:"|00 02|"; byte_test:1,=,0,0,relative;', DATA, False),  # nothing after
        ("byte_test:3,=,123,0,string,dec;", b"123abc", True),
        ("byte_test:4,=,123,0,string,dec;", b"123abc", True),  # strtoull stops at 'a'
        ("byte_test:2,=,31,0,string,hex;", b"1fZZ", True),
        ("byte_test:4,=,0x1f,0,string,hex;", b"0x1f", True),
        ("byte_test:2,=,15,0,string,oct;", b"17", True),
        ("byte_test:2,=,1,0,string,dec;", b"ab", False),
        ("byte_test:0,=,0,0,string,dec;", b"0", True),
        ("byte_test:0,=,0,0,string,dec;", b"10", False),
    ],
)
def test_byte_test(options, data, expected):
    assert m(options, data) is expected


@pytest.mark.parametrize(
    "options,data,expected",
    [
        # Suricata unit test: jump 1 byte read at offset 2 (value 0) -> cursor 3
        ('byte_jump:1,2; content:"|00|"; distance:2; within:1;', bytes([1, 0, 0, 0, 0, 0]), True),
        ('byte_jump:1,0; content:"X";  within:1;', b"\x02abX", True),
        ('byte_jump:1,0; content:"X";  within:1;', b"\x01abX", False),
        ('byte_jump:1,0,multiplier 2; content:"X"; within:1;', b"\x01abX", True),
        ('byte_jump:1,0,align; content:"X"; within:1;', b"\x02abcdXz", True),  # 2 -> 4, + 1 byte read
        ('byte_jump:1,0; content:"X"; within:1;', b"\x02abcdXz", False),
        ('byte_jump:1,0,from_beginning; content:"X"; within:1;', b"\x03abX", True),
        ('byte_jump:1,0,from_beginning,post_offset -1; content:"b"; within:1;', b"\x03abX", True),
        ('byte_jump:1,0,from_end,post_offset -2; content:"bX"; within:2;', b"\x00abX", True),
        ('byte_jump:1,0,post_offset 1; content:"b"; within:1;', b"\x00abX", True),
        ('byte_jump:2,0,little; content:"X"; within:1;', b"\x01\x00aX", True),
        ('byte_jump:1,0,string,dec; content:"X"; within:1;', b"3abcX", True),
        ("byte_jump:1,0;", b"\x05ab", False),  # lands past the end
        ("byte_jump:1,0;", b"\x02ab", False),  # lands exactly at the end: Suricata fails it
        ('content:"a"; byte_jump:1,0,relative; content:"X"; within:1;', b"a\x01zX", True),
    ],
)
def test_byte_jump(options, data, expected):
    assert m(options, data) is expected


def test_byte_extract_feeds_later_keywords():
    opts = 'content:"L"; byte_extract:1,0,len,relative; content:"END"; distance:len; within:3;'
    assert m(opts, b"L\x02abEND")
    assert not m(opts, b"L\x01abEND")
    ctx = MatchContext()
    assert m("byte_extract:2,0,n,string,dec,multiplier 2; byte_test:1,=,n,0;", b"12", ctx=ctx) is False
    assert ctx.vars["n"] == 24
    assert m('byte_extract:1,0,sz; isdataat:sz;', b"\x02ab")
    assert not m('byte_extract:1,0,sz; isdataat:sz;', b"\x03ab")
    assert m('byte_extract:1,0,off; content:"Z"; offset:off; depth:1;', b"\x02aZ")
    assert m("byte_extract:1,0,v,align 4; byte_test:1,=,v,1;", b"\x02\x04")


def test_byte_extract_heartbleed_style_rule():
    opts = ('content:"|18 03|"; depth:2; byte_test:1,<,4,0,relative; content:!"|00 03|"; distance:1; within:2; '
            'byte_extract:2,1,rec_len,relative; content:"|01|"; within:1; byte_test:2,>,rec_len,0,relative;')
    assert m(opts, bytes.fromhex("18 03 02 00 10 01 40 00"))
    assert not m(opts, bytes.fromhex("18 03 02 00 10 01 00 01"))  # payload length not above rec_len
    assert not m(opts, bytes.fromhex("18 03 02 00 03 01 40 00"))  # the negated |00 03| is present


def test_variables_are_shared_across_sections_in_one_context():
    r = parse_rule('alert http any any -> any any (http.uri; content:"/"; byte_extract:1,0,n,relative; '
                   'http.header; byte_test:1,=,n,0; sid:1;)', vars=VARS)
    ctx = MatchContext()
    assert match_section(r.section("http.uri"), b"/\x07", ctx)
    assert match_section(r.section("http.header"), b"\x07", ctx)


def test_strtoull():
    assert strtoull(b" 42x", 10) == (42, 3)
    assert strtoull(b"+7", 10) == (7, 2)
    assert strtoull(b"0x1F", 16) == (31, 4)
    assert strtoull(b"x", 10) is None
    assert strtoull(b"99999999999999999999999", 10) is None


# -- base64 / transforms -------------------------------------------------------------------------------


def test_base64_decode_and_data():
    import base64

    payload = base64.b64encode(b"<!DOCTYPE x SYSTEM y>")
    opts = ('content:"<m:Data>"; base64_decode:bytes 300, offset 0, relative; base64_data; '
            'content:"<!DOCTYPE"; content:"SYSTEM"; distance:0;')
    assert m(opts, b"xx<m:Data>" + payload + b"</m:Data>")
    assert not m(opts, b"xx<m:Data>" + base64.b64encode(b"<!DOCTYPE x") + b"<")
    assert m('base64_decode:offset 2; base64_data; content:"hi";', b"..aGk=")
    assert m('base64_decode; base64_data; content:"hi!";', b"aGkh!!")  # stops at the first non-alphabet byte
    assert not m('base64_decode:bytes 2; base64_data; content:"hi";', b"aGk=")
    assert not m('base64_decode:offset 10; base64_data; content:"hi";', b"aGk=")


def test_apply_transforms():
    assert apply_transforms((Transform.DOTPREFIX,), b"example.com") == b".example.com"
    assert apply_transforms((Transform.DOTPREFIX,), b"") == b""
    assert apply_transforms((Transform.TO_LOWERCASE,), b"AbC") == b"abc"
    assert apply_transforms((Transform.TO_UPPERCASE,), b"AbC") == b"ABC"
    assert apply_transforms((Transform.STRIP_WHITESPACE,), b" a \tb\r\n") == b"ab"
    assert apply_transforms((Transform.COMPRESS_WHITESPACE,), b"a  \t b") == b"a b"
    assert apply_transforms((Transform.URL_DECODE,), b"%41+b%2") == b"A b%2"
    assert apply_transforms((Transform.TO_MD5,), b"x") == hashlib.md5(b"x").digest()
    assert apply_transforms((Transform.TO_SHA1,), b"x") == hashlib.sha1(b"x").digest()
    assert apply_transforms((Transform.TO_SHA256,), b"x") == hashlib.sha256(b"x").digest()


def test_dotprefix_section_matches_domain_boundaries():
    r = parse_rule('alert dns any any -> any any (dns.query; dotprefix; content:".evil.com"; endswith; sid:1;)',
                   vars=VARS)
    (s,) = r.sections
    assert match_section(s, b"evil.com", MatchContext())
    assert match_section(s, b"www.evil.com", MatchContext())
    assert not match_section(s, b"notevil.com", MatchContext())
    assert match_items(s.items, b".evil.com", MatchContext())


# -- properties and corpus robustness ----------------------------------------------------------------

_ALPHA = st.binary(min_size=0, max_size=24).map(lambda b: bytes(x % 3 + 97 for x in b))
_PAT = st.binary(min_size=1, max_size=3).map(lambda b: bytes(x % 3 + 97 for x in b))


def _occurrences(data: bytes, pat: bytes) -> list[int]:
    return [i for i in range(len(data) - len(pat) + 1) if data[i : i + len(pat)] == pat]


@settings(max_examples=300, deadline=None)
@given(data=_ALPHA, pat=_PAT, offset=st.integers(0, 6), depth=st.none() | st.integers(0, 8))
def test_absolute_content_matches_the_definition(data, pat, offset, depth):
    opts = f'content:"{pat.decode()}"; offset:{offset};'
    if depth is not None and depth >= len(pat):
        opts += f" depth:{depth};"
    else:
        depth = None
    end = offset + depth if depth is not None else len(data)
    want = any(i >= offset and i + len(pat) <= end for i in _occurrences(data, pat))
    assert m(opts, data) is want


@settings(max_examples=400, deadline=None)
@given(data=_ALPHA, a=_PAT, b=_PAT, distance=st.none() | st.integers(-4, 4), within=st.none() | st.integers(1, 8))
def test_relative_contents_match_full_backtracking(data, a, b, distance, within):
    if within is not None and within < len(b):
        within = len(b)
    opts = f'content:"{a.decode()}"; content:"{b.decode()}";'
    opts += f" distance:{distance};" if distance is not None else ""
    opts += f" within:{within};" if within is not None else ""
    if distance is None and within is None:
        opts += " distance:0;"
        distance = 0
    d = distance or 0

    def ok(i: int, j: int) -> bool:
        prev = i + len(a)
        start = 0 if d < 0 and -d > prev else prev + d
        end = prev + d + within if within is not None else len(data)
        return j >= start and j + len(b) <= end

    want = any(ok(i, j) for i in _occurrences(data, a) for j in _occurrences(data, b))
    assert m(opts, data) is want


def test_every_et_open_section_evaluates_without_raising(et_open):
    res = et_open
    buffers = [b"", b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", os.urandom(300), bytes(range(256)) * 4, b"A" * 2000]
    for r in res.rules:
        for s in r.sections:
            for data in buffers:
                match_section(s, data, MatchContext())
