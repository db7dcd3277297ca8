"""Rule matching on a packet: the rule header (protocol, addresses, ports, direction) and the
per-packet keyword checks (flags, ttl, itype/icode, icmp_id/seq, tcp.mss, fragbits, sameip, ipopts)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from filters.ips.rule import (
    Direction,
    FieldCheck,
    FlagMode,
    FlagsCheck,
    FragbitsCheck,
    IpOptsCheck,
    PacketField,
    Rule,
    SameIpCheck,
)

if TYPE_CHECKING:  # pragma: no cover
    from filters.packet import Packet


def header_matches(rule: Rule, proto: int, src: bytes, sport: int, dst: bytes, dport: int, has_ports: bool) -> bool:
    if rule.ip_protos and proto not in rule.ip_protos:
        return False
    if rule.ip_version and (4 if len(src) == 4 else 6) != rule.ip_version:
        return False
    if _one_way(rule, src, sport, dst, dport, has_ports):
        return True
    return rule.direction is Direction.BOTH and _one_way(rule, dst, dport, src, sport, has_ports)


def _one_way(rule: Rule, src: bytes, sport: int, dst: bytes, dport: int, has_ports: bool) -> bool:
    if not (rule.src.matches(src) and rule.dst.matches(dst)):
        return False
    if not has_ports:
        return rule.sport.any and rule.dport.any
    return rule.sport.matches(sport) and rule.dport.matches(dport)


_ICMP_ECHO_TYPES = {1: frozenset({0, 8, 13, 14, 15, 16, 17, 18}), 58: frozenset({128, 129})}


def _icmp_u16(pkt: "Packet", at: int) -> int | None:
    if pkt.proto not in _ICMP_ECHO_TYPES or pkt.icmp_type not in _ICMP_ECHO_TYPES[pkt.proto]:
        return None
    off = pkt.l4_offset + at
    if len(pkt.raw) < off + 2:
        return None
    return int.from_bytes(pkt.raw[off : off + 2], "big")


def _tcp_mss(pkt: "Packet") -> int | None:
    opts = pkt.tcp_options
    i = 0
    while i < len(opts):
        kind = opts[i]
        if kind == 0:
            return None
        if kind == 1:
            i += 1
            continue
        if i + 1 >= len(opts) or opts[i + 1] < 2:
            return None
        if kind == 2 and opts[i + 1] == 4 and i + 4 <= len(opts):
            return int.from_bytes(opts[i + 2 : i + 4], "big")
        i += opts[i + 1]
    return None


def _field(pkt: "Packet", f: PacketField) -> int | None:
    """The header value a FieldCheck tests, or None when the packet has no such field."""
    tcp = pkt.proto == 6 and pkt.l4_offset > 0 and pkt.frag_offset == 0
    if f is PacketField.DSIZE:
        return len(pkt.payload)
    if f is PacketField.TTL:
        return pkt.ttl if pkt.version else None
    if f is PacketField.ITYPE or f is PacketField.ICODE:
        if pkt.proto not in (1, 58) or pkt.icmp_type < 0:
            return None
        return pkt.icmp_type if f is PacketField.ITYPE else pkt.icmp_code
    if f is PacketField.ICMP_ID:
        return _icmp_u16(pkt, 4)
    if f is PacketField.ICMP_SEQ:
        return _icmp_u16(pkt, 6)
    if f is PacketField.IP_PROTO:
        return pkt.proto if pkt.version else None
    if f is PacketField.IP_ID:
        return pkt.ip_id if pkt.version == 4 else None
    if f is PacketField.FRAGOFFSET:  # the header field (8-byte units); IPv6 needs a fragment header
        if pkt.version == 4 or (pkt.version == 6 and 44 in pkt.ext_headers):
            return pkt.frag_offset >> 3
        return None
    if not tcp:
        return None
    if f is PacketField.TCP_ACK:
        return pkt.ack
    if f is PacketField.TCP_SEQ:
        return pkt.seq
    if f is PacketField.TCP_WINDOW:
        return pkt.window
    return _tcp_mss(pkt)


def bits_match(have: int, want: int, mode: FlagMode) -> bool:
    if mode is FlagMode.EXACT:
        return have == want
    if mode is FlagMode.PLUS:
        return have & want == want
    if mode is FlagMode.ANY:
        return bool(have & want)
    return have & want != want


def _fragbits(pkt: "Packet") -> int | None:
    if pkt.version == 4 and len(pkt.raw) >= 8:
        return int.from_bytes(pkt.raw[6:8], "big") & 0xE000
    if pkt.version == 6:
        return 0x2000 if pkt.more_fragments else 0
    return None


def _ipv4_options(pkt: "Packet") -> list[int]:
    if pkt.version != 4 or not pkt.raw:
        return []
    ihl = (pkt.raw[0] & 0x0F) * 4
    opts = pkt.raw[20 : min(ihl, len(pkt.raw))]
    kinds: list[int] = []
    i = 0
    while i < len(opts) and len(kinds) < 40:
        kind = opts[i]
        kinds.append(kind)
        if kind == 0:
            break
        if kind == 1:
            i += 1
            continue
        if i + 1 >= len(opts) or opts[i + 1] < 2:
            break
        i += opts[i + 1]
    return kinds


def check_packet(check: object, pkt: "Packet") -> bool:
    """Evaluate one PacketCheck against a parsed packet."""
    if isinstance(check, FieldCheck):
        value = _field(pkt, check.field)
        return value is not None and check.test(value)
    if isinstance(check, FlagsCheck):
        if pkt.proto != 6 or pkt.l4_offset == 0:
            return False
        return bits_match(pkt.tcp_flags & ~check.ignore & 0xFF, check.flags, check.mode)
    if isinstance(check, FragbitsCheck):
        bits = _fragbits(pkt)
        return bits is not None and bits_match(bits, check.bits, check.mode)
    if isinstance(check, SameIpCheck):
        return bool(pkt.src_addr) and pkt.src_addr == pkt.dst_addr
    if isinstance(check, IpOptsCheck):
        kinds = _ipv4_options(pkt)
        if check.option == -1:
            return any(k not in (0, 1) for k in kinds)
        return check.option in kinds
    return False


def match_packet_checks(rule: Rule, pkt: "Packet") -> bool:
    """True when every header check of the rule (dsize, flags, ttl, itype, ...) holds."""
    for check in rule.packet_checks:
        if not check_packet(check, pkt):
            return False
    return True
