"""Property tests for filters.packet: random and mutated bytes never raise and always give a Packet."""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPOption, fragment
from scapy.layers.inet6 import (
    ICMPv6EchoRequest,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
)
from scapy.layers.l2 import CookedLinux, CookedLinuxV2, Dot1AD, Dot1Q, Ether

from filters.packet import Packet, parse_ethernet, parse_ip, parse_linktype
from tests.filters.factories import mutated

FUZZ = settings(max_examples=1500, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
LINKTYPES = [0, 1, 12, 14, 101, 108, 113, 228, 229, 276, 147, 65535]
OPTS = [("MSS", 1460), ("NOP", None), ("WScale", 7), ("SAckOK", b""), ("Timestamp", (1, 2))]

IP_SEEDS = [
    bytes(IP(dst="192.0.2.1") / TCP(flags="S", options=OPTS) / b"GET / HTTP/1.1\r\n\r\n"),
    bytes(IP(dst="192.0.2.1", options=IPOption(b"\x01\x01\x01\x00")) / UDP(dport=53) / b"query"),
    bytes(IP(dst="192.0.2.1") / ICMP() / b"ping"),
    bytes(fragment(IP(dst="192.0.2.1") / UDP() / (b"x" * 200), fragsize=64)[1]),
    bytes(IPv6(dst="2001:db8::1") / TCP(flags="PA", options=OPTS) / b"data"),
    bytes(IPv6(dst="2001:db8::1") / IPv6ExtHdrHopByHop() / IPv6ExtHdrRouting(addresses=["::1"]) / IPv6ExtHdrDestOpt() / UDP()),
    bytes(IPv6(dst="2001:db8::1") / IPv6ExtHdrFragment(offset=0, m=1) / UDP() / b"frag"),
    bytes(IPv6(dst="2001:db8::1") / IPv6ExtHdrFragment(offset=8, m=0) / b"tail"),
    bytes(IPv6(dst="2001:db8::1") / ICMPv6EchoRequest(data=b"abc")),
]
FRAME_SEEDS = [
    (1, bytes(Ether() / IP(IP_SEEDS[0]))),
    (1, bytes(Ether() / Dot1Q(vlan=5) / IP(IP_SEEDS[1]))),
    (1, bytes(Ether(type=0x88A8) / Dot1AD(vlan=1) / Dot1Q(vlan=2) / IPv6(IP_SEEDS[5]))),
    (113, bytes(CookedLinux() / IP(IP_SEEDS[2]))),
    (276, bytes(CookedLinuxV2(proto=0x86DD) / IPv6(IP_SEEDS[4]))),
    (0, b"\x02\x00\x00\x00" + IP_SEEDS[0]),
    (0, b"\x00\x00\x00\x1e" + IP_SEEDS[6]),
    (101, IP_SEEDS[3]),
    (229, IP_SEEDS[7]),
]


def check(pkt: object) -> None:
    assert isinstance(pkt, Packet)
    assert pkt.anomaly != "parse.internal_error"
    assert type(pkt.raw) is bytes and type(pkt.payload) is bytes and type(pkt.tcp_options) is bytes
    assert 0 <= pkt.l4_offset <= len(pkt.raw)
    assert pkt.version in (0, 4, 6)
    if pkt.anomaly is None and pkt.version:
        assert pkt.payload in pkt.raw
        assert pkt.l4_offset >= (20 if pkt.version == 4 else 40)


@FUZZ
@given(st.binary(max_size=256))
def test_random_bytes(data: bytes) -> None:
    check(parse_ip(data))
    check(parse_ethernet(data))
    for lt in (0, 1, 101, 113, 276):
        check(parse_linktype(data, lt))


@FUZZ
@given(st.integers(0, 15), st.binary(max_size=200))
def test_random_ip_with_valid_version(low: int, rest: bytes) -> None:
    for version in (0x40, 0x60):
        check(parse_ip(bytes([version | low]) + rest))


@settings(FUZZ, max_examples=2000)
@given(mutated(IP_SEEDS, edits=6, span=8, cut=True))
def test_mutated_ip_packets(data: bytes) -> None:
    check(parse_ip(data))


@settings(FUZZ, max_examples=1200)
@given(st.sampled_from(FRAME_SEEDS).flatmap(lambda s: st.tuples(st.just(s[0]), mutated([s[1]], edits=6, span=8, cut=True))), st.sampled_from(LINKTYPES))
def test_mutated_frames(seed: tuple[int, bytes], other_linktype: int) -> None:
    linktype, frame = seed
    check(parse_linktype(frame, linktype))
    check(parse_linktype(frame, other_linktype))


@pytest.mark.parametrize("data", IP_SEEDS)
def test_seeds_parse_cleanly(data: bytes) -> None:
    pkt = parse_ip(data)
    check(pkt)
    assert pkt.anomaly is None


@pytest.mark.parametrize(("linktype", "frame"), FRAME_SEEDS)
def test_frame_seeds_parse_cleanly(linktype: int, frame: bytes) -> None:
    pkt = parse_linktype(frame, linktype)
    check(pkt)
    assert pkt.anomaly is None and pkt.version in (4, 6)


def _ethernet_by_ethertype(frame: bytes) -> Packet:
    """parse_ethernet the general way (every ethertype through _parse_ethertype): what its inline
    IPv4/IPv6 case must give."""
    import struct

    from filters.packet import Side, _parse_ethertype

    if len(frame) < 14:
        return parse_ethernet(frame, 1.0)
    dst, src, etype = struct.unpack_from("!6s6sH", frame)
    pkt = _parse_ethertype(frame, 14, etype, 1.0, Side.UNKNOWN)
    pkt.eth_dst, pkt.eth_src = dst, src
    return pkt


@settings(FUZZ, max_examples=1500)
@given(st.sampled_from([f for lt, f in FRAME_SEEDS if lt == 1] + [bytes(Ether() / IPv6(IP_SEEDS[4])),
                                                                  bytes(Ether(type=0x0800) / IPv6(IP_SEEDS[8]))])
       .flatmap(lambda f: mutated([f], edits=6, span=8, cut=True)))
def test_ethernet_ip_fast_path_matches_the_general_one(frame: bytes) -> None:
    assert parse_ethernet(frame, 1.0) == _ethernet_by_ethertype(frame)
