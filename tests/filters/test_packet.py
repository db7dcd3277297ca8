"""Tests for filters.packet: parsed fields against scapy, truncation and malformed-header anomalies."""
from __future__ import annotations

import socket
import struct

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPOption, fragment
from scapy.layers.inet6 import (
    ICMPv6EchoRequest,
    ICMPv6ND_NS,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
    fragment6,
)
from scapy.layers.ipsec import AH
from scapy.layers.l2 import ARP, CookedLinux, CookedLinuxV2, Dot1AD, Dot1Q, Ether
from scapy.packet import Raw
from scapy.utils import mac2str

from filters.packet import (
    ACK,
    MAX_IPV6_EXT_HEADERS,
    MAX_VLAN_TAGS,
    PROTO_ICMP,
    PROTO_ICMPV6,
    PROTO_TCP,
    PROTO_UDP,
    PSH,
    SYN,
    Packet,
    Side,
    inet_checksum,
    parse_ethernet,
    parse_ip,
    parse_linktype,
    pseudo_header,
)

TCP_OPTS = [("MSS", 1460), ("NOP", None), ("WScale", 7), ("SAckOK", b""), ("Timestamp", (1, 2))]
V4 = dict(src="192.0.2.1", dst="198.51.100.7")
V6 = dict(src="2001:db8::1", dst="2001:db8:ffff::2")


def tcp4(payload: bytes = b"GET / HTTP/1.1\r\n\r\n", **ip: object) -> bytes:
    return bytes(
        IP(**V4, ttl=57, tos=0x28, id=4242, **ip)
        / TCP(sport=40000, dport=80, seq=1000, ack=2000, flags="PA", window=512, options=TCP_OPTS)
        / payload
    )


def tcp6(payload: bytes = b"hello", *ext: object) -> bytes:
    pkt = IPv6(**V6, hlim=33, tc=0xB8)
    for e in ext:
        pkt = pkt / e
    return bytes(pkt / TCP(sport=443, dport=51000, seq=7, ack=9, flags="SA", options=TCP_OPTS) / payload)


def assert_like_scapy(pkt: Packet, data: bytes) -> None:
    """Compare every IP/L4 field with scapy's dissection of the same bytes."""
    s = IP(data) if data[0] >> 4 == 4 else IPv6(data)
    assert pkt.anomaly is None
    assert (pkt.src_ip, pkt.dst_ip) == (s.src, s.dst)
    if pkt.version == 4:
        assert (pkt.ttl, pkt.tos, pkt.ip_len, pkt.ip_id, pkt.proto) == (s.ttl, s.tos, s.len, s.id, s.proto)
        assert pkt.l4_offset == s.ihl * 4
        assert pkt.frag_offset == s.frag * 8 and pkt.more_fragments == bool(s.flags.MF)
    else:
        assert (pkt.ttl, pkt.tos, pkt.ip_len) == (s.hlim, s.tc, s.plen + 40)
    if TCP in s:
        t = s[TCP]
        assert (pkt.sport, pkt.dport, pkt.seq, pkt.ack, pkt.window) == (t.sport, t.dport, t.seq, t.ack, t.window)
        assert pkt.tcp_flags == int(t.flags)
        assert pkt.tcp_options == bytes(t)[20 : t.dataofs * 4]
        assert pkt.payload == bytes(t.payload)
        assert pkt.proto == PROTO_TCP and pkt.has_ports
    elif UDP in s:
        u = s[UDP]
        assert (pkt.sport, pkt.dport) == (u.sport, u.dport)
        assert pkt.payload == bytes(u.payload)
        assert pkt.proto == PROTO_UDP and pkt.has_ports
    assert pkt.raw[pkt.l4_offset :].endswith(pkt.payload)


# -- well-formed packets --------------------------------------------------------------------------


def test_ipv4_tcp_with_options() -> None:
    data = tcp4()
    pkt = parse_ip(data, ts=12.5, side=Side.LAN)
    assert_like_scapy(pkt, data)
    assert pkt.version == 4 and pkt.raw == data and (pkt.ts, pkt.side) == (12.5, Side.LAN)
    assert pkt.tcp_flags == PSH | ACK and pkt.payload == b"GET / HTTP/1.1\r\n\r\n"
    assert pkt.src_addr == bytes([192, 0, 2, 1]) and not pkt.truncated and not pkt.is_fragment
    assert pkt.icmp_type == -1 and pkt.ethertype == 0 and pkt.eth_src == b""


def test_ipv4_with_ip_options() -> None:
    data = bytes(IP(**V4, options=IPOption(b"\x01\x01\x01\x00")) / UDP(sport=53, dport=5353) / b"q")
    pkt = parse_ip(data)
    assert_like_scapy(pkt, data)
    assert pkt.l4_offset == 24 and pkt.payload == b"q"


@pytest.mark.parametrize(
    "data",
    [
        bytes(IP(**V4) / UDP(sport=5353, dport=53) / b"\x12\x34query"),
        bytes(IP(**V4) / UDP(sport=1, dport=2)),
        bytes(IPv6(**V6) / UDP(sport=546, dport=547) / (b"d" * 300)),
        tcp6(),
        tcp6(b"", IPv6ExtHdrHopByHop()),
        tcp6(b"x" * 1000, IPv6ExtHdrHopByHop(), IPv6ExtHdrRouting(addresses=["2001:db8::9"]), IPv6ExtHdrDestOpt()),
        bytes(IP(**V4, flags="DF") / TCP(flags="S")),
    ],
    ids=["udp4", "udp4-empty", "udp6", "tcp6", "tcp6-hbh", "tcp6-3ext", "tcp4-syn-df"],
)
def test_matches_scapy(data: bytes) -> None:
    assert_like_scapy(parse_ip(data), data)


def test_icmp_echo() -> None:
    data = bytes(IP(**V4) / ICMP(type=8, code=0, id=7, seq=1) / b"ping-data")
    pkt = parse_ip(data)
    assert (pkt.proto, pkt.icmp_type, pkt.icmp_code, pkt.anomaly) == (PROTO_ICMP, 8, 0, None)
    assert pkt.payload == b"ping-data" and (pkt.sport, pkt.dport) == (0, 0) and not pkt.has_ports


def test_icmp_error_payload_is_quoted_packet() -> None:
    inner = bytes(IP(**V4) / UDP(sport=1, dport=2))
    pkt = parse_ip(bytes(IP(**V4) / ICMP(type=3, code=3) / inner))
    assert (pkt.icmp_type, pkt.icmp_code, pkt.payload) == (3, 3, inner)


def test_icmpv6() -> None:
    echo = parse_ip(bytes(IPv6(**V6) / ICMPv6EchoRequest(id=1, seq=2, data=b"abc")))
    assert (echo.proto, echo.icmp_type, echo.icmp_code, echo.payload, echo.anomaly) == (PROTO_ICMPV6, 128, 0, b"abc", None)
    ns = parse_ip(bytes(IPv6(**V6, hlim=255) / ICMPv6ND_NS(tgt="2001:db8::5")))
    assert (ns.icmp_type, ns.ttl, ns.anomaly) == (135, 255, None)
    assert ns.payload[:16] == bytes.fromhex("20010db8000000000000000000000005")


def test_ipv6_extension_headers_recorded() -> None:
    data = bytes(
        IPv6(**V6)
        / IPv6ExtHdrHopByHop()
        / IPv6ExtHdrRouting(addresses=["2001:db8::9"])
        / IPv6ExtHdrFragment(offset=0, m=0, id=0xDEADBEEF)
        / IPv6ExtHdrDestOpt()
        / UDP(sport=9, dport=10)
        / b"payload"
    )
    pkt = parse_ip(data)
    assert pkt.ext_headers == (0, 43, 44, 60)
    assert (pkt.proto, pkt.sport, pkt.dport, pkt.payload, pkt.anomaly) == (PROTO_UDP, 9, 10, b"payload", None)
    assert pkt.ip_id == 0xDEADBEEF and not pkt.is_fragment  # atomic fragment
    assert pkt.l4_offset == 40 + 8 + 24 + 8 + 8


def test_ipv6_ah_is_walked() -> None:
    ah = AH(nh=6, payloadlen=4, spi=0x100, seq=1, icv=b"\x00" * 12)  # (4 + 2) * 4 = 24 bytes
    data = bytes(IPv6(**V6) / ah / TCP(sport=1, dport=2, flags="S"))
    pkt = parse_ip(data)
    assert (pkt.ext_headers, pkt.proto, pkt.l4_offset, pkt.tcp_flags, pkt.anomaly) == ((51,), 6, 64, SYN, None)


@pytest.mark.parametrize("nh", [50, 59])
def test_ipv6_esp_and_no_next_header_stop(nh: int) -> None:
    data = bytes(IPv6(**V6, nh=nh) / Raw(b"\x00\x00\x01\x00opaque"))
    pkt = parse_ip(data)
    assert (pkt.proto, pkt.ext_headers, pkt.payload, pkt.l4_offset, pkt.anomaly) == (nh, (), data[40:], 40, None)


def test_other_protocol_payload() -> None:
    data = bytes(IP(**V4, proto=47) / b"\x00\x00\x08\x00gre")
    pkt = parse_ip(data)
    assert (pkt.proto, pkt.payload, pkt.anomaly, pkt.has_ports) == (47, b"\x00\x00\x08\x00gre", None, False)


# -- fragments -----------------------------------------------------------------------------------


def test_ipv4_fragments() -> None:
    frags = fragment(IP(**V4, id=99) / UDP(sport=1000, dport=2000) / (b"F" * 3000), fragsize=1000)
    assert len(frags) > 2
    for f in frags:
        data = bytes(f)
        pkt = parse_ip(data)
        assert pkt.anomaly is None and pkt.is_fragment and pkt.ip_id == 99
        assert pkt.frag_offset == f.frag * 8 and pkt.more_fragments == bool(f.flags.MF)
        if pkt.frag_offset == 0:  # the UDP length covers the whole datagram: not an anomaly here
            assert (pkt.sport, pkt.dport, pkt.payload) == (1000, 2000, data[28:])
            assert pkt.has_ports
        else:
            assert (pkt.sport, pkt.dport, pkt.payload) == (0, 0, data[20:])
            assert not pkt.has_ports


def test_ipv4_tiny_first_fragment_is_not_malformed() -> None:
    """The TCP header continues in the next fragment: defragmentation joins them (filters.defrag);
    a first fragment cut inside its L4 header is not a malformed packet."""
    data = bytes(IP(**V4, flags="MF", proto=6) / struct.pack("!HHI", 1234, 80, 5))  # 8 bytes of TCP header
    pkt = parse_ip(data)
    assert (pkt.anomaly, pkt.sport, pkt.dport, pkt.more_fragments) == (None, 1234, 80, True)
    cut = parse_ip(data[:-4])  # the capture cut it, not the fragmentation
    whole = bytes(IP(**V4, proto=6) / struct.pack("!HHI", 1234, 80, 5))  # not a fragment: truncated TCP
    assert parse_ip(whole).anomaly == "tcp.truncated" and cut.truncated


def test_ipv6_fragments() -> None:
    whole = IPv6(**V6) / IPv6ExtHdrFragment(id=0x1234) / UDP(sport=53, dport=53) / (b"z" * 3000)
    frags = fragment6(whole, 1280)
    assert len(frags) >= 3
    for f in frags:
        data = bytes(f)
        pkt = parse_ip(data)
        fh = f[IPv6ExtHdrFragment]
        assert pkt.anomaly is None and pkt.ext_headers == (44,) and pkt.proto == PROTO_UDP
        assert (pkt.frag_offset, pkt.more_fragments, pkt.ip_id) == (fh.offset * 8, bool(fh.m), 0x1234)
        assert pkt.l4_offset == 48
        if pkt.frag_offset:
            assert (pkt.sport, pkt.dport, pkt.payload) == (0, 0, data[48:])
        else:
            assert (pkt.sport, pkt.dport, pkt.payload) == (53, 53, data[56:])


# -- truncation ----------------------------------------------------------------------------------


def test_every_cut_of_ipv4_tcp() -> None:
    data = tcp4(b"0123456789", options=IPOption(b"\x01\x01\x01\x00"))
    ihl, doff = 24, 24 + 40  # IP header 24 bytes; TCP header with options ends at 64
    assert IP(data)[TCP].dataofs * 4 == 40 and len(data) == doff + 10
    for cut in range(len(data) + 1):
        pkt = parse_ip(data[:cut])
        if cut == 0:
            expected = "ip.empty"
        elif cut < ihl:
            expected = "ipv4.truncated"
        elif cut < doff:
            expected = "tcp.truncated"
        else:
            expected = None
        assert pkt.anomaly == expected, cut
        assert pkt.truncated == (0 < cut < len(data)), cut
        if cut >= ihl + 4:
            assert (pkt.sport, pkt.dport) == (40000, 80)
        if cut >= doff:
            assert pkt.payload == data[doff:cut] and pkt.tcp_options == data[ihl + 20 : doff]
            assert pkt.has_ports


def test_every_cut_of_ipv6_tcp_with_ext_headers() -> None:
    data = tcp6(b"abcdef", IPv6ExtHdrHopByHop(), IPv6ExtHdrDestOpt())
    l4 = 40 + 8 + 8
    doff = l4 + 40
    assert len(data) == doff + 6
    for cut in range(len(data) + 1):
        pkt = parse_ip(data[:cut])
        if cut == 0:
            expected = "ip.empty"
        elif cut < 40:
            expected = "ipv6.truncated"
        elif cut < l4:
            expected = "ipv6.ext_truncated"
        elif cut < doff:
            expected = "tcp.truncated"
        else:
            expected = None
        assert pkt.anomaly == expected, cut
        assert pkt.truncated == (0 < cut < len(data)), cut
        if 48 <= cut:
            assert pkt.ext_headers[:1] == (0,)
        if cut >= doff:
            assert pkt.payload == data[doff:cut] and pkt.proto == PROTO_TCP


def test_every_cut_of_udp_and_icmp() -> None:
    udp = bytes(IP(**V4) / UDP(sport=1, dport=2) / b"abcd")
    icmp = bytes(IPv6(**V6) / ICMPv6EchoRequest(data=b"abcd"))
    for cut in range(20, len(udp) + 1):
        assert parse_ip(udp[:cut]).anomaly == ("udp.truncated" if cut < 28 else None), cut
    for cut in range(40, len(icmp) + 1):
        pkt = parse_ip(icmp[:cut])
        assert pkt.anomaly == ("icmp.truncated" if cut < 48 else None), cut
        assert pkt.icmp_type == (128 if cut >= 42 else -1)


def test_total_length_beyond_capture_is_truncated_not_anomaly() -> None:
    data = tcp4(b"x" * 100)
    pkt = parse_ip(data[:80])
    assert pkt.truncated and pkt.anomaly is None and pkt.ip_len == len(data) and pkt.has_ports
    assert pkt.payload == data[60:80]  # 20 IP + 40 TCP with options


def test_trailing_padding_trimmed() -> None:
    data = bytes(IP(**V4) / UDP(sport=1, dport=2) / b"ab")
    pkt = parse_ip(data + b"\x00" * 16)
    assert pkt.raw == data and pkt.payload == b"ab" and pkt.extra["padding"] == 16 and pkt.anomaly is None
    data6 = tcp6(b"q")
    pkt6 = parse_ip(data6 + b"\xff" * 4)
    assert pkt6.raw == data6 and pkt6.payload == b"q" and pkt6.extra["padding"] == 4


def test_ipv6_zero_payload_length_parses_captured_bytes() -> None:
    data = bytearray(tcp6(b"big"))
    data[4:6] = b"\x00\x00"  # jumbogram / GSO super-packet: length not in the header
    pkt = parse_ip(bytes(data))
    assert (pkt.ip_len, pkt.anomaly, pkt.payload, pkt.sport) == (40, None, b"big", 443)


# -- malformed headers ---------------------------------------------------------------------------


def test_empty_and_bad_version() -> None:
    assert parse_ip(b"").anomaly == "ip.empty"
    for first in (0x00, 0x50, 0x75, 0xF4):
        pkt = parse_ip(bytes([first]) + bytes(59))
        assert (pkt.anomaly, pkt.version) == ("ip.bad_version", 0)


@pytest.mark.parametrize("ihl", [0, 1, 4])
def test_ipv4_ihl_too_small(ihl: int) -> None:
    pkt = parse_ip(bytes(IP(**V4, ihl=ihl) / TCP()))
    assert pkt.anomaly == "ipv4.bad_ihl" and pkt.src_ip == V4["src"] and pkt.sport == 0


def test_ipv4_ihl_beyond_total_length() -> None:
    data = bytes(IP(**V4, ihl=15) / UDP())  # claims 60 header bytes of a 28-byte packet
    assert parse_ip(data).anomaly == "ipv4.bad_total_length"  # total length < header length


def test_ipv4_options_cut_by_capture() -> None:
    data = bytes(IP(**V4, options=IPOption(b"\x01" * 40)) / UDP())
    pkt = parse_ip(data[:30])
    assert (pkt.anomaly, pkt.truncated, pkt.ip_len) == ("ipv4.truncated", True, 68)


@pytest.mark.parametrize("total", [0, 10, 19])
def test_ipv4_total_length_below_header(total: int) -> None:
    pkt = parse_ip(bytes(IP(**V4, len=total) / UDP(sport=7, dport=8) / b"xy"))
    assert pkt.anomaly == "ipv4.bad_total_length"
    assert (pkt.sport, pkt.dport, pkt.payload) == (7, 8, b"xy")  # parsed leniently from the capture


@pytest.mark.parametrize("dataofs", [0, 3, 4])
def test_tcp_offset_too_small(dataofs: int) -> None:
    pkt = parse_ip(bytes(IP(**V4) / TCP(sport=5, dport=6, dataofs=dataofs) / b"data"))
    assert pkt.anomaly == "tcp.bad_offset" and (pkt.sport, pkt.dport) == (5, 6) and not pkt.has_ports


def test_tcp_offset_beyond_packet() -> None:
    pkt = parse_ip(bytes(IP(**V4) / TCP(dataofs=15) / b"short"))
    assert pkt.anomaly == "tcp.bad_offset" and not pkt.truncated


def test_tcp_offset_reaching_into_payload_is_legal() -> None:
    data = bytes(IP(**V4) / TCP(dataofs=15) / (b"\x01" * 40 + b"data"))
    pkt = parse_ip(data)
    assert pkt.anomaly is None and pkt.tcp_options == b"\x01" * 40 and pkt.payload == b"data"


@pytest.mark.parametrize("ulen", [0, 7, 100])
def test_udp_bad_length(ulen: int) -> None:
    pkt = parse_ip(bytes(IP(**V4) / UDP(sport=1, dport=2, len=ulen) / b"abcdef"))
    assert pkt.anomaly == "udp.bad_length" and pkt.payload == b"abcdef" and (pkt.sport, pkt.dport) == (1, 2)


def test_udp_length_shorter_than_ip_bounds_payload() -> None:
    pkt = parse_ip(bytes(IP(**V4) / UDP(sport=1, dport=2, len=11) / b"abcdef"))
    assert pkt.anomaly is None and pkt.payload == b"abc"


def test_ipv6_ext_header_chain_cap() -> None:
    chain = IPv6(**V6)
    for _ in range(MAX_IPV6_EXT_HEADERS):
        chain = chain / IPv6ExtHdrDestOpt()
    at_cap = parse_ip(bytes(chain / UDP(sport=3, dport=4)))
    assert at_cap.anomaly is None and len(at_cap.ext_headers) == MAX_IPV6_EXT_HEADERS and at_cap.sport == 3
    over = parse_ip(bytes(chain / IPv6ExtHdrDestOpt() / UDP(sport=3, dport=4)))
    assert over.anomaly == "ipv6.ext_loop" and len(over.ext_headers) == MAX_IPV6_EXT_HEADERS
    assert over.sport == 0 and not over.has_ports


def test_ipv6_ext_header_self_loop_bytes() -> None:
    """Destination options that all name destination options next, to the end of the packet."""
    fixed = bytes(IPv6(**V6, nh=60, plen=8 * 40))
    data = fixed + (b"\x3c\x00" + bytes(6)) * 40
    pkt = parse_ip(data)
    assert pkt.anomaly == "ipv6.ext_loop"


def test_ipv6_ext_header_length_beyond_packet() -> None:
    data = bytearray(bytes(IPv6(**V6) / IPv6ExtHdrDestOpt() / UDP()))
    data[41] = 200  # (200 + 1) * 8 bytes of options
    pkt = parse_ip(bytes(data))
    assert pkt.anomaly == "ipv6.ext_truncated" and pkt.proto == 60 and pkt.ext_headers == ()


def test_ipv6_hop_by_hop_not_first() -> None:
    pkt = parse_ip(bytes(IPv6(**V6) / IPv6ExtHdrDestOpt() / IPv6ExtHdrHopByHop() / UDP(sport=1, dport=2)))
    assert pkt.anomaly == "ipv6.hbh_not_first" and pkt.ext_headers == (60, 0) and pkt.sport == 1


def test_icmp_too_short() -> None:
    pkt = parse_ip(bytes(IP(**V4, proto=1) / b"\x08\x00\x00"))
    assert (pkt.anomaly, pkt.icmp_type, pkt.icmp_code) == ("icmp.truncated", 8, 0)
    assert parse_ip(bytes(IP(**V4, proto=1) / b"\x08")).icmp_type == -1


def test_first_anomaly_wins() -> None:
    # bad total length first, then a bad TCP offset further in
    pkt = parse_ip(bytes(IP(**V4, len=5) / TCP(dataofs=2)))
    assert pkt.anomaly == "ipv4.bad_total_length"


def test_non_bytes_input() -> None:
    data = tcp4()
    for buf in (bytearray(data), memoryview(data)):
        pkt = parse_ip(buf)
        assert type(pkt.raw) is bytes and type(pkt.payload) is bytes and pkt.sport == 40000


# -- Ethernet and link types ---------------------------------------------------------------------

MAC_A, MAC_B = "02:00:00:00:00:0a", "02:00:00:00:00:0b"


def test_ethernet_ipv4() -> None:
    ip = tcp4()
    pkt = parse_ethernet(bytes(Ether(src=MAC_A, dst=MAC_B, type=0x0800) / ip), ts=3.0, side=Side.WAN)
    assert pkt.eth_src == mac2str(MAC_A) and pkt.eth_dst == mac2str(MAC_B)
    assert (pkt.ethertype, pkt.vlan, pkt.ts, pkt.side) == (0x0800, (), 3.0, Side.WAN)
    assert pkt.raw == ip
    assert_like_scapy(pkt, ip)


def test_ethernet_minimum_frame_padding() -> None:
    ip = bytes(IP(**V4) / TCP(flags="A"))
    frame = bytes(Ether(src=MAC_A, dst=MAC_B, type=0x0800) / ip) + bytes(6)  # padded to 60 bytes
    pkt = parse_ethernet(frame)
    assert pkt.raw == ip and pkt.extra["padding"] == 6 and pkt.payload == b"" and pkt.anomaly is None


def test_vlan_and_qinq() -> None:
    one = parse_ethernet(bytes(Ether() / Dot1Q(vlan=10, prio=5) / IP(tcp4())))
    assert one.vlan == (10,) and one.anomaly is None and one.dport == 80
    data6 = bytes(IPv6(**V6) / UDP(sport=1, dport=2))
    qinq = parse_ethernet(bytes(Ether(type=0x88A8) / Dot1AD(vlan=100) / Dot1Q(vlan=4094, type=0x86DD) / data6))
    assert (qinq.vlan, qinq.ethertype, qinq.version, qinq.anomaly, qinq.raw) == ((100, 4094), 0x86DD, 6, None, data6)


def test_vlan_tag_cap() -> None:
    def stacked(n: int) -> bytes:
        frame = Ether()
        for i in range(n):
            frame = frame / Dot1Q(vlan=i + 1)
        return bytes(frame / IP(**V4) / UDP())

    assert parse_ethernet(stacked(MAX_VLAN_TAGS)).vlan == tuple(range(1, MAX_VLAN_TAGS + 1))
    over = parse_ethernet(stacked(MAX_VLAN_TAGS + 1))
    assert over.anomaly == "eth.vlan_depth" and over.version == 0


def test_ethernet_not_ip() -> None:
    pkt = parse_ethernet(bytes(Ether(src=MAC_A) / ARP(pdst="192.0.2.9")))
    assert (pkt.anomaly, pkt.version, pkt.ethertype, pkt.eth_src) == ("eth.not_ip", 0, 0x0806, mac2str(MAC_A))
    assert len(pkt.raw) == 28


def test_ethernet_truncated() -> None:
    frame = bytes(Ether() / Dot1Q(vlan=3) / IP(tcp4()))
    for cut in range(14):
        assert parse_ethernet(frame[:cut]).anomaly == "eth.truncated"
    for cut in range(14, 18):
        assert parse_ethernet(frame[:cut]).anomaly == "eth.truncated"
    assert parse_ethernet(frame[:18]).anomaly == "ip.empty"


def test_ethernet_version_mismatch() -> None:
    pkt = parse_ethernet(bytes(Ether(type=0x0800) / IPv6(**V6) / UDP()))
    assert pkt.anomaly == "ip.version_mismatch" and pkt.version == 6


def null_header(family: int, order: str) -> bytes:
    return struct.pack(order + "I", family)


@pytest.mark.parametrize(
    ("linktype", "frame", "version"),
    [
        (1, bytes(Ether() / IP(tcp4())), 4),
        (101, tcp4(), 4),
        (12, tcp6(), 6),
        (14, tcp4(), 4),
        (228, tcp4(), 4),
        (229, tcp6(), 6),
        (113, bytes(CookedLinux(pkttype=0, lladdrtype=1, lladdrlen=6, src=b"\x02\0\0\0\0\x0a\0\0") / IP(bytes(tcp4()))), 4),
        (276, bytes(CookedLinuxV2(proto=0x86DD) / IPv6(tcp6())), 6),
        (0, null_header(2, "<") + tcp4(), 4),
        (0, null_header(2, ">") + tcp4(), 4),
        (0, null_header(30, "<") + tcp6(), 6),
        (0, null_header(24, ">") + tcp6(), 6),
        (0, null_header(10, "<") + tcp6(), 6),
        (108, null_header(2, ">") + tcp4(), 4),
    ],
)
def test_linktypes(linktype: int, frame: bytes, version: int) -> None:
    pkt = parse_linktype(frame, linktype, ts=1.5)
    assert (pkt.version, pkt.anomaly, pkt.proto, pkt.ts) == (version, None, PROTO_TCP, 1.5)
    assert pkt.raw == (tcp4() if version == 4 else tcp6())
    if linktype == 113:
        assert pkt.eth_src == mac2str(MAC_A) and pkt.ethertype == 0x0800


def test_linktype_problems() -> None:
    assert parse_linktype(tcp4(), 147).anomaly == "link.unsupported"
    assert parse_linktype(tcp6(), 228).anomaly == "ip.version_mismatch"
    assert parse_linktype(tcp4(), 229).anomaly == "ip.version_mismatch"
    for lt, hdr in ((113, 16), (276, 20), (0, 4), (108, 4)):
        assert parse_linktype(bytes(hdr - 1), lt).anomaly == "link.truncated"
    assert parse_linktype(null_header(7, "<") + tcp4(), 0).anomaly == "link.not_ip"
    sll_llc = bytes(CookedLinux(proto=0x0004) / b"\xaa\xaa\x03")
    assert parse_linktype(sll_llc, 113).anomaly == "link.not_ip"
    sll_arp = bytes(CookedLinux(proto=0x0806) / ARP())
    assert parse_linktype(sll_arp, 113).anomaly == "eth.not_ip"
    sll_vlan = bytes(CookedLinux(proto=0x8100) / Dot1Q(vlan=12) / IP(tcp4()))
    assert parse_linktype(sll_vlan, 113).vlan == (12,)


def test_inet_checksum_and_the_pseudo_header() -> None:
    assert inet_checksum(bytes.fromhex("0001f203f4f5f6f7")) == 0x220D  # RFC 1071's example (sum ddf2)
    assert inet_checksum(b"\x01") == ~0x0100 & 0xFFFF  # odd length: padded with a zero byte
    for ip, family in ((IP(**V4), socket.AF_INET), (IPv6(**V6), socket.AF_INET6)):
        for l4, proto, at in ((TCP(sport=1, dport=2, flags="PA"), PROTO_TCP, 16), (UDP(sport=1, dport=2), PROTO_UDP, 6)):
            wire = bytes(ip / l4 / b"abc")  # scapy fills in the checksum
            segment = bytearray(wire[20 if family == socket.AF_INET else 40:])
            want = int.from_bytes(segment[at:at + 2], "big")
            segment[at:at + 2] = b"\0\0"
            src, dst = (socket.inet_pton(family, ip.src), socket.inet_pton(family, ip.dst))
            assert inet_checksum(pseudo_header(src, dst, proto, len(segment)) + bytes(segment)) == want
