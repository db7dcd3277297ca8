"""Tests for filters.app.dns: message parsing, compression guards, TCP framing, sinkhole builders, names."""
from __future__ import annotations

import contextlib
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.dns import DNS, DNSQR, DNSRR, DNSRRMX

from filters.app import dns
from filters.app.events import DnsMessage
from filters.app.dns import (
    DnsMalformed,
    DnsTcpParser,
    DnsTruncated,
    build_query,
    build_response,
    encode_name,
    normalize_name,
    nxdomain,
    parse_dns,
    read_name,
)
from tests.shared_data import SharedData

FUZZ = settings(max_examples=1000, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])

QUERY = bytes(DNS(id=0x1234, rd=1, qd=DNSQR(qname="www.Example.com", qtype="A")))
RESPONSE = bytes(
    DNS(
        id=0x1234,
        qr=1,
        rd=1,
        ra=1,
        qd=DNSQR(qname="www.example.com", qtype="A"),
        an=[
            DNSRR(rrname="www.example.com", type="CNAME", ttl=300, rdata="edge.example.net"),
            DNSRR(rrname="edge.example.net", type="A", ttl=30, rdata="192.0.2.7"),
            DNSRR(rrname="edge.example.net", type="AAAA", ttl=30, rdata="2001:db8::7"),
            DNSRRMX(rrname="example.com", ttl=60, preference=10, exchange="mx.example.com"),
        ],
    )
)


def header(qd: int = 1, an: int = 0, flags: int = 0x0100, txid: int = 7) -> bytes:
    return struct.pack("!HHHHHH", txid, flags, qd, an, 0, 0)


# --- parsing ---------------------------------------------------------------------------------------


def test_query() -> None:
    msg = parse_dns(QUERY)
    assert msg is not None
    assert msg.to_server and msg.txid == 0x1234 and msg.rcode == 0 and not msg.truncated
    assert msg.questions == (dns.DnsQuestion(b"www.Example.com", 1, 1),)  # case preserved
    assert parse_dns(QUERY, to_server=False).to_server is False  # the caller's direction wins


def test_response_answers() -> None:
    msg = parse_dns(RESPONSE)
    assert msg is not None and not msg.to_server and not msg.truncated
    cname, a, aaaa, mx = msg.answers
    assert (cname.name, cname.rrtype, cname.ttl, cname.data) == (b"www.example.com", 5, 300, b"edge.example.net")
    assert (a.name, a.data) == (b"edge.example.net", bytes([192, 0, 2, 7]))
    assert aaaa.data == bytes.fromhex("20010db8000000000000000000000007")
    assert mx.rrtype == 15 and mx.data[:2] == b"\x00\x0a"  # other types: raw rdata


def test_compressed_names_are_followed() -> None:
    raw = bytes(DNS(qr=1, qd=DNSQR(qname="a.example.com"), an=DNSRR(rrname="a.example.com", type="CNAME", rdata="b.example.com")))
    packed = DNS(raw)
    packed = packed.compress() if hasattr(packed, "compress") else packed
    msg = parse_dns(bytes(packed))
    assert msg is not None and msg.answers[0].data == b"b.example.com" and msg.answers[0].name == b"a.example.com"


def test_root_name() -> None:
    msg = parse_dns(header() + b"\x00" + struct.pack("!HH", 2, 1))
    assert msg is not None and msg.questions[0].name == b"" and msg.questions[0].rrtype == 2


@pytest.mark.parametrize(
    ("name_bytes", "error"),
    [
        (b"\xc0\x0c", DnsMalformed),  # points at itself
        (b"\x01a\xc0\x0c", DnsMalformed),  # label then back to its own start
        (b"\xc0\x10\x00\x00\xc0\x0c", DnsMalformed),  # two pointers pointing at each other
        (b"\xc0\xff", DnsMalformed),  # past the message
        (b"\x40abc", DnsMalformed),  # extended label type
        (b"\x80abc", DnsMalformed),
        (b"\x3fabc", DnsTruncated),  # label runs past the end
        (b"\x03abc", DnsTruncated),  # no root label
        (b"\xc0", DnsTruncated),
    ],
)
def test_name_errors(name_bytes: bytes, error: type[Exception]) -> None:
    data = header() + name_bytes
    with pytest.raises(error):
        read_name(data, 12)
    msg = parse_dns(data)
    assert msg is not None and msg.truncated and msg.questions == ()


def test_pointer_chain_is_capped() -> None:
    # a long chain of distinct backward pointers, each to the previous one, ending in a label
    body = bytearray(b"\x01x\x00")
    for i in range(200):
        body += struct.pack("!H", 0xC000 | (12 + (0 if i == 0 else 3 + 2 * (i - 1))))
    data = header(qd=0, flags=0x8000) + bytes(body)
    with pytest.raises(DnsMalformed):
        read_name(data, len(data) - 2)
    assert read_name(data, 12 + 3 + 2 * 50)[0] == b"x"


def test_forward_pointer_allowed() -> None:
    data = header() + b"\xc0\x12" + b"\x00\x01\x00\x01" + b"\x03fwd\x00"
    msg = parse_dns(data)
    assert msg is not None and msg.questions[0].name == b"fwd" and not msg.truncated


def test_name_length_cap() -> None:
    ok = b"".join(b"\x3f" + b"a" * 63 for _ in range(3)) + b"\x3d" + b"b" * 61 + b"\x00"  # 255 bytes on the wire
    assert len(read_name(header() + ok, 12)[0]) == 253
    too_long = b"".join(b"\x3f" + b"a" * 63 for _ in range(4)) + b"\x00"
    with pytest.raises(DnsMalformed):
        read_name(header() + too_long, 12)
    many = b"\x00".join([b""] * 0) + b"\x01a" * 128 + b"\x00"  # 128 labels (257 bytes)
    with pytest.raises(DnsMalformed):
        read_name(header() + many, 12)


def test_section_caps() -> None:
    rr = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 5, 4) + b"\x0a\x00\x00\x01"
    data = header(qd=1, an=1000, flags=0x8180) + b"\x01a\x00\x00\x01\x00\x01" + rr * 300
    msg = parse_dns(data)
    assert msg is not None and len(msg.answers) == dns.MAX_RECORDS and msg.truncated
    many_q = header(qd=0xFFFF) + b"\x00\x00\x01\x00\x01" * 300
    msg = parse_dns(many_q)
    assert msg is not None and len(msg.questions) == dns.MAX_RECORDS and msg.truncated


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x12\x34\x01\x00",
        header()[:11],
        header(flags=0x1800),  # opcode 3 (unassigned)
        header(flags=0x7800) + b"\x00\x00\x01\x00\x01",  # opcode 15
        header(qd=0),  # a query without a question
    ],
)
def test_not_dns(data: bytes) -> None:
    assert parse_dns(data) is None


def test_every_prefix_of_a_response() -> None:
    full = parse_dns(RESPONSE)
    for cut in range(len(RESPONSE)):
        msg = parse_dns(RESPONSE[:cut])
        if cut < 12:
            assert msg is None
        else:
            assert msg is not None and msg.truncated
            assert msg.questions == full.questions[: len(msg.questions)]
            assert msg.answers == full.answers[: len(msg.answers)]


def test_bad_rdata_name_marks_truncated() -> None:
    rr = b"\xc0\x0c" + struct.pack("!HHIH", 5, 1, 5, 2) + b"\xc0\x1f"  # CNAME pointing at itself
    data = header(qd=1, an=2, flags=0x8180) + b"\x01a\x00\x00\x01\x00\x01" + rr + rr
    msg = parse_dns(data)
    assert msg is not None and msg.truncated and msg.answers == ()


# --- TCP -------------------------------------------------------------------------------------------


def framed(message: bytes) -> bytes:
    return struct.pack("!H", len(message)) + message


def test_tcp_two_messages_in_one_segment() -> None:
    p = DnsTcpParser()
    msgs = p.feed(True, framed(QUERY) + framed(QUERY))
    assert len(msgs) == 2 and all(m.to_server for m in msgs)
    [reply] = p.feed(False, framed(RESPONSE))
    assert not reply.to_server and len(reply.answers) == 4


def test_tcp_split_at_every_byte() -> None:
    stream = framed(QUERY) + framed(RESPONSE)
    for cut in range(len(stream) + 1):
        p = DnsTcpParser()
        msgs = p.feed(True, stream[:cut]) + p.feed(True, stream[cut:])
        assert [len(m.answers) for m in msgs] == [0, 4], cut


def test_tcp_directions_are_separate() -> None:
    p = DnsTcpParser()
    q = framed(QUERY)
    assert p.feed(True, q[:5]) == [] and p.feed(False, framed(RESPONSE)[:3]) == []
    assert len(p.feed(True, q[5:])) == 1


def test_tcp_not_dns_gives_up() -> None:
    p = DnsTcpParser()
    assert p.feed(True, b"GET / HTTP/1.1\r\n" * 2) == []  # announces an 18 KB message: waits for it
    assert not p.failed
    p = DnsTcpParser()
    junk = framed(b"\x00" * 4) * dns.MAX_TCP_BAD
    p.feed(True, junk)
    assert p.failed and "dns.tcp_not_dns" in p.anomalies
    assert p.feed(True, framed(QUERY)) == []


def test_tcp_buffer_bounded_by_one_message() -> None:
    p = DnsTcpParser()
    p.feed(True, b"\xff\xff" + b"\x00" * 70000)
    assert len(p._buffers[True]) < 70000 + 2 - 65535 + 2


# --- builders --------------------------------------------------------------------------------------


def test_build_response_round_trip_with_scapy() -> None:
    answer = build_response(QUERY, answers=[(1, bytes([10, 0, 0, 1])), (1, bytes([10, 0, 0, 2]))], ttl=120)
    parsed = DNS(answer)
    assert parsed.id == 0x1234 and parsed.qr == 1 and parsed.rd == 1 and parsed.ra == 1 and parsed.rcode == 0
    assert parsed.qdcount == 1 and parsed.qd[0].qname == b"www.Example.com."
    assert parsed.ancount == 2
    assert [parsed.an[i].rdata for i in range(2)] == ["10.0.0.1", "10.0.0.2"]
    assert parsed.an[0].rrname == b"www.Example.com." and parsed.an[0].ttl == 120
    ours = parse_dns(answer)
    assert ours is not None and not ours.to_server and [a.data for a in ours.answers] == [b"\n\x00\x00\x01", b"\n\x00\x00\x02"]


def test_build_aaaa_and_cname_answers() -> None:
    q = bytes(DNS(id=9, qd=DNSQR(qname="ads.example", qtype="AAAA")))
    resp = DNS(build_response(q, answers=[(5, encode_name("sinkhole.local")), (28, bytes(16))]))
    assert resp.an[0].type == 5 and resp.an[0].rdata == b"sinkhole.local."
    assert resp.an[1].type == 28 and resp.an[1].rdata == "::"


def test_nxdomain_round_trip() -> None:
    parsed = DNS(nxdomain(QUERY))
    assert parsed.id == 0x1234 and parsed.qr == 1 and parsed.rcode == 3 and parsed.ancount == 0
    assert parsed.qd[0].qname == b"www.Example.com."
    msg = parse_dns(nxdomain(QUERY))
    assert msg is not None and msg.rcode == dns.RCODE_NXDOMAIN and msg.questions[0].name == b"www.Example.com"


def test_build_response_refused_and_flags_copied() -> None:
    q = bytes(DNS(id=77, rd=0, cd=1, qd=DNSQR(qname="x.test")))
    parsed = DNS(build_response(q, rcode=dns.RCODE_REFUSED))
    assert parsed.rd == 0 and parsed.cd == 1 and parsed.rcode == 5 and parsed.aa == 0


def test_build_response_drops_query_extras() -> None:
    from scapy.layers.dns import DNSRROPT

    q = bytes(DNS(id=5, qd=DNSQR(qname="edns.test"), ar=DNSRROPT(rclass=4096)))
    parsed = DNS(build_response(q, answers=[(1, b"\x01\x02\x03\x04")]))
    assert parsed.arcount == 0 and parsed.ancount == 1 and parsed.an[0].rdata == "1.2.3.4"


def test_build_response_to_damaged_query_is_formerr() -> None:
    damaged = header() + b"\xc0\x0c"
    parsed = DNS(build_response(damaged, answers=[(1, b"\x01\x02\x03\x04")]))
    assert parsed.rcode == 1 and parsed.qdcount == 0 and parsed.ancount == 0 and parsed.id == 7


def test_build_response_errors() -> None:
    with pytest.raises(ValueError):
        build_response(b"\x00\x01")
    with pytest.raises(ValueError):
        build_response(QUERY, answers=[(16, b"x" * 70000)])


def test_build_query_is_a_standard_recursive_query() -> None:
    assert build_query("www.Example.com", txid=0x1234) == QUERY  # scapy's: id, RD, one A question, class IN
    aaaa = build_query("ads.example.", dns.TYPE_AAAA, txid=0x12345)
    assert aaaa == bytes(DNS(id=0x2345, rd=1, qd=DNSQR(qname="ads.example", qtype="AAAA")))
    msg = parse_dns(aaaa, True)
    assert msg is not None and msg.txid == 0x2345 and [(q.name, q.rrtype) for q in msg.questions] == [(b"ads.example", 28)]
    answer = build_response(build_query("a.example", txid=7), answers=[(1, b"\xc6\x33\x64\x14")], ttl=300)
    assert answer[:4] == b"\x00\x07\x81\x80"
    assert answer.endswith(b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x01\x2c\x00\x04\xc6\x33\x64\x14")
    with pytest.raises(ValueError):
        build_query("a" * 64 + ".com")


def test_encode_name() -> None:
    assert encode_name("a.bc.") == b"\x01a\x02bc\x00"
    assert encode_name(b"") == b"\x00"
    with pytest.raises(ValueError):
        encode_name("a" * 64 + ".com")
    with pytest.raises(ValueError):
        encode_name("a..b")
    with pytest.raises(ValueError):
        encode_name(".".join(["abcdefghi"] * 30))


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"WWW.Example.COM.", "www.example.com"),
        (b"example.com", "example.com"),
        ("B\u00fccher.example".encode(), "xn--bcher-kva.example"),
        ("M\u00dcNCHEN.de".encode(), "xn--mnchen-3ya.de"),
        ("\u4f8b\u3048\u3002\u30c6\u30b9\u30c8".encode(), "xn--r8jz45g.xn--zckzah"),  # ideographic full stop
        (b"xn--bcher-kva.example", "xn--bcher-kva.example"),
        (b"\xff\xfeA.com", "\\xff\\xfea.com"),  # not UTF-8: escaped, never raises
        (b"", ""),
        (b".", ""),
    ],
)
def test_normalize_name(raw: bytes, expected: str) -> None:
    assert normalize_name(raw) == expected


def test_normalize_name_invalid_idn_label_still_normalizes() -> None:
    out = normalize_name(("\u00e4" * 70 + ".example").encode())  # label too long for IDNA
    assert out.startswith("xn--") and out.endswith(".example") and out.isascii()


# --- real capture ----------------------------------------------------------------------------------


def test_suricata_verify_dns_detect_query(shared_data: SharedData) -> None:
    from agent.offline.pcapfile import open_packets

    pcap = shared_data.path("peer", "suricata-verify", "dns-detect-query-01", "input.pcap")
    messages = [parse_dns(p.payload, p.dport == 53) for p in open_packets(pcap) if p.sport == 53 or p.dport == 53]
    # rule: alert dns any any -> any any (dns_query; content:"google"; nocase; sid:1;) must match once
    hits = [m for m in messages if m is not None for q in m.questions if b"google" in q.name.lower()]
    assert len(hits) == 1
    assert hits[0].questions[0].name == b"google.com" and hits[0].questions[0].rrtype == 16 and hits[0].to_server


# --- fuzzing ---------------------------------------------------------------------------------------


@FUZZ
@given(data=st.binary(max_size=300))
def test_fuzz_parse_random(data: bytes) -> None:
    msg = parse_dns(data)
    assert msg is None or isinstance(msg, DnsMessage)
    if len(data) >= 12:
        with contextlib.suppress(ValueError):
            assert isinstance(build_response(data), bytes)


@FUZZ
@given(
    seed=st.sampled_from([QUERY, RESPONSE]),
    flips=st.lists(st.tuples(st.integers(0, 1000), st.integers(0, 255)), max_size=6),
    cut=st.integers(0, 200),
)
def test_fuzz_mutated_messages(seed: bytes, flips: list[tuple[int, int]], cut: int) -> None:
    data = bytearray(seed)
    for where, value in flips:
        data[where % len(data)] = value
    msg = parse_dns(bytes(data))
    assert msg is None or isinstance(msg, DnsMessage)
    p = DnsTcpParser()
    stream = framed(bytes(data)) * 2
    for m in p.feed(True, stream[:cut]) + p.feed(False, stream[cut:]) + p.feed(True, stream[cut:]):
        assert isinstance(m, DnsMessage)
    if msg is not None:
        assert isinstance(nxdomain(bytes(data)), bytes)
    normalize_name(bytes(data[12:40]))
