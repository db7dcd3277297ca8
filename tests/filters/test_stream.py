"""Tests for filters.stream: TCP state, reassembly (overlaps, holes, limits, depth, truncation) and datagram offsets."""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.filters.factories import CISN, SISN, feed, handshake, joined, send, tpacket
from filters.flow import FlowTable
from filters.packet import ACK, FIN, PROTO_UDP, PSH, RST, SYN
from filters.stream import SEGMENT_OVERHEAD, TcpState, seq_diff


# -- TCP state --------------------------------------------------------------------------------
def test_handshake_states():
    table = FlowTable()
    flow, _ = feed(table, tpacket(tcp_flags=SYN, seq=CISN, ack=0))
    assert flow.state is TcpState.SYN_SENT and flow.toserver.isn == CISN and flow.toserver.next_seq == CISN + 1
    feed(table, tpacket(reply=True, tcp_flags=SYN | ACK, seq=SISN, ack=CISN + 1))
    assert flow.state is TcpState.SYN_RECV and flow.toclient.next_seq == SISN + 1
    feed(table, tpacket(tcp_flags=ACK, seq=CISN + 1, ack=SISN + 1))
    assert flow.state is TcpState.ESTABLISHED and not flow.midstream
    assert (flow.pkts_toserver, flow.pkts_toclient) == (2, 1)
    assert flow.bytes_toserver == 80 and flow.bytes_toclient == 40


def test_fin_teardown_states():
    table = FlowTable()
    flow = handshake(table)
    send(table, 0, b"hello")
    feed(table, tpacket(tcp_flags=FIN | ACK, seq=CISN + 6, ack=SISN + 1))
    assert flow.state is TcpState.CLOSING and flow.toserver.fin and flow.toserver.next_seq == CISN + 7
    feed(table, tpacket(reply=True, tcp_flags=FIN | ACK, seq=SISN + 1, ack=CISN + 7))
    assert flow.state is TcpState.CLOSING and flow.toserver.fin_acked and not flow.toclient.fin_acked
    feed(table, tpacket(tcp_flags=ACK, seq=CISN + 7, ack=SISN + 2))
    assert flow.state is TcpState.CLOSED


def test_fin_without_ack_of_it_stays_closing():
    table = FlowTable()
    flow = handshake(table)
    feed(table, tpacket(tcp_flags=FIN | ACK, seq=CISN + 1, ack=SISN + 1))
    feed(table, tpacket(reply=True, tcp_flags=FIN | ACK, seq=SISN + 1, ack=CISN + 1))  # does not ack the FIN
    assert flow.state is TcpState.CLOSING


def test_rst_closes_and_far_off_rst_is_ignored():
    table = FlowTable()
    flow = handshake(table)
    feed(table, tpacket(tcp_flags=RST, seq=CISN + 1 + 2**31 - 7))
    assert flow.state is TcpState.ESTABLISHED and table.counters["rst_invalid"] == 1
    feed(table, tpacket(reply=True, tcp_flags=RST | ACK, seq=SISN + 1, ack=CISN + 1))
    assert flow.state is TcpState.CLOSED
    assert send(table, 0, b"after rst") == [(True, b"after rst", 0)]  # still inspected


def test_syn_on_closed_flow_starts_new_flow():
    table = FlowTable()
    old = handshake(table)
    feed(table, tpacket(tcp_flags=RST, seq=CISN + 1))
    new, to_server, is_new = table.lookup(tpacket(tcp_flags=SYN, seq=77))
    assert is_new and to_server and new is not old and new.key == old.key
    assert table.pop_ended() == [old] and table.counters["reused"] == 1


# -- reassembly -------------------------------------------------------------------------------
def test_in_order_delivery_with_offsets_both_directions():
    table = FlowTable()
    handshake(table)
    assert send(table, 0, b"GET / HTTP/1.1\r\n") == [(True, b"GET / HTTP/1.1\r\n", 0)]
    assert send(table, 16, b"\r\n") == [(True, b"\r\n", 16)]
    assert send(table, 0, b"HTTP/1.1 200", reply=True) == [(False, b"HTTP/1.1 200", 0)]


def test_syn_consumes_one_sequence_number_and_syn_data_is_delivered():
    table = FlowTable()
    flow, chunks = feed(table, tpacket(tcp_flags=SYN, seq=CISN, payload=b"tfo"))
    assert chunks == [(True, b"tfo", 0)] and flow.toserver.next_seq == CISN + 4


def test_retransmission_not_redelivered():
    table = FlowTable()
    handshake(table)
    send(table, 0, b"abcdef")
    assert send(table, 0, b"abcdef") == []
    assert send(table, 2, b"cd") == []
    assert table.counters["retransmissions"] == 2
    assert send(table, 3, b"defGHI") == [(True, b"GHI", 6)]  # only the new tail


def test_overlap_first_seen_wins_over_buffered_data():
    table = FlowTable()
    flow = handshake(table)
    assert send(table, 4, b"BBBB") == []  # out of order, buffered
    assert flow.toserver.pending_bytes == 4
    chunks = send(table, 0, b"aaaaXXXXcc")  # overlaps the buffered bytes with different data
    assert joined(chunks) == b"aaaaBBBBcc"
    assert [c[2] for c in chunks] == [0, 4, 8]
    assert flow.toserver.pending is None and flow.toserver.pending_bytes == 0 and table.pending_total == 0


def test_overlap_between_buffered_segments_first_seen_wins():
    table = FlowTable()
    handshake(table)
    send(table, 4, b"1111")
    send(table, 2, b"22222222")  # covers 2..10: only 2..4 and 8..10 are new
    assert joined(send(table, 0, b"00")) == b"0022111122"


def test_out_of_order_buffered_then_delivered():
    table = FlowTable()
    flow = handshake(table)
    assert send(table, 10, b"third") == []
    assert send(table, 5, b"secnd") == []
    assert flow.toserver.pending_bytes == 10 and table.pending_total == 10 + 2 * SEGMENT_OVERHEAD
    chunks = send(table, 0, b"first")
    assert chunks == [(True, b"first", 0), (True, b"secnd", 5), (True, b"third", 10)]
    assert flow.toserver.delivered == 15 and flow.toserver.gaps == 0 and table.pending_total == 0


def test_pending_overflow_skips_gap_and_counts():
    table = FlowTable(max_pending_bytes=8)
    flow = handshake(table)
    assert send(table, 10, b"AAAA") == []
    assert send(table, 14, b"BBBB") == []
    chunks = send(table, 18, b"CCCC")  # no room: give up on 0..10 and deliver what follows
    assert chunks == [(True, b"AAAA", 10), (True, b"BBBB", 14), (True, b"CCCC", 18)]
    assert table.counters["ooo_overflow"] == 1 and table.counters["gaps"] == 1 and flow.toserver.gaps == 1
    assert send(table, 0, b"late") == []  # the skipped bytes are not delivered afterwards
    assert send(table, 22, b"D") == [(True, b"D", 22)]


def test_segment_larger_than_pending_limit_skips_to_it():
    table = FlowTable(max_pending_bytes=4)
    handshake(table)
    assert send(table, 3, b"0123456789") == [(True, b"0123456789", 3)]
    assert table.counters["ooo_overflow"] == 1 and table.counters["gaps"] == 1


def test_table_wide_pending_memcap():
    table = FlowTable(max_pending_total=6 + SEGMENT_OVERHEAD)  # one segment's bytes and overhead fit
    handshake(table)
    send(table, 10, b"AAAA")
    assert send(table, 20, b"BBBB") == [(True, b"AAAA", 10)]  # over the table's cap: skip a gap
    assert table.counters["pending_memcap"] >= 1 and table.pending_total == 4 + SEGMENT_OVERHEAD


def test_segment_count_limit(monkeypatch):
    monkeypatch.setattr("filters.stream.MAX_PENDING_SEGMENTS", 3)
    table = FlowTable()
    flow = handshake(table)
    for rel in (10, 12, 14):
        assert send(table, rel, b"x") == []
    assert send(table, 16, b"y") == [(True, b"x", 10)]  # skipping the first hole makes enough room
    assert table.counters["ooo_overflow"] == 1 and len(flow.toserver.pending) == 3


def test_ack_past_a_hole_skips_it_when_later_data_is_buffered():
    table = FlowTable()
    flow = handshake(table)
    send(table, 0, b"head")
    send(table, 8, b"tail")  # bytes 4..8 never seen
    chunks = feed(table, tpacket(reply=True, tcp_flags=ACK, seq=SISN + 1, ack=CISN + 1 + 12))[1]
    assert chunks == [(True, b"tail", 8)] and flow.toserver.gaps == 1


def test_ack_past_everything_seen_does_not_skip():
    table = FlowTable()
    flow = handshake(table)
    send(table, 0, b"head")
    feed(table, tpacket(reply=True, tcp_flags=ACK, seq=SISN + 1, ack=CISN + 1 + 1000))
    assert flow.toserver.next_seq == CISN + 5
    assert send(table, 4, b"more") == [(True, b"more", 4)]


def test_seq_wraparound():
    table = FlowTable()
    isn = 2**32 - 6
    flow = handshake(table, cisn=isn)
    assert send(table, 0, b"abc", isn=isn) == [(True, b"abc", 0)]
    assert send(table, 3, b"defgh", isn=isn) == [(True, b"defgh", 3)]  # crosses 2**32
    assert flow.toserver.next_seq == 3
    assert send(table, 12, b"late", isn=isn) == []
    assert joined(send(table, 8, b"ijkl", isn=isn)) == b"ijkllate"
    assert send(table, 1, b"bcd", isn=isn) == []  # retransmission across the wrap
    assert seq_diff(0, 2**32 - 1) == 1 and seq_diff(2**32 - 1, 0) == -1


def test_stream_depth_cutoff():
    table = FlowTable(stream_depth=10)
    flow = handshake(table)
    assert send(table, 0, b"012345") == [(True, b"012345", 0)]
    assert send(table, 6, b"6789abcd") == [(True, b"6789", 6)]
    assert flow.toserver.depth_reached and not flow.toclient.depth_reached
    assert send(table, 14, b"more") == []
    assert send(table, 0, b"other way", reply=True) == [(False, b"other way", 0)]
    assert table.counters["depth_reached"] == 1


def test_stream_depth_drops_buffered_data():
    table = FlowTable(stream_depth=8)
    flow = handshake(table)
    send(table, 20, b"pending")
    assert table.pending_total == 7 + SEGMENT_OVERHEAD
    assert send(table, 0, b"0123456789") == [(True, b"01234567", 0)]
    assert flow.toserver.pending is None and table.pending_total == 0


def test_truncated_packet_delivers_captured_bytes_and_skips_tail():
    table = FlowTable()
    flow = handshake(table)
    # ip_len claims 100 data bytes, 30 were captured
    pkt_len = 20 + 20 + 100
    assert send(table, 0, b"x" * 30, truncated=True, ip_len=pkt_len) == [(True, b"x" * 30, 0)]
    assert flow.toserver.next_seq == CISN + 101 and flow.toserver.gaps == 1
    assert send(table, 100, b"next") == [(True, b"next", 100)]


def test_truncated_out_of_order_tail_skipped_once_acked():
    table = FlowTable()
    flow = handshake(table)
    assert send(table, 10, b"y" * 5, truncated=True, ip_len=20 + 20 + 20) == []  # claims 10..30
    assert send(table, 30, b"after") == []
    assert send(table, 0, b"0123456789") == [(True, b"0123456789", 0), (True, b"yyyyy", 10)]
    # the missing 15..30 is a hole like any other: the receiver's ACK past it releases the rest
    chunks = feed(table, tpacket(reply=True, tcp_flags=ACK, seq=SISN + 1, ack=CISN + 1 + 35))[1]
    assert chunks == [(True, b"after", 30)] and flow.toserver.gaps == 1


def test_midstream_pickup_and_disabled():
    table = FlowTable()
    flow, chunks = feed(table, tpacket(tcp_flags=ACK | PSH, seq=123456, payload=b"mid"))
    assert flow.midstream and flow.state is TcpState.ESTABLISHED and chunks == [(True, b"mid", 0)]
    assert flow.toserver.next_seq == 123459 and flow.toserver.isn is None
    strict = FlowTable(midstream=False)
    # Without midstream pickup a packet without SYN makes a flow without a TCP session, as Suricata
    # does: its packets are inspected one by one, nothing is reassembled.
    flow, chunks = feed(strict, tpacket(tcp_flags=ACK, payload=b"mid"))
    assert flow.no_session and not flow.midstream and chunks == [] and flow.state is TcpState.NONE
    assert strict.counters["not_tcp_start_ignored"] == 1 and len(strict) == 1
    flow2, chunks = feed(strict, tpacket(tcp_flags=SYN))  # the same tuple: a SYN starts the session
    assert flow2 is flow and not flow.no_session and flow.state is TcpState.SYN_SENT
    assert strict.lookup(tpacket(proto=PROTO_UDP)) is not None


# -- datagrams --------------------------------------------------------------------------------
def test_udp_chunks_with_offsets_and_depth():
    table = FlowTable(stream_depth=10)
    q1 = tpacket(proto=PROTO_UDP, sport=5353, dport=53, payload=b"query")
    flow, chunks = feed(table, q1)
    assert chunks == [(True, b"query", 0)] and flow.state is TcpState.NONE
    assert feed(table, tpacket(proto=PROTO_UDP, sport=5353, dport=53, payload=b""))[1] == []
    assert feed(table, tpacket(reply=True, proto=PROTO_UDP, sport=53, dport=5353, payload=b"ans"))[1] == [(False, b"ans", 0)]
    assert feed(table, tpacket(proto=PROTO_UDP, sport=5353, dport=53, payload=b"second"))[1] == [(True, b"secon", 5)]
    assert flow.toserver.depth_reached
    assert feed(table, tpacket(proto=PROTO_UDP, sport=5353, dport=53, payload=b"third"))[1] == []
    assert (flow.pkts_toserver, flow.pkts_toclient) == (4, 1)




# -- properties -------------------------------------------------------------------------------
@st.composite
def segmented(draw):
    data = draw(st.binary(min_size=1, max_size=400))
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=12)))
    bounds = [0, *cuts, len(data)]
    segs = [(a, data[a:b]) for a, b in zip(bounds, bounds[1:]) if b > a]
    extra = draw(st.lists(st.tuples(st.integers(0, len(data) - 1), st.integers(1, 50)), max_size=5))
    segs += [(a, data[a : a + n]) for a, n in extra]  # retransmissions with overlaps
    order = draw(st.permutations(range(len(segs))))
    isn = draw(st.sampled_from([0, 1000, 2**32 - 1, 2**32 - 200, 2**31]))
    return data, [segs[i] for i in order], isn


@settings(max_examples=150, deadline=None)
@given(segmented())
def test_reassembly_property_everything_arrives(case):
    data, segs, isn = case
    table = FlowTable()
    handshake(table, cisn=isn)
    chunks = []
    for rel, payload in segs:
        chunks += send(table, rel, payload, isn=isn)
    assert joined(chunks) == data
    assert [c[2] for c in chunks] == [sum(len(c[1]) for c in chunks[:i]) for i in range(len(chunks))]
    assert table.pending_total == 0


@settings(max_examples=150, deadline=None)
@given(segmented(), st.integers(0, 64), st.integers(1, 300))
def test_reassembly_property_limits(case, max_pending, depth):
    data, segs, isn = case
    table = FlowTable(max_pending_bytes=max_pending, stream_depth=depth)
    flow = handshake(table, cisn=isn)
    chunks = []
    for rel, payload in segs:
        chunks += send(table, rel, payload, isn=isn)
        assert flow.toserver.pending_bytes <= max(max_pending, len(payload))
    end = 0
    for to_server, chunk, off in chunks:
        assert to_server and chunk and off >= end and off + len(chunk) <= depth
        assert chunk == data[off : off + len(chunk)]
        end = off + len(chunk)
    pending = (flow.toserver.pending or {}).values()
    assert table.pending_total == sum(len(d) + SEGMENT_OVERHEAD for d in pending)
