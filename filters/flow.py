"""Flow table: bidirectional flows keyed by canonical 5-tuple, their counters, lifetime and timeouts.

Keys. ``FlowKey`` is ``(version, proto, addr_lo, port_lo, addr_hi, port_hi)`` with the two
``(addr, port)`` endpoints ordered so both directions give the same key. Ports are 0 for
ICMP/ICMPv6 (all ICMP between two hosts is one flow, echo id is not used), for protocols without
ports, and for non-first IP fragments, which carry no L4 header: they share the
``(version, proto, addrs, 0, 0)`` flow, are counted there and deliver no data (the kernel's
conntrack defrag normally reassembles fragments before NFQUEUE anyway).

Client. The sender of a flow's first packet, except that a TCP SYN+ACK seen first makes its
receiver the client, and so does a first packet that conntrack has in its connection's reply
direction (``Packet.ct_reply``, inline: a flow whose start the worker did not see, e.g. after the
queue was bypassed, begins with the server's packet). With ``midstream=False`` a TCP packet without SYN starts a flow without a
TCP session (``Flow.no_session``: its packets are inspected one by one, no stream is reassembled,
no app layer) until a SYN starts one, as Suricata does.

Streams. Each flow carries one ``Stream`` per direction, made when first used (a one-way UDP
flow never needs its reply direction's); TCP state and reassembly live in ``filters.stream`` (a
``Reassembler`` the table owns), which ``update`` calls with each packet.

Lifetime. Flows sit in one LRU queue per timeout class (tcp_new, tcp_established, tcp_closed,
udp, icmp, other), so ``expire`` only looks at queue heads and eviction picks the oldest of the
six heads: both O(1) per flow. TCP flows that have only seen one direction use ``tcp_new``.
Flows whose ``held`` list is non-empty are never evicted or expired. Flows that leave the table
other than through ``expire``'s return value or ``remove`` (LRU eviction, a closed flow replaced
by a new SYN on the same tuple) are handed out by ``pop_ended``.
"""
from __future__ import annotations

import collections
import logging
import random
import types
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping

from filters.engine import Action, ConfigError
from filters.packet import ACK, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP, RST, SYN, Packet, Side, ntop
from filters.stream import COUNTERS as STREAM_COUNTERS, Chunk, Reassembler, Stream, TcpState

log = logging.getLogger(__name__)
_CLOSED = TcpState.CLOSED

FlowKey = tuple  # (version, proto, addr_lo, port_lo, addr_hi, port_hi)

DEFAULT_TIMEOUTS: Mapping[str, float] = types.MappingProxyType({
    "tcp_new": 30.0,
    "tcp_established": 3600.0,
    "tcp_closed": 10.0,
    "udp": 120.0,
    "icmp": 30.0,
    "other": 60.0,
})
DEFAULT_MEMCAP = 128 << 20  # per worker: reassembly plus app-layer parser state of all its flows
MAX_SHARED_ADDRS = 4096  # addresses a table keeps one bytes object of for all its flows (then it starts afresh)
_ID_MASK = (1 << 63) - 1
_ID_MULT = 0x5851F42D4C957F2D  # odd: n -> n * _ID_MULT mod 2**63 is a bijection
_OPPOSITE = {Side.LAN: Side.WAN, Side.WAN: Side.LAN, Side.UNKNOWN: Side.UNKNOWN}
_COUNTERS = (
    "flows_created", "evicted", "expired", "removed", "reused", "table_full", "midstream",
    "not_tcp_start_ignored", "sessions_started_late", *STREAM_COUNTERS, "ended_dropped",
)


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
    # A TCP flow whose first packet was not a SYN while midstream pickup is off: as in Suricata,
    # it is a flow (its packets are inspected one by one) without a TCP session (no state, no
    # reassembly, no app layer) until a SYN starts one.
    no_session: bool = False
    # the streams, made on first use (see toserver): most flows of a busy table are one-way datagrams
    _toserver: Stream | None = field(default=None, repr=False)
    _toclient: Stream | None = field(default=None, repr=False)
    encrypted: bool = False
    # Inline, UDP/ICMP: picked up from a packet the kernel prefilter passed to the queue in a
    # connection conntrack calls established (Packet.ct_established): its earlier packets went
    # both ways, whether this worker saw them or not (flow:established).
    ct_established: bool = False
    # Inline: the kernel prefilter may carry the flow (the pipeline gave one, or ct_established)
    prefiltered: bool = False
    decided: Action | None = None
    decided_ts: float = 0.0  # when ``decided`` was set (packet time)
    timeout_class: str = field(default="", repr=False)  # the FlowTable LRU queue it sits in
    # The app layer's state (filters.app.layer.AppState) and the IPS's (filters.ips.engine._FlowState):
    # every inspected flow has both, and as slots they cost 16 bytes where two entries of
    # engine_data cost its dict (184 bytes), which the flows of an IPS then never make.
    app_state: Any = field(default=None, repr=False)
    ips_state: Any = field(default=None, repr=False)
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

    @property
    def toserver(self) -> Stream:
        """The client-to-server stream, made on first use: a table holds 100,000 flows and more,
        and a stream the size of a third of the flow is waste for a direction that sends nothing."""
        s = self._toserver
        if s is None:
            s = self._toserver = Stream()
        return s

    @toserver.setter
    def toserver(self, value: Stream) -> None:
        self._toserver = value

    @property
    def toclient(self) -> Stream:
        """The server-to-client stream, made on first use (see toserver)."""
        s = self._toclient
        if s is None:
            s = self._toclient = Stream()
        return s

    @toclient.setter
    def toclient(self, value: Stream) -> None:
        self._toclient = value

    @property
    def depth_reached(self) -> bool:
        """Both directions reached their stream depth: no more data for the engines (a direction
        without a stream yet has not)."""
        s, r = self._toserver, self._toclient
        return s is not None and r is not None and s.depth_reached and r.depth_reached

    def reverse(self) -> None:
        """Swap client and server: a midstream pickup whose first packet was the server's (found out
        by the app layer, e.g. an HTTP response seen "to server")."""
        self.client_addr, self.server_addr = self.server_addr, self.client_addr
        self.client_port, self.server_port = self.server_port, self.client_port
        self.client_side = {Side.LAN: Side.WAN, Side.WAN: Side.LAN}.get(self.client_side, self.client_side)
        self.pkts_toserver, self.pkts_toclient = self.pkts_toclient, self.pkts_toserver
        self.bytes_toserver, self.bytes_toclient = self.bytes_toclient, self.bytes_toserver
        self._toserver, self._toclient = self._toclient, self._toserver

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


class FlowTable:
    """Bounded flow table with per-timeout-class LRU queues; streams go through its ``Reassembler``."""

    def __init__(
        self,
        *,
        max_flows: int = 100_000,
        stream_depth: int = 1 << 20,
        max_pending_bytes: int = 256 * 1024,
        timeouts: Mapping[str, float] | None = None,
        midstream: bool = True,
        max_pending_total: int = 64 << 20,
        memcap: int = DEFAULT_MEMCAP,
        memcap_policy: str = "pass",
    ) -> None:
        if max_flows < 1:
            raise ConfigError("must be at least 1", key="max_flows")
        if stream_depth < 0 or max_pending_bytes < 0 or max_pending_total < 0:
            raise ConfigError("stream_depth and pending limits must be >= 0", key="stream_depth")
        if memcap < 0:
            raise ConfigError("must be >= 0 (0: no cap)", key="memcap")
        if memcap_policy not in ("pass", "drop"):
            raise ConfigError("expected pass or drop", key="memcap_policy")
        self.memcap = memcap  # bytes held for all flows: reassembly and app-layer parsers (Pipeline._memcap)
        self.memcap_policy = memcap_policy
        if memcap:  # reassembly gets at most half of it, the app-layer parsers the rest
            max_pending_total = min(max_pending_total, memcap // 2)
        self.max_flows = max_flows
        self.midstream = midstream
        self.timeouts: dict[str, float] = _check_timeouts(timeouts or {})
        self.counters: dict[str, int] = dict.fromkeys(_COUNTERS, 0)
        self.streams = Reassembler(
            self.counters, stream_depth=stream_depth, max_pending_bytes=max_pending_bytes, max_pending_total=max_pending_total
        )
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
        self._next_id = 0
        self._id_salt = random.getrandbits(63)
        # One bytes object per address for the flows that share it (a client's flows, a busy
        # server's): each packet brings its own copies, which a flow's key would keep (37 bytes each).
        self._addrs: dict[bytes, bytes] = {}

    # -- table ---------------------------------------------------------------------------
    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[Flow]:
        return iter([flow for queue in self._queues.values() for flow in queue.values()])

    @property
    def pending_total(self) -> int:
        """Out-of-order bytes buffered across all streams."""
        return self.streams.pending_total

    @property
    def stream_depth(self) -> int:
        return self.streams.stream_depth

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
            if flow.state is not _CLOSED or not self._reused(flow, pkt):
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
            if flow.no_session and pkt.tcp_flags & (SYN | RST) == SYN:
                flow.no_session = False  # a SYN starts the session
                self.counters["sessions_started_late"] += 1
            chunks = [] if flow.no_session else self.streams.tcp_update(flow, pkt, to_server)
        else:
            chunks = self.streams.datagram(flow, pkt.payload, to_server)
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
        client_is_src, midstream, no_session = True, False, False
        if pkt.proto == PROTO_TCP and pkt.frag_offset == 0:
            flags = pkt.tcp_flags
            if flags & SYN:
                client_is_src = not flags & ACK
            elif not self.midstream:
                self.counters["not_tcp_start_ignored"] += 1
                no_session = True
            else:
                midstream = True
        if pkt.ct_reply:  # inline: conntrack knows who started the connection (the packet's receiver)
            client_is_src = False
        if self._count >= self.max_flows and not self._evict_one():
            self.counters["table_full"] += 1
            return None
        addrs = self._addrs
        if len(addrs) >= MAX_SHARED_ADDRS:
            addrs.clear()
        src, dst = addrs.setdefault(pkt.src_addr, pkt.src_addr), addrs.setdefault(pkt.dst_addr, pkt.dst_addr)
        key = _key(key[0], key[1], src, sport, dst, dport)
        if client_is_src:
            caddr, cport, saddr, sport_, side = src, sport, dst, dport, pkt.side
        else:
            caddr, cport, saddr, sport_, side = dst, dport, src, sport, _OPPOSITE[pkt.side]
        flow = Flow(
            key, self._new_id(), pkt.version, pkt.proto, caddr, cport, saddr, sport_, side, pkt.ts, pkt.ts,
            midstream=midstream, no_session=no_session,
        )
        if pkt.ct_established and pkt.proto != PROTO_TCP:
            flow.ct_established = flow.prefiltered = True
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
        for s in (flow._toserver, flow._toclient):
            if s is not None:
                self.streams.drop_pending(s)


def _check_timeouts(timeouts: Mapping[str, float]) -> dict[str, float]:
    out = dict(DEFAULT_TIMEOUTS)
    for name, value in timeouts.items():
        if name not in DEFAULT_TIMEOUTS:
            raise ConfigError(f"unknown flow timeout (expected one of {', '.join(DEFAULT_TIMEOUTS)})", key=f"timeouts.{name}")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise ConfigError("must be a positive number of seconds", key=f"timeouts.{name}")
        out[name] = float(value)
    return out
