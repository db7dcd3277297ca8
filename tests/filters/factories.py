"""Test factories: ``tpacket()`` and ``tflow()`` with defaults for a TCP client 192.0.2.10:40000 -> 198.51.100.10:80,
and ``feed``/``handshake``/``send`` to drive a FlowTable through a TCP connection; ``HttpConn`` drives a
Pipeline through one HTTP download."""
from __future__ import annotations

import socket
from typing import Any

from hypothesis import strategies as st

from filters.flow import Flow, FlowTable, flow_key
from filters.packet import ACK, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP, PSH, SYN, Packet, Side
from filters.stream import TcpState

CLIENT = "192.0.2.10"
SERVER = "198.51.100.10"
CLIENT_PORT = 40000
SERVER_PORT = 80
CISN, SISN = 1000, 5000  # the client's and the server's initial sequence numbers in handshake()


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


def feed(table: FlowTable, pkt) -> tuple[Flow, list]:
    found = table.lookup(pkt)
    assert found is not None
    flow, to_server, _ = found
    return flow, table.update(flow, pkt, to_server)


def handshake(table: FlowTable, cisn: int = CISN, sisn: int = SISN, ts: float = 1.0) -> Flow:
    feed(table, tpacket(tcp_flags=SYN, seq=cisn, ack=0, ts=ts))
    feed(table, tpacket(reply=True, tcp_flags=SYN | ACK, seq=sisn, ack=(cisn + 1) % 2**32, ts=ts))
    flow, _ = feed(table, tpacket(tcp_flags=ACK, seq=(cisn + 1) % 2**32, ack=(sisn + 1) % 2**32, ts=ts))
    return flow


def send(table: FlowTable, rel: int, payload: bytes, *, reply: bool = False, isn: int | None = None, **kw) -> list:
    """Data at stream position ``rel`` (0 = first data byte) of the client (or server) stream."""
    isn = (SISN if reply else CISN) if isn is None else isn
    kw.setdefault("tcp_flags", ACK | PSH)
    pkt = tpacket(reply=reply, seq=(isn + 1 + rel) % 2**32, payload=payload, **kw)
    return feed(table, pkt)[1]


def joined(chunks: list) -> bytes:
    return b"".join(c[1] for c in chunks)


class HttpConn:
    """One TCP connection through a Pipeline of ``engines`` (sans-IO): the handshake at once, then
    ``send`` packets or ``get`` a download; ``eve`` holds what the pipeline emits."""

    def __init__(self, *engines: Any) -> None:
        from filters.pipeline import Pipeline

        self.eve: list[dict[str, Any]] = []
        self.pipe = Pipeline(list(engines), FlowTable(), emit=self.eve.append)
        self.ts = 1.0
        self.cseq, self.sseq = CISN + 1, SISN + 1
        self.send(False, SYN, CISN, 0)
        self.send(True, SYN | ACK, SISN, CISN + 1)
        self.send(False, ACK, CISN + 1, SISN + 1)

    def send(self, reply: bool, flags: int, seq: int, ack: int, payload: bytes = b"") -> list[Any]:
        self.ts += 0.001
        pkt = tpacket(reply=reply, tcp_flags=flags, seq=seq, ack=ack, payload=payload, ts=self.ts)
        return self.pipe.process(pkt, seq, self.ts)

    def get(self, body: bytes, *, url: bytes = b"files.example/dl/setup.exe", split: bool = False) -> list[Any]:
        """A GET of ``url`` answered with ``body`` (Content-Length), the response head and body in one
        packet or, with ``split``, two; returns the releases of the last packet."""
        host, _, path = url.partition(b"/")
        req = b"GET /%s HTTP/1.1\r\nHost: %s\r\n\r\n" % (path, host)
        self.send(False, ACK | PSH, self.cseq, self.sseq, req)
        self.cseq += len(req)
        head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body)
        if split:
            self.send(True, ACK | PSH, self.sseq, self.cseq, head)
            self.sseq += len(head)
            return self.send(True, ACK | PSH, self.sseq, self.cseq, body)
        return self.send(True, ACK | PSH, self.sseq, self.cseq, head + body)


@st.composite
def mutated(draw: st.DrawFn, seeds: list[bytes], *, edits: int = 8, span: int = 12, cut: bool = False) -> bytes:
    """One of ``seeds`` with up to ``edits`` byte overwrites, insertions and deletions (of up to ``span``
    bytes) and, with ``cut``, maybe cut short."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(0, edits))):
        op = draw(st.sampled_from(["set", "insert", "delete"]))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "set" and data:
            data[pos] = draw(st.integers(0, 255))
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=span))
        elif data:
            del data[pos:pos + draw(st.integers(1, span))]
    if cut and draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    return bytes(data)
