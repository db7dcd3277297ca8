"""TCP streams: connection state, sequence-space arithmetic and in-order reassembly of each direction.

The flow table (``filters.flow``) owns flows and their lifetime; it hands every packet's L4 part
to a ``Reassembler``, which keeps each direction's ``Stream`` and returns the bytes that became
in-order, as Suricata keeps its flow and stream engines apart.

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
"""
from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING

from filters.packet import ACK, FIN, RST, SYN, Packet

if TYPE_CHECKING:  # pragma: no cover
    from filters.flow import Flow

Chunk = tuple[bool, bytes, int]  # (to_server, data, stream_offset)

MAX_PENDING_SEGMENTS = 1024  # per stream: caps dict overhead from floods of tiny segments
SEGMENT_OVERHEAD = 128  # what a buffered segment costs beyond its bytes (bytes object, dict slot, key):
# counted against max_pending_total, so 1-byte segments cannot hold 100x what the memcap says
MAX_WINDOW = 1 << 30  # largest scaled TCP window: data further ahead is bogus
RST_SLACK = 1 << 16  # a RST this far behind next_seq is still believed

_SEQ_MASK = 0xFFFFFFFF
_SEQ_HALF = 1 << 31
COUNTERS = (
    "ooo_overflow", "pending_memcap", "gaps", "retransmissions", "seq_out_of_window", "depth_reached", "rst_invalid",
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
    depth: int = 0  # this direction's own stream depth when larger than the table's (a file engine's file_depth)




def seq_diff(a: int, b: int) -> int:
    """Signed distance ``a - b`` in 32-bit sequence space."""
    return ((a - b + _SEQ_HALF) & _SEQ_MASK) - _SEQ_HALF


def segment_length(pkt: Packet) -> int:
    """TCP data length the packet claims; more than ``len(payload)`` when truncated."""
    n = len(pkt.payload)
    if pkt.truncated:
        full = pkt.ip_len - pkt.l4_offset - 20 - len(pkt.tcp_options)
        if full > n:
            return full
    return n



class Reassembler:
    """TCP state tracking and reassembly for the streams of one flow table, under shared limits.

    ``counters`` is the owner's counter dict (the flow table's): the names in ``COUNTERS`` are
    counted into it.
    """

    def __init__(
        self, counters: dict[str, int], *, stream_depth: int, max_pending_bytes: int, max_pending_total: int
    ) -> None:
        self.counters = counters
        for name in COUNTERS:
            counters.setdefault(name, 0)
        self.stream_depth = stream_depth
        self.max_pending_bytes = max_pending_bytes
        self.max_pending_total = max_pending_total
        self._pending_total = 0

    @property
    def pending_total(self) -> int:
        """Out-of-order bytes buffered across all streams, SEGMENT_OVERHEAD per segment included."""
        return self._pending_total

    # -- datagrams -----------------------------------------------------------------------
    def datagram(self, flow: Flow, data: bytes, to_server: bool) -> list[Chunk]:
        """A UDP/ICMP/other payload: one chunk at the direction's running offset, capped by the depth."""
        s = flow.toserver if to_server else flow.toclient
        if not data or s.depth_reached:
            return []
        off = s.delivered
        room = max(s.depth, self.stream_depth) - off
        if len(data) >= room:
            data = data[:room]
            self._reach_depth(s)
        s.delivered = off + len(data)
        return [(to_server, data, off)] if data else []

    # -- TCP state -----------------------------------------------------------------------
    def tcp_update(self, flow: Flow, pkt: Packet, to_server: bool) -> list[Chunk]:
        """Track ``flow``'s TCP state through ``pkt`` and return the bytes it made in-order."""
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
                if state is TcpState.SYN_SENT and to_server and r.next_seq is None and not r.pending:
                    # the client's ACK of a SYN+ACK not seen here (the kernel kept it: the
                    # handshake skip, or it was lost): it tells the server's next sequence number,
                    # so the server's first bytes are placed by it, not by whichever segment comes first
                    r.isn, r.next_seq = (pkt.ack - 1) & _SEQ_MASK, pkt.ack
        seg_len = segment_length(pkt) if pkt.payload or pkt.truncated else 0
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
        if self._pending_total + need + npieces * SEGMENT_OVERHEAD > self.max_pending_total:
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
            q = (base + rel) & _SEQ_MASK
            old = s.pending.get(q)
            if old is not None:  # (cannot happen: pieces are uncovered) keep the accounting exact anyway
                s.pending_bytes -= len(old)
                self._pending_total -= len(old) + SEGMENT_OVERHEAD
            s.pending[q] = d
            s.pending_bytes += len(d)
            self._pending_total += len(d) + SEGMENT_OVERHEAD

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
            self._pending_total -= len(d) + SEGMENT_OVERHEAD
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
            room = max(s.depth, self.stream_depth) - off
            if room > 0:
                out.append((to_server, data if len(data) <= room else data[:room], off))
        if length > len(data):
            s.gaps += 1
            self.counters["gaps"] += 1
        s.delivered = off + length
        s.next_seq = next_seq = (s.next_seq + length) & _SEQ_MASK  # type: ignore[operator]
        if next_seq == s.fin_seq:
            s.next_seq = (next_seq + 1) & _SEQ_MASK
        if s.delivered >= max(s.depth, self.stream_depth):
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
        self.drop_pending(s)

    def drop_pending(self, s: Stream) -> None:
        """Forget ``s``'s out-of-order bytes (its flow left the table, or the depth was reached)."""
        if s.pending is not None:
            self._pending_total -= s.pending_bytes + len(s.pending) * SEGMENT_OVERHEAD
            s.pending = None
            s.pending_bytes = 0
