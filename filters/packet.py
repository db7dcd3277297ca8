"""Packet model: struct-based parsing of Ethernet/VLAN, IPv4, IPv6, TCP, UDP, ICMP and ICMPv6.

Parsing never raises on bad input: a truncated or malformed header sets ``Packet.anomaly``
(a short dotted code such as ``"ipv4.truncated"``) and the fields that could not be read stay
at their defaults. The pipeline counts anomalies and applies the configured policy verdict.
"""
from __future__ import annotations

import enum
import socket
from dataclasses import dataclass, field

PROTO_ICMP = 1
PROTO_TCP = 6
PROTO_UDP = 17
PROTO_ICMPV6 = 58

# TCP flag bits (as in the TCP header's flags byte).
FIN, SYN, RST, PSH, ACK, URG, ECE, CWR = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80


class Side(enum.Enum):
    """The bridge port a packet came in on."""

    LAN = "lan"
    WAN = "wan"
    UNKNOWN = "unknown"


@dataclass(slots=True)
class Packet:
    """One IP packet with parsed header views. ``raw`` holds the L3 bytes (IP header onward)."""

    raw: bytes
    ts: float = 0.0
    side: Side = Side.UNKNOWN
    # Link layer (only from pcap/Ethernet input; empty when the input is bare L3).
    eth_src: bytes = b""
    eth_dst: bytes = b""
    vlan: tuple[int, ...] = ()
    # Network layer.
    version: int = 0  # 4 or 6; 0 when not IP
    src_addr: bytes = b""  # packed, 4 or 16 bytes
    dst_addr: bytes = b""
    proto: int = 0  # upper-layer protocol after IPv6 extension headers
    ttl: int = 0  # IPv4 TTL or IPv6 hop limit
    ip_id: int = 0
    ip_len: int = 0  # total length the IP header claims (IPv6: 40 + payload length)
    tos: int = 0
    frag_offset: int = 0  # in bytes
    more_fragments: bool = False
    ext_headers: tuple[int, ...] = ()  # IPv6 extension header types seen, in order
    # Transport layer.
    sport: int = 0
    dport: int = 0
    tcp_flags: int = 0
    seq: int = 0
    ack: int = 0
    window: int = 0
    tcp_options: bytes = b""
    icmp_type: int = -1
    icmp_code: int = -1
    payload: bytes = b""  # L4 payload (for non-TCP/UDP/ICMP: the bytes after the IP headers)
    l4_offset: int = 0  # offset of the L4 header in raw
    # Problems.
    anomaly: str | None = None  # first problem found, e.g. "ipv4.truncated", "tcp.bad_offset"
    truncated: bool = False  # fewer bytes captured than ip_len claims (e.g. GSO over NFQUEUE copy range)
    extra: dict = field(default_factory=dict)

    @property
    def is_fragment(self) -> bool:
        return self.frag_offset != 0 or self.more_fragments

    @property
    def src_ip(self) -> str:
        return _ntop(self.src_addr)

    @property
    def dst_ip(self) -> str:
        return _ntop(self.dst_addr)

    @property
    def has_ports(self) -> bool:
        return self.proto in (PROTO_TCP, PROTO_UDP) and self.frag_offset == 0 and self.anomaly is None


def _ntop(addr: bytes) -> str:
    if len(addr) == 4:
        return socket.inet_ntop(socket.AF_INET, addr)
    if len(addr) == 16:
        return socket.inet_ntop(socket.AF_INET6, addr)
    return ""
