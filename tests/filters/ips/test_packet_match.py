"""Tests for filters.ips.packet_match: per-packet keyword checks (dsize, ttl, flags, fragbits, itype, ipopts...)."""
from __future__ import annotations

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPOption_LSRR
from scapy.layers.inet6 import ICMPv6EchoRequest, IPv6
from scapy.packet import Raw

from filters.ips.netspec import Variables
from filters.ips.packet_match import match_packet_checks
from filters.ips.rule_parser import parse_rule
from filters.packet import parse_ip

VARS = Variables.suricata_defaults()


def pkt_rule(options: str, proto: str = "ip"):
    return parse_rule(f"alert {proto} any any -> any any ({options} sid:1;)", vars=VARS)


def check(options: str, scapy_pkt) -> bool:
    return match_packet_checks(pkt_rule(options), parse_ip(bytes(scapy_pkt)))


TCP_PKT = IP(src="10.0.0.1", dst="10.0.0.2", ttl=5, id=777, flags="DF") / TCP(
    sport=1234, dport=80, flags="SA", seq=100, ack=200, window=512, options=[("MSS", 1400)]
) / Raw(b"0123456789")


@pytest.mark.parametrize(
    "options,expected",
    [
        ("dsize:10;", True), ("dsize:<10;", False), ("dsize:9<>11;", True), ("dsize:!10;", False),
        ("ttl:5;", True), ("ttl:>5;", False), ("id:777;", True), ("ack:200;", True), ("seq:101;", False),
        ("window:512;", True), ("window:!512;", False), ("tcp.mss:<1460;", True), ("tcp.mss:1460;", False),
        ("ip_proto:6;", True), ("ip_proto:!tcp;", False), ("itype:0;", False), ("fragoffset:0;", True),
        ("flags:SA;", True), ("flags:S;", False), ("flags:S+;", True), ("flags:*SR;", True), ("flags:!S;", False),
        ("flags:!SR;", True), ("flags:SA,12;", True), ("fragbits:D;", True), ("fragbits:M;", False),
        ("fragbits:*MD;", True), ("fragbits:!M;", True), ("sameip;", False), ("ipopts:any;", False),
        ("dsize:10; ttl:5; flags:SA;", True), ("dsize:10; ttl:6;", False),
    ],
)
def test_tcp_packet_checks(options, expected):
    assert check(options, TCP_PKT) is expected


def test_flags_mask_ignores_ecn_bits():
    p = IP() / TCP(flags="SEC")
    assert check("flags:S,12;", p)
    assert not check("flags:S;", p)
    assert check("flags:0;", IP() / TCP(flags=0))


def test_icmp_checks():
    echo = IP() / ICMP(type=8, code=0, id=0x1234, seq=7) / Raw(b"ping")
    assert check("itype:8; icode:0; icmp_id:4660; icmp_seq:7; dsize:4;", echo)
    assert check("itype:7<>20;", echo) and check("itype:>7;", echo) and not check("itype:<8;", echo)
    unreach = IP() / ICMP(type=3, code=1)
    assert check("itype:3; icode:1;", unreach) and not check("icmp_id:0;", unreach)
    v6 = IPv6() / ICMPv6EchoRequest(id=9, seq=1)
    assert check("itype:128; icmp_id:9; icmp_seq:1;", v6)
    assert not check("itype:8;", IP() / UDP())


def test_sameip_ipopts_fragments():
    assert check("sameip;", IP(src="1.1.1.1", dst="1.1.1.1") / UDP())
    lsrr = IP(options=[IPOption_LSRR(routers=["1.2.3.4"])]) / UDP()
    assert check("ipopts:lsrr;", lsrr) and check("ipopts:any;", lsrr) and not check("ipopts:rr;", lsrr)
    frag = IP(flags="MF", frag=3) / Raw(b"x" * 16)
    assert check("fragbits:M; fragoffset:3;", frag)
    assert check("fragoffset:>0;", frag) and not check("fragoffset:0;", frag)


def test_rule_without_checks_matches_any_packet():
    assert match_packet_checks(pkt_rule('content:"x";'), parse_ip(bytes(IP() / UDP())))
