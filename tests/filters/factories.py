"""Test factories: ``tpacket()`` and ``tflow()`` with defaults for a TCP client 192.0.2.10:40000 -> 198.51.100.10:80."""
from __future__ import annotations

import socket
from typing import Any

from filters.flow import Flow, TcpState, flow_key
from filters.packet import ACK, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP, Packet, Side

CLIENT = "192.0.2.10"
SERVER = "198.51.100.10"
CLIENT_PORT = 40000
SERVER_PORT = 80


def pton(ip: str) -> bytes:
    return socket.inet_pton(socket.AF_INET6 if ":" in ip else socket.AF_INET, ip)


def tpacket(*, reply: bool = False, src: str | None = None, dst: str | None = None, **fields: Any) -> Packet:
    """A parsed-looking Packet built directly (``raw`` stays empty unless given).

    ``reply=True`` swaps the default endpoints (server -> client, ingress WAN). ``src``/``dst`` take
    text addresses; every other keyword is a ``Packet`` field. Defaults: TCP ACK, seq 1000, ack 5000;
    ``ip_len`` and ``l4_offset`` follow from the version, protocol, options and payload.
    """
    if src is None:
        src = SERVER if reply else CLIENT
    if dst is None:
        dst = CLIENT if reply else SERVER
    fields.setdefault("src_addr", pton(src))
    fields.setdefault("dst_addr", pton(dst))
    version = fields.setdefault("version", 6 if len(fields["src_addr"]) == 16 else 4)
    proto = fields.setdefault("proto", PROTO_TCP)
    if proto in (PROTO_TCP, PROTO_UDP):
        fields.setdefault("sport", SERVER_PORT if reply else CLIENT_PORT)
        fields.setdefault("dport", CLIENT_PORT if reply else SERVER_PORT)
    if proto == PROTO_TCP:
        fields.setdefault("tcp_flags", ACK)
        fields.setdefault("seq", 5000 if reply else 1000)
        fields.setdefault("ack", 1000 if reply else 5000)
        fields.setdefault("window", 65535)
    fields.setdefault("ts", 1.0)
    fields.setdefault("side", Side.WAN if reply else Side.LAN)
    fields.setdefault("ttl", 64)
    l4_offset = fields.setdefault("l4_offset", 40 if version == 6 else 20)
    if "ip_len" not in fields:
        header = {PROTO_TCP: 20 + len(fields.get("tcp_options", b"")), PROTO_UDP: 8, PROTO_ICMP: 8, PROTO_ICMPV6: 8}
        fields["ip_len"] = l4_offset + header.get(proto, 0) + len(fields.get("payload", b""))
    return Packet(fields.pop("raw", b""), **fields)


def tflow(
    *,
    proto: int = PROTO_TCP,
    client: str = CLIENT,
    server: str = SERVER,
    client_port: int = CLIENT_PORT,
    server_port: int = SERVER_PORT,
    ts: float = 1.0,
    **fields: Any,
) -> Flow:
    """A Flow built directly (not in any FlowTable); TCP flows default to ESTABLISHED."""
    pkt = tpacket(src=client, dst=server, proto=proto, sport=client_port, dport=server_port)
    fields.setdefault("state", TcpState.ESTABLISHED if proto == PROTO_TCP else TcpState.NONE)
    fields.setdefault("flow_id", 1)
    fields.setdefault("client_side", Side.LAN)
    ports = proto in (PROTO_TCP, PROTO_UDP)
    return Flow(
        key=flow_key(pkt),
        version=pkt.version,
        proto=proto,
        client_addr=pkt.src_addr,
        client_port=client_port if ports else 0,
        server_addr=pkt.dst_addr,
        server_port=server_port if ports else 0,
        start_ts=ts,
        last_ts=ts,
        **fields,
    )
