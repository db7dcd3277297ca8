"""Packets the agent sends on the engines' behalf: DNS answers, HTTP block pages, TCP resets.

Built with ``struct`` from the packet being judged (addresses, ports and sequence numbers mirrored)
and sent through raw IP sockets on the box: the kernel routes them over br0, so they leave by the
bridge port that faces their destination.
"""
from __future__ import annotations

import logging
import socket
import struct
from typing import Any

from filters.app.dns import build_response, nxdomain
from filters.engine import Inject, InjectKind
from filters.packet import ACK, FIN, PROTO_TCP, PROTO_UDP, PSH, RST, Packet, inet_checksum, pseudo_header

log = logging.getLogger(__name__)

IPV4 = struct.Struct("!BBHHHBBH4s4s")
TCP = struct.Struct("!HHIIBBHHH")
UDP = struct.Struct("!HHHH")
SEGMENT = 1200  # block-page bytes per TCP segment (fits any path MTU here)
BLOCK_HEADERS = (
    "HTTP/1.1 403 Forbidden\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {n}\r\n"
    "Cache-Control: no-store\r\nConnection: close\r\nX-VCR-Block: 1\r\n\r\n"
)


def ip_packet(src: bytes, dst: bytes, proto: int, l4: bytes, ttl: int = 64) -> bytes:
    if len(src) == 4:
        head = IPV4.pack(0x45, 0, 20 + len(l4), 0, 0x4000, ttl, proto, 0, src, dst)
        head = head[:10] + struct.pack("!H", inet_checksum(head)) + head[12:]
        return head + l4
    return struct.pack("!IHBB", 6 << 28, len(l4), proto, ttl) + src + dst + l4


def tcp_segment(src: bytes, dst: bytes, sport: int, dport: int, seq: int, ack: int, flags: int, payload: bytes = b"") -> bytes:
    head = TCP.pack(sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, 5 << 4, flags, 65535, 0, 0)
    csum = inet_checksum(pseudo_header(src, dst, PROTO_TCP, len(head) + len(payload)) + head + payload)
    head = head[:16] + struct.pack("!H", csum) + head[18:]
    return ip_packet(src, dst, PROTO_TCP, head + payload)


def udp_datagram(src: bytes, dst: bytes, sport: int, dport: int, payload: bytes) -> bytes:
    head = UDP.pack(sport, dport, 8 + len(payload), 0)
    csum = inet_checksum(pseudo_header(src, dst, PROTO_UDP, 8 + len(payload)) + head + payload) or 0xFFFF
    return ip_packet(src, dst, PROTO_UDP, head[:6] + struct.pack("!H", csum) + payload)


def build(pkt: Packet, inj: Inject) -> list[bytes]:
    """The packets that carry out ``inj`` for the judged packet ``pkt`` (pure; no I/O)."""
    if inj.kind is InjectKind.DNS_ANSWER and pkt.proto == PROTO_UDP:
        a = inj.args
        if a.get("rcode", 0) == 3 and not a.get("answers"):
            body = nxdomain(pkt.payload)
        else:
            body = build_response(pkt.payload, rcode=a.get("rcode", 0), answers=list(a.get("answers", ())), ttl=a.get("ttl", 60))
        return [udp_datagram(pkt.dst_addr, pkt.src_addr, pkt.dport, pkt.sport, body)]
    if pkt.proto != PROTO_TCP:
        return []
    data_len = len(pkt.payload)
    if inj.kind is InjectKind.HTTP_BLOCK_PAGE:
        html = str(inj.args.get("html", "")).encode("utf-8")
        body = BLOCK_HEADERS.format(n=len(html)).encode() + html
        if inj.args.get("replace"):
            # ``pkt`` starts a response (antivirus): the page goes to its receiver in its place, at
            # its sequence number; its sender (the server) is reset.
            out, seq = [], pkt.seq
            for i in range(0, len(body), SEGMENT):
                piece = body[i:i + SEGMENT]
                last = i + SEGMENT >= len(body)
                out.append(tcp_segment(pkt.src_addr, pkt.dst_addr, pkt.sport, pkt.dport, seq, pkt.ack,
                                       PSH | ACK | (FIN if last else 0), piece))
                seq += len(piece)
            out.append(tcp_segment(pkt.dst_addr, pkt.src_addr, pkt.dport, pkt.sport, pkt.ack, pkt.seq + data_len, RST | ACK))
            return out
        out, seq, ack = [], pkt.ack, pkt.seq + data_len
        for i in range(0, len(body), SEGMENT):
            piece = body[i:i + SEGMENT]
            last = i + SEGMENT >= len(body)
            out.append(tcp_segment(pkt.dst_addr, pkt.src_addr, pkt.dport, pkt.sport, seq, ack,
                                   PSH | ACK | (FIN if last else 0), piece))
            seq += len(piece)
        out.append(tcp_segment(pkt.src_addr, pkt.dst_addr, pkt.sport, pkt.dport, pkt.seq, pkt.ack, RST | ACK))
        return out
    if inj.kind is InjectKind.TCP_RESET:
        out = []
        if inj.args.get("sender", True):
            out.append(tcp_segment(pkt.dst_addr, pkt.src_addr, pkt.dport, pkt.sport, pkt.ack, pkt.seq + data_len, RST | ACK))
        if inj.args.get("receiver", True):
            out.append(tcp_segment(pkt.src_addr, pkt.dst_addr, pkt.sport, pkt.dport, pkt.seq, pkt.ack, RST | ACK))
        return out
    return []


class Injector:
    """Raw IPv4/IPv6 sockets for sending built packets (one per worker)."""

    def __init__(self) -> None:
        self.counters: dict[str, int] = {}
        self._socks: dict[int, socket.socket] = {}

    def _sock(self, family: int) -> socket.socket:
        s = self._socks.get(family)
        if s is None:
            s = socket.socket(family, socket.SOCK_RAW, socket.IPPROTO_RAW)
            if family == socket.AF_INET6:
                s.setsockopt(socket.IPPROTO_IPV6, 36, 1)  # IPV6_HDRINCL
            self._socks[family] = s
        return s

    def send(self, pkt: Packet, inj: Inject) -> int:
        """Build and send; returns the packets sent. Failures are logged and counted, never raised."""
        sent = 0
        try:
            for raw in build(pkt, inj):
                v6 = raw[0] >> 4 == 6
                dst = raw[24:40] if v6 else raw[16:20]
                family = socket.AF_INET6 if v6 else socket.AF_INET
                self._sock(family).sendto(raw, (socket.inet_ntop(family, dst), 0))
                sent += 1
        except OSError as exc:
            log.warning("inject %s failed: %s", inj.kind.value, exc)
            self._count(f"inject.errors.{inj.kind.value}")
        self._count(f"inject.{inj.kind.value}", sent)
        return sent

    def _count(self, key: str, n: int = 1) -> None:
        self.counters[key] = self.counters.get(key, 0) + n

    def close(self) -> None:
        for s in self._socks.values():
            s.close()
        self._socks.clear()


def describe(inj: Inject) -> dict[str, Any]:
    return {"kind": inj.kind.value, **{k: v for k, v in inj.args.items() if k != "html"}}
