"""Packet model: struct-based parsing of link layers, Ethernet/VLAN, IPv4, IPv6, TCP, UDP, ICMP and ICMPv6,
and the Internet checksum for the code that builds packets (the agent's injected answers, the lab's captures).

Parsing never raises on bad input: a truncated or malformed header sets ``Packet.anomaly``
(a short dotted code such as ``"ipv4.truncated"``) and the fields that could not be read stay
at their defaults. The pipeline counts anomalies and applies the configured policy verdict.

Conventions:

* ``truncated`` means fewer bytes were captured than the IP header claims (NFQUEUE copy range,
  pcap snaplen). On its own it is *not* an anomaly: if every header is complete the packet parses
  normally and only the payload is short. A header cut off by the capture is an anomaly
  (``ipv4.truncated``, ``tcp.truncated``, ...). A header whose length field points past what the
  IP header claims is malformed (``ipv4.bad_ihl``, ``tcp.bad_offset``, ``udp.bad_length``).
* Bytes after the end the IP header claims (Ethernet padding) are trimmed: ``raw`` is the IP
  packet only, and ``extra["padding"]`` counts the trimmed bytes.
* Parsing continues after an anomaly where the rest is still meaningful (e.g. a bad IPv4 total
  length is replaced by the captured length); ``anomaly`` keeps the first problem found.
* ICMP and ICMPv6: ``icmp_type``/``icmp_code`` from the first two bytes, ``payload`` is what
  follows the 8-byte header (type, code, checksum, 4 bytes of id/seq/pointer/MTU/reserved), which
  every ICMPv4/ICMPv6 message has; shorter messages are ``icmp.truncated``.
* Non-first fragments carry no L4 header: ports stay 0 and ``payload`` is the bytes after the IP
  headers. A first fragment is parsed, but an L4 length beyond the fragment is not an anomaly.
* IPv6 with payload length 0 and bytes after the fixed header (jumbogram / GSO) keeps
  ``ip_len == 40`` and parses the captured bytes.

Anomaly codes: ip.empty, ip.bad_version, ip.version_mismatch (link type says v4, nibble says v6
or the reverse), ipv4.truncated, ipv4.bad_ihl, ipv4.bad_total_length, ipv6.truncated,
ipv6.ext_truncated, ipv6.ext_loop (more than MAX_IPV6_EXT_HEADERS), ipv6.hbh_not_first,
tcp.truncated, tcp.bad_offset, udp.truncated, udp.bad_length, icmp.truncated, eth.truncated,
eth.not_ip, eth.vlan_depth (more than MAX_VLAN_TAGS), link.truncated, link.not_ip,
link.unsupported, parse.internal_error (a parser bug; logged, never raised).
"""
from __future__ import annotations

import array
import enum
import logging
import socket
import struct
import sys
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

PROTO_HOPOPTS = 0
PROTO_ICMP = 1
PROTO_TCP = 6
PROTO_UDP = 17
PROTO_IPV6_ROUTE = 43
PROTO_IPV6_FRAG = 44
PROTO_ESP = 50
PROTO_AH = 51
PROTO_ICMPV6 = 58
PROTO_IPV6_NONXT = 59
PROTO_IPV6_OPTS = 60

# TCP flag bits (as in the TCP header's flags byte).
FIN, SYN, RST, PSH, ACK, URG, ECE, CWR = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80

ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86DD
VLAN_ETHERTYPES = frozenset({0x8100, 0x88A8, 0x9100})  # 802.1Q, 802.1ad, pre-standard QinQ

# pcap/pcapng link types (https://www.tcpdump.org/linktypes.html).
LINKTYPE_NULL = 0
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_RAW_ALIASES = frozenset({LINKTYPE_RAW, 12, 14})  # DLT_RAW is 12 or 14 on some BSDs
LINKTYPE_LOOP = 108
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_LINUX_SLL2 = 276

MAX_IPV6_EXT_HEADERS = 16
MAX_VLAN_TAGS = 4

# Address families in DLT_NULL/DLT_LOOP headers: IPv4 is 2 everywhere, IPv6 differs by OS
# (Linux 10, NetBSD/OpenBSD 24, FreeBSD 28, Darwin 30).
_NULL_AF_INET = frozenset({2})
_NULL_AF_INET6 = frozenset({10, 24, 28, 30})
_IPV6_EXT = frozenset({PROTO_HOPOPTS, PROTO_IPV6_ROUTE, PROTO_IPV6_FRAG, PROTO_IPV6_OPTS, PROTO_AH})
_NO_LIMIT = 1 << 62  # "claimed end" for a first fragment: the L4 data continues elsewhere
_L4_CUT = frozenset({"tcp.truncated", "udp.truncated", "icmp.truncated"})

_IPV4 = struct.Struct("!BBHHHBBH4s4s")  # ver/ihl tos total_len id flags/frag ttl proto csum src dst
_IPV6 = struct.Struct("!IHBB16s16s")  # ver/tc/flow payload_len next_header hop_limit src dst
_IPV6_EXT_HDR = struct.Struct("!BB")  # next header, length
_IPV6_FRAG_HDR = struct.Struct("!BxHI")  # next header, reserved, offset/flags, identification
_TCP = struct.Struct("!HHIIBBH")  # sport dport seq ack data_offset flags window
_UDP = struct.Struct("!HHH")  # sport dport length
_ICMP = struct.Struct("!BB")  # type code
_PORTS = struct.Struct("!HH")
_ETH = struct.Struct("!6s6sH")
_VLAN = struct.Struct("!HH")  # TCI, inner ethertype
_SLL = struct.Struct("!HHH8sH")  # packet type, ARPHRD, address length, address, protocol
_SLL2 = struct.Struct("!HxxIHBB8s")  # protocol, reserved, ifindex, ARPHRD, packet type, addr len, address
_U32_LE = struct.Struct("<I")
_U32_BE = struct.Struct(">I")
_ARPHRD_ETHER = 1


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
    vlan: tuple[int, ...] = ()  # VLAN IDs, outermost first
    ethertype: int = 0  # innermost ethertype (after VLAN tags); 0 when the input is bare L3
    # Network layer.
    version: int = 0  # 4 or 6; 0 when not IP
    src_addr: bytes = b""  # packed, 4 or 16 bytes
    dst_addr: bytes = b""
    proto: int = 0  # upper-layer protocol after IPv6 extension headers
    ttl: int = 0  # IPv4 TTL or IPv6 hop limit
    ip_id: int = 0  # IPv4 identification; IPv6: fragment header identification (32 bits)
    ip_len: int = 0  # total length the IP header claims (IPv6: 40 + payload length)
    tos: int = 0  # IPv4 TOS byte or IPv6 traffic class
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
    # Inline only: conntrack has this packet in the reply direction of its connection (the kernel
    # sets a mark bit, agent/dataplane/ruleset.py), so the connection's client is its receiver.
    # A flow whose start the worker did not see takes its direction from it.
    ct_reply: bool = False
    # Inline only: a UDP/ICMP packet the kernel prefilter queued (it holds one of its connection's
    # patterns) in a connection conntrack calls established (agent/dataplane/prefilter.py).
    ct_established: bool = False

    @property
    def is_fragment(self) -> bool:
        return self.frag_offset != 0 or self.more_fragments

    @property
    def src_ip(self) -> str:
        return ntop(self.src_addr)

    @property
    def dst_ip(self) -> str:
        return ntop(self.dst_addr)

    @property
    def has_ports(self) -> bool:
        return self.proto in (PROTO_TCP, PROTO_UDP) and self.frag_offset == 0 and self.anomaly is None


def ntop(addr: bytes) -> str:
    """Text form of a packed IPv4/IPv6 address ("" for anything else)."""
    if len(addr) == 4:
        return socket.inet_ntop(socket.AF_INET, addr)
    if len(addr) == 16:
        return socket.inet_ntop(socket.AF_INET6, addr)
    return ""


# -- checksums (for building packets; parsing never checks them) --------------------------------


def inet_checksum(data: bytes) -> int:
    """The RFC 1071 Internet checksum of ``data``: the value for an IPv4/TCP/UDP/ICMP header field, host order."""
    if len(data) % 2:
        data += b"\0"
    words = array.array("H", data)
    if sys.byteorder == "little":
        words.byteswap()
    total = sum(words)
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def pseudo_header(src: bytes, dst: bytes, proto: int, length: int) -> bytes:
    """The IPv4 (4-byte addresses) or IPv6 pseudo-header a TCP/UDP checksum covers, for ``length`` L4 bytes."""
    if len(src) == 4:
        return src + dst + struct.pack("!BBH", 0, proto, length)
    return src + dst + struct.pack("!IxxxB", length, proto)


# -- IP ------------------------------------------------------------------------------------------


def parse_ip(data: bytes, ts: float = 0.0, side: Side = Side.UNKNOWN) -> Packet:
    """Parse an IPv4 or IPv6 packet (chosen by the version nibble). Never raises."""
    if type(data) is not bytes:
        data = bytes(data)
    pkt = Packet(data, ts, side)
    try:
        if not data:
            pkt.anomaly = "ip.empty"
            return pkt
        version = data[0] >> 4
        if version == 4:
            _parse_ipv4(pkt, data)
        elif version == 6:
            _parse_ipv6(pkt, data)
        else:
            pkt.anomaly = "ip.bad_version"
    except Exception:  # a parser bug must not take the packet path down
        return _internal_error(data, ts, side)
    return pkt


def _parse_ipv4(pkt: Packet, data: bytes) -> None:
    n = len(data)
    pkt.version = 4
    if n < 20:
        pkt.anomaly = "ipv4.truncated"
        pkt.truncated = True
        return
    vihl, pkt.tos, total, pkt.ip_id, frag, pkt.ttl, pkt.proto, _, pkt.src_addr, pkt.dst_addr = (
        _IPV4.unpack_from(data)
    )
    pkt.ip_len = total
    pkt.frag_offset = frag_offset = (frag & 0x1FFF) << 3
    pkt.more_fragments = more = (frag & 0x2000) != 0
    ihl = (vihl & 0x0F) << 2
    if ihl < 20:
        pkt.anomaly = "ipv4.bad_ihl"
        return
    end = claimed = total
    if total < ihl:
        pkt.anomaly = "ipv4.bad_total_length"
        end = claimed = n  # lenient: parse what was captured
    elif total > n:
        pkt.truncated = True
        end = n
    elif total < n:
        pkt.raw = data[:total]
        pkt.extra["padding"] = n - total
    if ihl > end:  # total >= ihl here, or the bad total length was flagged already
        if pkt.anomaly is None:
            pkt.anomaly = "ipv4.truncated"
        return
    pkt.l4_offset = ihl
    if frag_offset:
        pkt.payload = data[ihl:end]
        return
    if more:
        _parse_l4(pkt, data, ihl, end, _NO_LIMIT)
        return
    # _parse_l4 without its call (the per-packet path); its first-fragment rule does not apply here
    proto = pkt.proto
    if proto == PROTO_TCP:
        _parse_tcp(pkt, data, ihl, end, claimed)
    elif proto == PROTO_UDP:
        _parse_udp(pkt, data, ihl, end, claimed)
    else:
        _parse_l4(pkt, data, ihl, end, claimed)


# Same shape as _parse_ipv4: kept apart on purpose, the IPv4 and IPv6 paths are the per-packet hot
# path and differ in header layout, options / extension headers and fragment handling.
def _parse_ipv6(pkt: Packet, data: bytes) -> None:
    n = len(data)
    pkt.version = 6
    if n < 40:
        pkt.anomaly = "ipv6.truncated"
        pkt.truncated = True
        return
    vtcf, plen, nh, pkt.ttl, pkt.src_addr, pkt.dst_addr = _IPV6.unpack_from(data)
    pkt.tos = (vtcf >> 20) & 0xFF
    pkt.ip_len = claimed = 40 + plen
    end = claimed
    if plen == 0 and n > 40:  # jumbogram or GSO super-packet: the length is not in this header
        end = claimed = n
    elif claimed > n:
        pkt.truncated = True
        end = n
    elif claimed < n:
        pkt.raw = data[:claimed]
        pkt.extra["padding"] = n - claimed
    off = 40
    if nh in _IPV6_EXT:
        off, nh = _walk_ipv6_ext(pkt, data, nh, end)
        if off < 0:
            return
    pkt.proto = nh
    pkt.l4_offset = off
    if pkt.frag_offset:
        pkt.payload = data[off:end]
        return
    _parse_l4(pkt, data, off, end, _NO_LIMIT if pkt.more_fragments else claimed)


def _walk_ipv6_ext(pkt: Packet, data: bytes, nh: int, end: int) -> tuple[int, int]:
    """Walk IPv6 extension headers from offset 40. Returns (L4 offset, upper protocol), or
    (-1, nh) after setting an anomaly when the chain cannot be walked to the end."""
    off = 40
    seen: list[int] = []
    while nh in _IPV6_EXT:
        if len(seen) >= MAX_IPV6_EXT_HEADERS:
            return _ext_fail(pkt, data, seen, nh, off, end, "ipv6.ext_loop")
        if off + 8 > end:  # every extension header is at least 8 bytes
            return _ext_fail(pkt, data, seen, nh, off, end, "ipv6.ext_truncated")
        if nh == PROTO_IPV6_FRAG:
            nxt, offlg, ident = _IPV6_FRAG_HDR.unpack_from(data, off)
            pkt.frag_offset = offlg & 0xFFF8
            pkt.more_fragments = bool(offlg & 1)
            pkt.ip_id = ident
            hlen = 8
        else:
            nxt, length = _IPV6_EXT_HDR.unpack_from(data, off)
            hlen = (length + 2) << 2 if nh == PROTO_AH else (length + 1) << 3
            if off + hlen > end:
                return _ext_fail(pkt, data, seen, nh, off, end, "ipv6.ext_truncated")
            if nh == PROTO_HOPOPTS and seen and pkt.anomaly is None:
                pkt.anomaly = "ipv6.hbh_not_first"
        seen.append(nh)
        nh = nxt
        off += hlen
        if pkt.frag_offset:  # non-first fragment: what follows is fragment data, not headers
            break
    pkt.ext_headers = tuple(seen)
    return off, nh


def _ext_fail(pkt: Packet, data: bytes, seen: list[int], nh: int, off: int, end: int, code: str) -> tuple[int, int]:
    pkt.ext_headers = tuple(seen)
    pkt.proto = nh
    pkt.l4_offset = off
    pkt.payload = data[off:end]
    if pkt.anomaly is None:
        pkt.anomaly = code
    return -1, nh


# -- L4 ------------------------------------------------------------------------------------------


def _parse_l4(pkt: Packet, data: bytes, off: int, end: int, claimed: int) -> None:
    """Parse the transport header at ``off``. ``end`` bounds the captured bytes, ``claimed`` is
    where the IP header says the packet ends (_NO_LIMIT for a first fragment)."""
    proto = pkt.proto
    before = pkt.anomaly
    if proto == PROTO_TCP:
        _parse_tcp(pkt, data, off, end, claimed)
    elif proto == PROTO_UDP:
        _parse_udp(pkt, data, off, end, claimed)
    elif proto == PROTO_ICMP or proto == PROTO_ICMPV6:
        _parse_icmp(pkt, data, off, end)
    else:
        pkt.payload = data[off:end]
    if claimed == _NO_LIMIT and before is None and pkt.anomaly in _L4_CUT and not pkt.truncated:
        # A first fragment may end inside its L4 header (8-byte fragments): the header continues
        # in the next fragment, which defragmentation joins; that is not a malformed packet.
        pkt.anomaly = None


def _parse_tcp(pkt: Packet, data: bytes, off: int, end: int, claimed: int) -> None:
    avail = end - off
    if avail < 20:
        if avail >= 4:
            pkt.sport, pkt.dport = _PORTS.unpack_from(data, off)
        if pkt.anomaly is None:
            pkt.anomaly = "tcp.truncated"
        return
    pkt.sport, pkt.dport, pkt.seq, pkt.ack, doff, pkt.tcp_flags, pkt.window = _TCP.unpack_from(data, off)
    doff = (doff >> 4) << 2
    if doff < 20 or doff > avail:
        if pkt.anomaly is None:
            pkt.anomaly = "tcp.truncated" if 20 <= doff <= claimed - off else "tcp.bad_offset"
        return
    if doff > 20:
        pkt.tcp_options = data[off + 20 : off + doff]
    pkt.payload = data[off + doff : end]


def _parse_udp(pkt: Packet, data: bytes, off: int, end: int, claimed: int) -> None:
    if end - off < 8:
        if end - off >= 4:
            pkt.sport, pkt.dport = _PORTS.unpack_from(data, off)
        if pkt.anomaly is None:
            pkt.anomaly = "udp.truncated"
        return
    pkt.sport, pkt.dport, ulen = _UDP.unpack_from(data, off)
    if ulen < 8 or ulen > claimed - off:
        if pkt.anomaly is None:
            pkt.anomaly = "udp.bad_length"
        pkt.payload = data[off + 8 : end]
    else:
        stop = off + ulen
        pkt.payload = data[off + 8 : stop if stop < end else end]


def _parse_icmp(pkt: Packet, data: bytes, off: int, end: int) -> None:
    if end - off >= 2:
        pkt.icmp_type, pkt.icmp_code = _ICMP.unpack_from(data, off)
    if end - off < 8:
        if pkt.anomaly is None:
            pkt.anomaly = "icmp.truncated"
        return
    pkt.payload = data[off + 8 : end]


# -- link layers -----------------------------------------------------------------------------------


def parse_ethernet(frame: bytes, ts: float = 0.0, side: Side = Side.UNKNOWN) -> Packet:
    """Parse an Ethernet II frame (with up to MAX_VLAN_TAGS 802.1Q/802.1ad tags). Never raises."""
    if type(frame) is not bytes:
        frame = bytes(frame)
    try:
        return _parse_ethernet(frame, ts, side)
    except Exception:  # a parser bug must not take the packet path down
        return _internal_error(frame, ts, side)


def _internal_error(data: bytes, ts: float, side: Side) -> Packet:
    log.debug("internal error parsing %d bytes", len(data), exc_info=True)
    return Packet(data, ts, side, anomaly="parse.internal_error")


def _parse_ethernet(frame: bytes, ts: float, side: Side) -> Packet:
    if len(frame) < 14:
        return Packet(frame, ts, side, anomaly="eth.truncated")
    dst, src, etype = _ETH.unpack_from(frame)
    if etype == ETH_P_IP or etype == ETH_P_IPV6:  # no VLAN tag: _parse_ethertype's IP case, inline
        pkt = parse_ip(frame[14:], ts, side)
        if pkt.version and pkt.version != (4 if etype == ETH_P_IP else 6) and pkt.anomaly is None:
            pkt.anomaly = "ip.version_mismatch"
        pkt.ethertype = etype
    else:
        pkt = _parse_ethertype(frame, 14, etype, ts, side)
    pkt.eth_dst = dst
    pkt.eth_src = src
    return pkt


def _parse_ethertype(data: bytes, off: int, etype: int, ts: float, side: Side) -> Packet:
    """Parse what follows an ethertype field at ``off``: VLAN tags, then IP or nothing."""
    vlans: list[int] = []
    n = len(data)
    while etype in VLAN_ETHERTYPES:
        if len(vlans) >= MAX_VLAN_TAGS:
            return _not_ip(data, off, etype, vlans, ts, side, "eth.vlan_depth")
        if off + 4 > n:
            return _not_ip(data, off, etype, vlans, ts, side, "eth.truncated")
        tci, etype = _VLAN.unpack_from(data, off)
        vlans.append(tci & 0x0FFF)
        off += 4
    if etype == ETH_P_IP:
        pkt = _parse_ip_expect(data[off:], 4, ts, side)
    elif etype == ETH_P_IPV6:
        pkt = _parse_ip_expect(data[off:], 6, ts, side)
    else:
        return _not_ip(data, off, etype, vlans, ts, side, "eth.not_ip")
    pkt.ethertype = etype
    if vlans:
        pkt.vlan = tuple(vlans)
    return pkt


def _not_ip(data: bytes, off: int, etype: int, vlans: list[int], ts: float, side: Side, code: str) -> Packet:
    return Packet(data[off:], ts, side, vlan=tuple(vlans), ethertype=etype, anomaly=code)


def _parse_ip_expect(data: bytes, version: int, ts: float, side: Side) -> Packet:
    """parse_ip for a link layer that already said which IP version follows."""
    pkt = parse_ip(data, ts, side)
    if pkt.version and pkt.version != version and pkt.anomaly is None:
        pkt.anomaly = "ip.version_mismatch"
    return pkt


def parse_linktype(data: bytes, linktype: int, ts: float = 0.0, side: Side = Side.UNKNOWN) -> Packet:
    """Parse one captured frame of the given pcap link type. Never raises."""
    if type(data) is not bytes:
        data = bytes(data)
    try:
        return _parse_link(data, linktype, ts, side)
    except Exception:  # a parser bug must not take the packet path down
        return _internal_error(data, ts, side)


def _parse_link(data: bytes, linktype: int, ts: float, side: Side) -> Packet:
    if linktype == LINKTYPE_ETHERNET:
        return parse_ethernet(data, ts, side)
    if linktype in LINKTYPE_RAW_ALIASES:
        return parse_ip(data, ts, side)
    if linktype == LINKTYPE_IPV4:
        return _parse_ip_expect(data, 4, ts, side)
    if linktype == LINKTYPE_IPV6:
        return _parse_ip_expect(data, 6, ts, side)
    if linktype == LINKTYPE_LINUX_SLL:
        return _parse_sll(data, ts, side)
    if linktype == LINKTYPE_LINUX_SLL2:
        return _parse_sll2(data, ts, side)
    if linktype == LINKTYPE_NULL or linktype == LINKTYPE_LOOP:
        return _parse_null(data, linktype, ts, side)
    return Packet(data, ts, side, anomaly="link.unsupported")


def _parse_sll(data: bytes, ts: float, side: Side) -> Packet:
    if len(data) < 16:
        return Packet(data, ts, side, anomaly="link.truncated")
    _, hatype, alen, addr, proto = _SLL.unpack_from(data)
    return _sll_payload(data, 16, proto, hatype, alen, addr, ts, side)


def _parse_sll2(data: bytes, ts: float, side: Side) -> Packet:
    if len(data) < 20:
        return Packet(data, ts, side, anomaly="link.truncated")
    proto, _, hatype, _, alen, addr = _SLL2.unpack_from(data)
    return _sll_payload(data, 20, proto, hatype, alen, addr, ts, side)


def _sll_payload(data: bytes, off: int, proto: int, hatype: int, alen: int, addr: bytes, ts: float, side: Side) -> Packet:
    if proto < 0x0600:  # not an ethertype: a Linux pseudo-protocol (802.2 LLC, CAN, ...)
        return Packet(data[off:], ts, side, ethertype=proto, anomaly="link.not_ip")
    pkt = _parse_ethertype(data, off, proto, ts, side)
    if hatype == _ARPHRD_ETHER and alen == 6:
        pkt.eth_src = addr[:6]
    return pkt


def _parse_null(data: bytes, linktype: int, ts: float, side: Side) -> Packet:
    """DLT_NULL: 4-byte address family in the capturing host's byte order; DLT_LOOP: big-endian."""
    if len(data) < 4:
        return Packet(data, ts, side, anomaly="link.truncated")
    family = _U32_BE.unpack_from(data)[0]
    if linktype == LINKTYPE_NULL and family > 0xFFFF:
        family = _U32_LE.unpack_from(data)[0]
    if family in _NULL_AF_INET:
        return _parse_ip_expect(data[4:], 4, ts, side)
    if family in _NULL_AF_INET6:
        return _parse_ip_expect(data[4:], 6, ts, side)
    return Packet(data[4:], ts, side, anomaly="link.not_ip")
