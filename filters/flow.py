"""Flow table: bidirectional flows keyed by canonical 5-tuple, TCP state tracking and stream reassembly.

Keys. ``FlowKey`` is ``(version, proto, addr_lo, port_lo, addr_hi, port_hi)`` with the two
``(addr, port)`` endpoints ordered so both directions give the same key. Ports are 0 for
ICMP/ICMPv6 (all ICMP between two hosts is one flow, echo id is not used), for protocols without
ports, and for non-first IP fragments, which carry no L4 header: they share the
``(version, proto, addrs, 0, 0)`` flow, are counted there and deliver no data (the kernel's
conntrack defrag normally reassembles fragments before NFQUEUE anyway).

Client. The sender of a flow's first packet, except that a TCP SYN+ACK seen first makes its
receiver the client. With ``midstream=False`` a TCP packet without SYN starts no flow.

Reassembly (TCP). Sequence numbers are compared mod 2**32. SYN and FIN each consume one
sequence number. Already-delivered bytes are never delivered again, and overlaps keep the bytes
seen first (both against delivered data and against buffered out-of-order data), like
Suricata's "first"/BSD-ish policy. Out-of-order segments wait in ``Stream.pending``, bounded per
stream (``max_pending_bytes``, ``MAX_PENDING_SEGMENTS``) and for the whole table
(``max_pending_total``). When a segment does not fit, the stream gives up on the oldest hole:
it skips to the first buffered segment (a gap), delivers what is contiguous and retries.
A hole is also skipped when the other side ACKs past it while later data is buffered: on an
inline bridge that means the receiver got bytes we never saw (queue bypass, truncation).
A truncated packet delivers the captured bytes and skips the missing tail as a gap.
Stream offsets count stream positions, so a gap advances ``Stream.delivered`` without
delivering: an engine sees a jump in ``offset``. ``stream_depth`` caps the offset per direction.
Data after a RST or FIN is still reassembled (the state only drives timeouts), so a forged
RST cannot blind inspection; RSTs far outside the expected sequence are ignored.

UDP/ICMP/other: each non-empty payload is one chunk at the direction's running byte offset,
also capped by ``stream_depth``.

Lifetime. Flows sit in one LRU queue per timeout class (tcp_new, tcp_established, tcp_closed,
udp, icmp, other), so ``expire`` only looks at queue heads and eviction picks the oldest of the
six heads: both O(1) per flow. TCP flows that have only seen one direction use ``tcp_new``.
Flows whose ``held`` list is non-empty are never evicted or expired. Flows that leave the table
other than through ``expire``'s return value or ``remove`` (LRU eviction, a closed flow replaced
by a new SYN on the same tuple) are handed out by ``pop_ended``.
"""
from __future__ import annotations

import collections
import enum
import logging
import random
import types
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping

from filters.engine import Action, ConfigError
from filters.packet import ACK, FIN, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP, RST, SYN, Packet, Side, ntop

log = logging.getLogger(__name__)

FlowKey = tuple  # (version, proto, addr_lo, port_lo, addr_hi, port_hi)
Chunk = tuple[bool, bytes, int]  # (to_server, data, stream_offset)

DEFAULT_TIMEOUTS: Mapping[str, float] = types.MappingProxyType({
    "tcp_new": 30.0,
    "tcp_established": 3600.0,
    "tcp_closed": 10.0,
    "udp": 120.0,
    "icmp": 30.0,
    "other": 60.0,
})
MAX_PENDING_SEGMENTS = 1024  # per stream: caps dict overhead from floods of tiny segments
MAX_WINDOW = 1 << 30  # largest scaled TCP window: data further ahead is bogus
RST_SLACK = 1 << 16  # a RST this far behind next_seq is still believed

_SEQ_MASK = 0xFFFFFFFF
_SEQ_HALF = 1 << 31
_ID_MASK = (1 << 63) - 1
_ID_MULT = 0x5851F42D4C957F2D  # odd: n -> n * _ID_MULT mod 2**63 is a bijection
_OPPOSITE = {Side.LAN: Side.WAN, Side.WAN: Side.LAN, Side.UNKNOWN: Side.UNKNOWN}
_COUNTERS = (
    "flows_created", "evicted", "expired", "removed", "reused", "table_full", "midstream",
    "not_tcp_start_ignored", "ooo_overflow", "pending_memcap", "gaps", "retransmissions",
    "seq_out_of_window", "depth_reached", "rst_invalid", "ended_dropped",
)


class TcpState(enum.Enum):
    NONE = "none"
    SYN_SENT = "syn_sent"
    SYN_RECV = "syn_recv"
    ESTABLISHED = "established"
    CLOSING = "closing"  # a FIN was seen
    CLOSED = "closed"  # both FINs acked, or RST


@dataclass(slots=True, eq=False)
class Stream:
    """One direction of a flow: reassembly cursor and out-of-order buffer."""

    isn: int | None = None
    next_seq: int | None = None  # next expected sequence number
    delivered: int = 0  # stream offset of the next byte (bytes delivered plus gaps skipped)
    depth_reached: bool = False  # offset reached stream depth: no more data for this direction
    gaps: int = 0
    pending: dict[int, bytes] | None = None  # out-of-order bytes keyed by seq; created lazily
    pending_bytes: int = 0
    fin: bool = False
    fin_seq: int | None = None  # sequence number the FIN occupies
    fin_acked: bool = False


@dataclass(slots=True, eq=False)
class Flow:
    """A bidirectional flow: endpoints, counters, TCP state and per-engine metadata."""

    key: FlowKey
    flow_id: int
    version: int
    proto: int
    client_addr: bytes
    client_port: int
    server_addr: bytes
    server_port: int
    client_side: Side
    start_ts: float
    last_ts: float
    pkts_toserver: int = 0
    pkts_toclient: int = 0
    bytes_toserver: int = 0
    bytes_toclient: int = 0
    state: TcpState = TcpState.NONE
    prev_state: TcpState = TcpState.NONE  # the state before the packet last accounted (update)
    midstream: bool = False
    toserver: Stream = field(default_factory=Stream)
    toclient: Stream = field(default_factory=Stream)
    encrypted: bool = False
    decided: Action | None = None
    timeout_class: str = field(default="", repr=False)  # the FlowTable LRU queue it sits in
    # engine_data and held are created on first access: most flows never need them.
    _engine_data: dict[str, Any] | None = field(default=None, repr=False)
    _held: list | None = field(default=None, repr=False)

    @property
    def engine_data(self) -> dict[str, Any]:
        """Per-engine metadata, keyed by engine name."""
        if self._engine_data is None:
            self._engine_data = {}
        return self._engine_data

    @engine_data.setter
    def engine_data(self, value: dict[str, Any]) -> None:
        self._engine_data = value

    @property
    def held(self) -> list:
        """Held packets (owned by the pipeline); a FlowTable never evicts or expires a flow while non-empty."""
        if self._held is None:
            self._held = []
        return self._held

    @held.setter
    def held(self, value: list) -> None:
        self._held = value

    @property
    def is_held(self) -> bool:
        return bool(self._held)

    def reverse(self) -> None:
        """Swap client and server: a midstream pickup whose first packet was the server's (found out
        by the app layer, e.g. an HTTP response seen "to server")."""
        self.client_addr, self.server_addr = self.server_addr, self.client_addr
        self.client_port, self.server_port = self.server_port, self.client_port
        self.client_side = {Side.LAN: Side.WAN, Side.WAN: Side.LAN}.get(self.client_side, self.client_side)
        self.pkts_toserver, self.pkts_toclient = self.pkts_toclient, self.pkts_toserver
        self.bytes_toserver, self.bytes_toclient = self.bytes_toclient, self.bytes_toserver
        self.toserver, self.toclient = self.toclient, self.toserver

    def stream(self, to_server: bool) -> Stream:
        return self.toserver if to_server else self.toclient

    def to_server(self, pkt: Packet) -> bool:
        """Whether ``pkt`` goes from this flow's client to its server (a non-first fragment, which
        has no ports, goes by its source address)."""
        return pkt.src_addr == self.client_addr and (pkt.sport == self.client_port or not pkt.has_ports)

    @property
    def client_ip(self) -> str:
        return ntop(self.client_addr)

    @property
    def server_ip(self) -> str:
        return ntop(self.server_addr)


def flow_key(pkt: Packet) -> FlowKey:
    """The canonical key of ``pkt``'s flow (same for both directions)."""
    sport, dport = _ports(pkt)
    return _key(pkt.version, pkt.proto, pkt.src_addr, sport, pkt.dst_addr, dport)


def seq_diff(a: int, b: int) -> int:
    """Signed distance ``a - b`` in 32-bit sequence space."""
    return ((a - b + _SEQ_HALF) & _SEQ_MASK) - _SEQ_HALF


def _ports(pkt: Packet) -> tuple[int, int]:
    if (pkt.proto == PROTO_TCP or pkt.proto == PROTO_UDP) and pkt.frag_offset == 0:
        return pkt.sport, pkt.dport
    return 0, 0


def _key(version: int, proto: int, src: bytes, sport: int, dst: bytes, dport: int) -> FlowKey:
    if src < dst or (src == dst and sport <= dport):
        return (version, proto, src, sport, dst, dport)
    return (version, proto, dst, dport, src, sport)


def _queue_of(flow: Flow) -> str:
    proto = flow.proto
    if proto == PROTO_TCP:
        state = flow.state
        if state is TcpState.CLOSED:
            return "tcp_closed"
        if (state is TcpState.ESTABLISHED or state is TcpState.CLOSING) and flow.pkts_toclient and flow.pkts_toserver:
            return "tcp_established"
        return "tcp_new"
    if proto == PROTO_UDP:
        return "udp"
    if proto == PROTO_ICMP or proto == PROTO_ICMPV6:
        return "icmp"
    return "other"


def _segment_length(pkt: Packet) -> int:
    """TCP data length the packet claims; more than ``len(payload)`` when truncated."""
    n = len(pkt.payload)
    if pkt.truncated:
        full = pkt.ip_len - pkt.l4_offset - 20 - len(pkt.tcp_options)
        if full > n:
            return full
    return n


class FlowTable:
    """Bounded flow table with per-timeout-class LRU queues and TCP reassembly."""

    def __init__(
        self,
        *,
        max_flows: int = 100_000,
        stream_depth: int = 1 << 20,
        max_pending_bytes: int = 256 * 1024,
        timeouts: Mapping[str, float] | None = None,
        midstream: bool = True,
        max_pending_total: int = 64 << 20,
    ) -> None:
        if max_flows < 1:
            raise ConfigError("must be at least 1", key="max_flows")
        if stream_depth < 0 or max_pending_bytes < 0 or max_pending_total < 0:
            raise ConfigError("stream_depth and pending limits must be >= 0", key="stream_depth")
        self.max_flows = max_flows
        self.stream_depth = stream_depth
        self.max_pending_bytes = max_pending_bytes
        self.max_pending_total = max_pending_total
        self.midstream = midstream
        self.timeouts: dict[str, float] = _check_timeouts(timeouts or {})
        self.counters: dict[str, int] = dict.fromkeys(_COUNTERS, 0)
        self._count = 0
        self._queues: dict[str, collections.OrderedDict[FlowKey, Flow]] = {
            name: collections.OrderedDict() for name in DEFAULT_TIMEOUTS
        }
        self._q_established = self._queues["tcp_established"]
        self._q_new = self._queues["tcp_new"]
        self._q_closed = self._queues["tcp_closed"]
        self._q_other = self._queues["other"]
        self._q_by_proto = {PROTO_UDP: self._queues["udp"], PROTO_ICMP: self._queues["icmp"], PROTO_ICMPV6: self._queues["icmp"]}
        self._ended: collections.deque[Flow] = collections.deque(maxlen=max_flows)
        self._pending_total = 0
        self._next_id = 0
        self._id_salt = random.getrandbits(63)

    # -- table ---------------------------------------------------------------------------
    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[Flow]:
        return iter([flow for queue in self._queues.values() for flow in queue.values()])

    @property
    def pending_total(self) -> int:
        """Out-of-order bytes buffered across all streams."""
        return self._pending_total

    def lookup(self, pkt: Packet) -> tuple[Flow, bool, bool] | None:
        """``(flow, to_server, is_new)`` for ``pkt``, creating the flow if needed; None if it can't have one."""
        if pkt.version == 0 or pkt.anomaly is not None:
            return None
        proto = pkt.proto
        if (proto == PROTO_TCP or proto == PROTO_UDP) and pkt.frag_offset == 0:
            sport, dport = pkt.sport, pkt.dport
        else:
            sport = dport = 0
        src, dst = pkt.src_addr, pkt.dst_addr
        if src < dst or (src == dst and sport <= dport):
            key = (pkt.version, proto, src, sport, dst, dport)
        else:
            key = (pkt.version, proto, dst, dport, src, sport)
        if proto == PROTO_TCP:  # a TCP flow sits in one of three queues, most likely established
            queue = self._q_established
            flow = queue.get(key)
            if flow is None:
                queue = self._q_new
                flow = queue.get(key)
                if flow is None:
                    queue = self._q_closed
                    flow = queue.get(key)
        else:
            queue = self._q_by_proto.get(proto, self._q_other)
            flow = queue.get(key)
        if flow is not None:
            if flow.state is not TcpState.CLOSED or not self._reused(flow, pkt):
                if pkt.ts > flow.last_ts:
                    flow.last_ts = pkt.ts
                queue.move_to_end(key)
                return flow, src == flow.client_addr and sport == flow.client_port, False
            self._unlink(flow)
            self.counters["reused"] += 1
            self._end(flow)
        return self._create(key, pkt, sport, dport)

    def update(self, flow: Flow, pkt: Packet, to_server: bool) -> list[Chunk]:
        """Account ``pkt`` to ``flow``; return the newly in-order data as ``(to_server, data, offset)``."""
        if pkt.ts > flow.last_ts:
            flow.last_ts = pkt.ts
        size = pkt.ip_len or len(pkt.raw)
        state = flow.prev_state = flow.state
        if to_server:
            flow.pkts_toserver = first = flow.pkts_toserver + 1
            flow.bytes_toserver += size
        else:
            flow.pkts_toclient = first = flow.pkts_toclient + 1
            flow.bytes_toclient += size
        if pkt.frag_offset:
            chunks: list[Chunk] = []  # non-first fragment: no L4 header, no data
        elif pkt.proto == PROTO_TCP:
            chunks = self._tcp_update(flow, pkt, to_server)
        else:
            chunks = self._datagram(flow, pkt.payload, to_server)
        if flow.state is not state or first == 1:  # the timeout class may have changed
            self._requeue(flow)
        return chunks

    def _requeue(self, flow: Flow) -> None:
        queue = self._queues[flow.timeout_class]
        name = _queue_of(flow)
        if name != flow.timeout_class and queue.get(flow.key) is flow:
            del queue[flow.key]
            flow.timeout_class = name
            self._queues[name][flow.key] = flow

    def expire(self, now: float) -> list[Flow]:
        """Remove and return flows idle past their class's timeout; held flows stay."""
        out: list[Flow] = []
        for name, queue in self._queues.items():
            deadline = now - self.timeouts[name]
            for flow in queue.values():
                if flow.last_ts > deadline:
                    break
                if not flow._held:
                    out.append(flow)
        for flow in out:
            self._unlink(flow)
        self.counters["expired"] += len(out)
        return out

    def pop_ended(self) -> list[Flow]:
        """Flows evicted or replaced since the last call (for the engines' ``on_flow_end``)."""
        out = list(self._ended)
        self._ended.clear()
        return out

    def remove(self, flow: Flow) -> None:
        """Take ``flow`` out of the table (it is not reported by ``pop_ended``)."""
        if self._queues[flow.timeout_class].get(flow.key) is flow:
            self._unlink(flow)
            self.counters["removed"] += 1

    # -- flow lifetime -------------------------------------------------------------------
    def _reused(self, flow: Flow, pkt: Packet) -> bool:
        """A new SYN on a closed TCP flow starts a new flow on the same tuple."""
        return (
            flow.state is TcpState.CLOSED
            and pkt.proto == PROTO_TCP
            and pkt.tcp_flags & (SYN | ACK | RST) == SYN
            and not flow._held
        )

    def _create(self, key: FlowKey, pkt: Packet, sport: int, dport: int) -> tuple[Flow, bool, bool] | None:
        client_is_src, midstream = True, False
        if pkt.proto == PROTO_TCP and pkt.frag_offset == 0:
            flags = pkt.tcp_flags
            if flags & SYN:
                client_is_src = not flags & ACK
            elif not self.midstream:
                self.counters["not_tcp_start_ignored"] += 1
                return None
            else:
                midstream = True
        if self._count >= self.max_flows and not self._evict_one():
            self.counters["table_full"] += 1
            return None
        if client_is_src:
            caddr, cport, saddr, sport_, side = pkt.src_addr, sport, pkt.dst_addr, dport, pkt.side
        else:
            caddr, cport, saddr, sport_, side = pkt.dst_addr, dport, pkt.src_addr, sport, _OPPOSITE[pkt.side]
        flow = Flow(
            key, self._new_id(), pkt.version, pkt.proto, caddr, cport, saddr, sport_, side, pkt.ts, pkt.ts,
            midstream=midstream,
        )
        flow.timeout_class = _queue_of(flow)
        self._queues[flow.timeout_class][key] = flow
        self._count += 1
        self.counters["flows_created"] += 1
        if midstream:
            self.counters["midstream"] += 1
        return flow, client_is_src, True

    def _new_id(self) -> int:
        while True:
            self._next_id += 1
            flow_id = ((self._next_id * _ID_MULT) & _ID_MASK) ^ self._id_salt
            if flow_id:
                return flow_id

    def _evict_one(self) -> bool:
        """Evict the least recently used flow without held packets; False if there is none."""
        victim: Flow | None = None
        for queue in self._queues.values():
            for flow in queue.values():
                if not flow._held:
                    if victim is None or flow.last_ts < victim.last_ts:
                        victim = flow
                    break
        if victim is None:
            return False
        log.debug("flow table full: evicting flow %d", victim.flow_id)
        self._unlink(victim)
        self.counters["evicted"] += 1
        self._end(victim)
        return True

    def _end(self, flow: Flow) -> None:
        if len(self._ended) == self._ended.maxlen:
            self.counters["ended_dropped"] += 1
        self._ended.append(flow)

    def _unlink(self, flow: Flow) -> None:
        del self._queues[flow.timeout_class][flow.key]
        self._count -= 1
        self._drop_pending(flow.toserver)
        self._drop_pending(flow.toclient)

    # -- datagrams -----------------------------------------------------------------------
    def _datagram(self, flow: Flow, data: bytes, to_server: bool) -> list[Chunk]:
        s = flow.toserver if to_server else flow.toclient
        if not data or s.depth_reached:
            return []
        off = s.delivered
        room = self.stream_depth - off
        if len(data) >= room:
            data = data[:room]
            self._reach_depth(s)
        s.delivered = off + len(data)
        return [(to_server, data, off)] if data else []

    # -- TCP state -----------------------------------------------------------------------
    def _tcp_update(self, flow: Flow, pkt: Packet, to_server: bool) -> list[Chunk]:
        flags = pkt.tcp_flags
        s, r = (flow.toserver, flow.toclient) if to_server else (flow.toclient, flow.toserver)
        out: list[Chunk] = []
        if flags & RST:
            self._on_rst(flow, s, pkt.seq)
            return out
        seq = pkt.seq
        if flags & SYN:
            self._on_syn(flow, s, r, pkt, flags)
            seq = (seq + 1) & _SEQ_MASK
        else:
            if s.next_seq is None:
                s.next_seq = seq  # midstream pickup
            state = flow.state
            if state is TcpState.NONE or (flags & ACK and (state is TcpState.SYN_SENT or state is TcpState.SYN_RECV)):
                flow.state = TcpState.ESTABLISHED
        seg_len = _segment_length(pkt) if pkt.payload or pkt.truncated else 0
        if seg_len:
            self._tcp_data(s, seq, pkt.payload, seg_len, to_server, out)
        if flags & ACK:
            self._on_ack(flow, s, r, pkt.ack, not to_server, out)
        if flags & FIN:
            self._on_fin(flow, s, (seq + seg_len) & _SEQ_MASK)
        return out

    def _on_syn(self, flow: Flow, s: Stream, r: Stream, pkt: Packet, flags: int) -> None:
        state = flow.state
        fresh = s.delivered == 0 and not s.pending
        if flags & ACK:
            if state is TcpState.NONE or state is TcpState.SYN_SENT or state is TcpState.SYN_RECV:
                if fresh:
                    s.isn, s.next_seq = pkt.seq, (pkt.seq + 1) & _SEQ_MASK
                if r.next_seq is None:  # SYN+ACK seen first: its ACK tells the client's next seq
                    r.isn, r.next_seq = (pkt.ack - 1) & _SEQ_MASK, pkt.ack
                flow.state = TcpState.SYN_RECV
        elif state is TcpState.NONE or state is TcpState.SYN_SENT:
            if fresh:
                s.isn, s.next_seq = pkt.seq, (pkt.seq + 1) & _SEQ_MASK
            flow.state = TcpState.SYN_SENT
        elif s.next_seq is None:
            s.next_seq = (pkt.seq + 1) & _SEQ_MASK

    def _on_rst(self, flow: Flow, s: Stream, seq: int) -> None:
        if s.next_seq is not None and not s.depth_reached and not -RST_SLACK <= seq_diff(seq, s.next_seq) <= MAX_WINDOW:
            self.counters["rst_invalid"] += 1
            return
        flow.state = TcpState.CLOSED

    def _on_ack(self, flow: Flow, s: Stream, r: Stream, ack: int, r_to_server: bool, out: list[Chunk]) -> None:
        """``s`` sent an ACK for ``r``'s data: note an acked FIN, skip holes the receiver got past."""
        if r.fin_seq is not None and not r.fin_acked and seq_diff(ack, r.fin_seq) >= 1:
            r.fin_acked = True
            if s.fin_acked:
                flow.state = TcpState.CLOSED
        if r.pending and r.next_seq is not None and seq_diff(ack, r.next_seq) > 0:
            first = self._first_pending(r)
            self._skip(r, ack if seq_diff(ack, first) < 0 else first)
            self._drain(r, r_to_server, out)

    def _on_fin(self, flow: Flow, s: Stream, fin_seq: int) -> None:
        if s.fin_seq is None:
            s.fin_seq = fin_seq
        s.fin = True
        if flow.state is not TcpState.CLOSED:
            flow.state = TcpState.CLOSING
        if s.next_seq == s.fin_seq:
            s.next_seq = (s.next_seq + 1) & _SEQ_MASK

    # -- reassembly ----------------------------------------------------------------------
    def _tcp_data(self, s: Stream, seq: int, data: bytes, seg_len: int, to_server: bool, out: list[Chunk]) -> None:
        if s.depth_reached:
            return
        if s.next_seq is None:
            s.next_seq = seq
        rel = seq_diff(seq, s.next_seq)
        if rel + seg_len <= 0:
            self.counters["retransmissions"] += 1
            return
        if rel > MAX_WINDOW:
            self.counters["seq_out_of_window"] += 1
            return
        if rel <= 0 and not s.pending:  # the common case: in order, nothing buffered
            self._emit(s, data[-rel:], seg_len + rel, to_server, out)
            return
        self._buffer(s, seq, data, to_server, out)
        if seg_len > len(data) and not s.depth_reached:  # truncated: skip the missing tail if we are at it
            cap_end = (seq + len(data)) & _SEQ_MASK
            if s.next_seq == cap_end:
                end = (seq + seg_len) & _SEQ_MASK
                first = self._first_pending(s) if s.pending else end
                self._skip(s, end if seq_diff(end, first) < 0 else first)
                self._drain(s, to_server, out)

    def _buffer(self, s: Stream, seq: int, data: bytes, to_server: bool, out: list[Chunk]) -> None:
        """Add captured bytes to the out-of-order buffer (first seen wins), making room if needed."""
        overflowed = False
        while data and not s.depth_reached:
            base = s.next_seq
            assert base is not None
            rel = seq_diff(seq, base)
            if rel + len(data) <= 0:
                break
            if rel < 0:
                data, seq, rel = data[-rel:], base, 0
            pieces = self._uncovered(s, base, rel, data)
            need = sum(len(p) for _, p in pieces)
            if rel == 0 or self._fits(s, need, len(pieces)):
                self._store(s, base, pieces)
                break
            if not overflowed:
                overflowed = True
                self.counters["ooo_overflow"] += 1
            self._skip(s, self._first_pending(s) if s.pending else seq)
            self._drain(s, to_server, out)
        self._drain(s, to_server, out)

    def _fits(self, s: Stream, need: int, npieces: int) -> bool:
        if self._pending_total + need > self.max_pending_total:
            self.counters["pending_memcap"] += 1
            return False
        count = len(s.pending) if s.pending else 0
        return s.pending_bytes + need <= self.max_pending_bytes and count + npieces <= MAX_PENDING_SEGMENTS

    @staticmethod
    def _uncovered(s: Stream, base: int, rel: int, data: bytes) -> list[tuple[int, bytes]]:
        """The parts of ``data`` (at ``rel`` from ``base``) not already buffered, as ``(rel, bytes)``."""
        if not s.pending:
            return [(rel, data)]
        end = rel + len(data)
        cur = rel
        pieces: list[tuple[int, bytes]] = []
        for r, d in sorted((seq_diff(q, base), d) for q, d in s.pending.items()):
            r_end = r + len(d)
            if r_end <= cur:
                continue
            if r >= end:
                break
            if r > cur:
                pieces.append((cur, data[cur - rel : r - rel]))
            cur = r_end
            if cur >= end:
                break
        if cur < end:
            pieces.append((cur, data[cur - rel :]))
        return pieces

    def _store(self, s: Stream, base: int, pieces: list[tuple[int, bytes]]) -> None:
        if s.pending is None:
            s.pending = {}
        for rel, d in pieces:
            s.pending[(base + rel) & _SEQ_MASK] = d
            s.pending_bytes += len(d)
            self._pending_total += len(d)

    @staticmethod
    def _first_pending(s: Stream) -> int:
        base = s.next_seq
        assert s.pending and base is not None
        return min(s.pending, key=lambda q: seq_diff(q, base))

    def _drain(self, s: Stream, to_server: bool, out: list[Chunk]) -> None:
        """Deliver buffered segments that are now contiguous with ``next_seq``."""
        pending = s.pending
        if not pending:
            s.pending = None
            return
        base = s.next_seq
        assert base is not None
        for q in sorted(pending, key=lambda q: seq_diff(q, base)):
            rel = seq_diff(q, s.next_seq)
            if rel > 0:
                break
            d = pending.pop(q)
            s.pending_bytes -= len(d)
            self._pending_total -= len(d)
            if rel + len(d) > 0:
                self._emit(s, d[-rel:], len(d) + rel, to_server, out)
                if s.depth_reached:
                    return
        if not pending:
            s.pending = None

    def _emit(self, s: Stream, data: bytes, length: int, to_server: bool, out: list[Chunk]) -> None:
        """Deliver ``data`` at ``next_seq``; ``length`` beyond ``len(data)`` is a gap (truncated tail)."""
        off = s.delivered
        if data:
            room = self.stream_depth - off
            if room > 0:
                out.append((to_server, data if len(data) <= room else data[:room], off))
        if length > len(data):
            s.gaps += 1
            self.counters["gaps"] += 1
        s.delivered = off + length
        s.next_seq = next_seq = (s.next_seq + length) & _SEQ_MASK  # type: ignore[operator]
        if next_seq == s.fin_seq:
            s.next_seq = (next_seq + 1) & _SEQ_MASK
        if s.delivered >= self.stream_depth:
            self._reach_depth(s)

    def _skip(self, s: Stream, to_seq: int) -> None:
        """Give up on the bytes before ``to_seq``: a gap in the stream."""
        assert s.next_seq is not None
        gap = seq_diff(to_seq, s.next_seq)
        if gap <= 0:
            return
        self._emit(s, b"", gap, True, [])

    def _reach_depth(self, s: Stream) -> None:
        if not s.depth_reached:
            s.depth_reached = True
            self.counters["depth_reached"] += 1
        self._drop_pending(s)

    def _drop_pending(self, s: Stream) -> None:
        if s.pending is not None:
            self._pending_total -= s.pending_bytes
            s.pending = None
            s.pending_bytes = 0


def _check_timeouts(timeouts: Mapping[str, float]) -> dict[str, float]:
    out = dict(DEFAULT_TIMEOUTS)
    for name, value in timeouts.items():
        if name not in DEFAULT_TIMEOUTS:
            raise ConfigError(f"unknown flow timeout (expected one of {', '.join(DEFAULT_TIMEOUTS)})", key=f"timeouts.{name}")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise ConfigError("must be a positive number of seconds", key=f"timeouts.{name}")
        out[name] = float(value)
    return out
