"""Tests for filters.flow: keys, client detection, lifetime and memory (TCP state and reassembly: test_stream)."""
from __future__ import annotations

import gc
import tracemalloc

import pytest

from tests.filters.factories import CISN, CLIENT, CLIENT_PORT, SERVER, SERVER_PORT, SISN, feed, handshake, pton, send, tflow, tpacket
from filters.engine import ConfigError
from filters.flow import FlowTable, flow_key
from filters.packet import ACK, PROTO_ICMP, PROTO_TCP, PROTO_UDP, RST, SYN, Packet, Side
from filters.stream import TcpState


# -- keys and direction -----------------------------------------------------------------------
def test_canonical_key_is_the_same_both_ways():
    a, b = tpacket(), tpacket(reply=True)
    assert flow_key(a) == flow_key(b)
    key = flow_key(a)
    assert key[0] == 4 and key[1] == PROTO_TCP
    assert (key[2], key[3]) < (key[4], key[5])
    assert flow_key(tpacket(sport=40001)) != key
    assert flow_key(tpacket(proto=PROTO_UDP)) != key


def test_canonical_key_same_address_orders_by_port():
    a = tpacket(src=CLIENT, dst=CLIENT, sport=9000, dport=80)
    b = tpacket(src=CLIENT, dst=CLIENT, sport=80, dport=9000)
    assert flow_key(a) == flow_key(b) == (4, PROTO_TCP, pton(CLIENT), 80, pton(CLIENT), 9000)


def test_lookup_both_directions_same_flow():
    table = FlowTable()
    flow, to_server, is_new = table.lookup(tpacket(tcp_flags=SYN))
    assert (to_server, is_new) == (True, True)
    again, to_server, is_new = table.lookup(tpacket(reply=True, tcp_flags=SYN | ACK))
    assert again is flow and (to_server, is_new) == (False, False)
    assert len(table) == 1 and list(table) == [flow]
    assert 0 < flow.flow_id < 2**63


def test_ipv6_and_icmp_keys():
    table = FlowTable()
    v6 = tpacket(src="2001:db8::1", dst="2001:db8::2")
    flow, _, _ = table.lookup(v6)
    assert flow.version == 6 and flow.client_ip == "2001:db8::1" and flow.server_ip == "2001:db8::2"
    ping = tpacket(proto=PROTO_ICMP, icmp_type=8, icmp_code=0, payload=b"abc")
    pong = tpacket(reply=True, proto=PROTO_ICMP, icmp_type=0, icmp_code=0, payload=b"abc")
    f1, up, _ = table.lookup(ping)
    f2, down, _ = table.lookup(pong)
    assert f1 is f2 and up and not down
    assert f1.key[3] == f1.key[5] == 0
    assert table.update(f1, ping, True) == [(True, b"abc", 0)]


def test_none_for_non_ip_and_anomalies():
    table = FlowTable()
    assert table.lookup(tpacket(version=0)) is None
    assert table.lookup(tpacket(anomaly="tcp.bad_offset")) is None
    assert len(table) == 0


def test_non_first_fragment_uses_portless_flow_and_delivers_nothing():
    table = FlowTable()
    first, _, _ = table.lookup(tpacket(proto=PROTO_UDP, more_fragments=True, payload=b"x" * 8))
    frag = tpacket(proto=PROTO_UDP, sport=0, dport=0, frag_offset=16, payload=b"y" * 8)
    found, to_server, is_new = table.lookup(frag)
    assert found is not first and is_new and to_server
    assert found.key == (4, PROTO_UDP, pton(CLIENT), 0, pton(SERVER), 0)
    assert table.update(found, frag, to_server) == []
    assert found.pkts_toserver == 1


# -- client detection -------------------------------------------------------------------------
def test_syn_sender_is_client():
    table = FlowTable()
    flow, to_server, _ = table.lookup(tpacket(tcp_flags=SYN))
    assert to_server
    assert (flow.client_ip, flow.client_port, flow.server_ip, flow.server_port) == (CLIENT, CLIENT_PORT, SERVER, SERVER_PORT)
    assert flow.client_side is Side.LAN and not flow.midstream


def test_syn_ack_first_makes_receiver_client():
    table = FlowTable()
    synack = tpacket(reply=True, tcp_flags=SYN | ACK, seq=SISN, ack=CISN + 1)
    flow, to_server, is_new = table.lookup(synack)
    assert is_new and not to_server
    assert (flow.client_ip, flow.client_port) == (CLIENT, CLIENT_PORT)
    assert flow.client_side is Side.LAN  # the SYN/ACK came in on WAN, so the client is on LAN
    table.update(flow, synack, to_server)
    assert flow.state is TcpState.SYN_RECV and flow.toclient.isn == SISN
    assert flow.toserver.next_seq == CISN + 1  # learned from the SYN/ACK's ACK
    assert send(table, 0, b"GET /") == [(True, b"GET /", 0)]
    assert flow.state is TcpState.ESTABLISHED


def test_midstream_first_packet_sender_is_client():
    table = FlowTable()
    flow, to_server, _ = table.lookup(tpacket(reply=True, tcp_flags=ACK))
    assert to_server and flow.midstream and flow.client_ip == SERVER
    assert table.counters["midstream"] == 1


# -- lifetime ---------------------------------------------------------------------------------
def udp(i: int, ts: float = 1.0):
    return tpacket(proto=PROTO_UDP, sport=10000 + i, dport=53, ts=ts, payload=b"q")


def test_lru_eviction_at_max_flows():
    table = FlowTable(max_flows=3)
    flows = [feed(table, udp(i, ts=float(i)))[0] for i in range(3)]
    feed(table, udp(0, ts=5.0))  # touch flow 0: flow 1 is now the least recently used
    feed(table, tpacket(tcp_flags=SYN, ts=6.0))  # a TCP flow: eviction spans the queues
    assert len(table) == 3 and flows[1] not in list(table)
    assert table.counters["evicted"] == 1 and table.pop_ended() == [flows[1]]
    assert table.pop_ended() == []


def test_eviction_skips_held_flows_and_refuses_when_all_held():
    table = FlowTable(max_flows=2)
    a = feed(table, udp(0))[0]
    b = feed(table, udp(1, ts=2.0))[0]
    a.held.append(1)
    feed(table, udp(2, ts=3.0))
    assert a in list(table) and b not in list(table)
    for flow in table:
        flow.held.append(1)
    assert table.lookup(udp(3, ts=4.0)) is None
    assert table.counters["table_full"] == 1 and len(table) == 2


def test_expiry_per_state():
    timeouts = {"tcp_new": 30, "tcp_established": 300, "tcp_closed": 10, "udp": 60, "icmp": 20, "other": 40}
    table = FlowTable(timeouts=timeouts)
    syn_only = feed(table, tpacket(tcp_flags=SYN, sport=1, ts=0.0))[0]
    est = handshake(table, ts=0.0)
    closed = feed(table, tpacket(tcp_flags=RST, sport=2, ts=0.0))[0]
    dgram = feed(table, udp(0, ts=0.0))[0]
    ping = feed(table, tpacket(proto=PROTO_ICMP, icmp_type=8, icmp_code=0, ts=0.0))[0]
    other = feed(table, tpacket(proto=47, ts=0.0))[0]
    assert closed.state is TcpState.CLOSED and est.state is TcpState.ESTABLISHED
    assert table.expire(9.0) == []
    assert table.expire(10.0) == [closed]
    assert table.expire(20.0) == [ping]
    assert table.expire(30.0) == [syn_only]
    assert table.expire(45.0) == [other]
    assert table.expire(60.0) == [dgram]
    assert table.expire(299.0) == []
    assert table.expire(300.0) == [est]
    assert len(table) == 0 and table.counters["expired"] == 6
    assert table.pop_ended() == []  # expired flows are returned by expire, not pop_ended


def test_one_sided_established_uses_new_timeout_and_activity_refreshes():
    table = FlowTable(timeouts={"tcp_new": 30})
    scan = feed(table, tpacket(tcp_flags=ACK, ts=0.0))[0]  # midstream, only one direction
    assert scan.state is TcpState.ESTABLISHED and table.expire(30.0) == [scan]
    flow = feed(table, udp(0, ts=0.0))[0]
    feed(table, udp(0, ts=100.0))
    assert table.expire(150.0) == []
    assert table.expire(220.0) == [flow]


def test_expiry_skips_held_flows():
    table = FlowTable()
    a = feed(table, udp(0, ts=0.0))[0]
    b = feed(table, udp(1, ts=0.0))[0]
    a.held.append(7)
    assert table.expire(1000.0) == [b]
    a.held.clear()
    assert table.expire(1000.0) == [a]


def test_remove_and_lookup_only_touches():
    table = FlowTable()
    a = feed(table, udp(0, ts=0.0))[0]
    b = feed(table, udp(1, ts=0.0))[0]
    table.lookup(udp(0, ts=100.0))  # a decided flow: the pipeline looks it up but does not update
    assert a.last_ts == 100.0
    assert table.expire(150.0) == [b]
    table.remove(a)
    table.remove(a)
    assert len(table) == 0 and table.counters["removed"] == 1 and table.pop_ended() == []


def test_timeouts_validation():
    assert FlowTable(timeouts={"udp": 5}).timeouts["udp"] == 5.0
    with pytest.raises(ConfigError) as err:
        FlowTable(timeouts={"tcp": 5})
    assert err.value.key == "timeouts.tcp"
    with pytest.raises(ConfigError):
        FlowTable(timeouts={"udp": 0})
    with pytest.raises(ConfigError):
        FlowTable(max_flows=0)


def test_flow_ids_unique_and_positive():
    table = FlowTable()
    ids = {feed(table, udp(i))[0].flow_id for i in range(2000)}
    assert len(ids) == 2000 and all(0 < i < 2**63 for i in ids)


def test_tflow_factory():
    flow = tflow()
    assert flow.state is TcpState.ESTABLISHED and flow.client_ip == CLIENT and flow.server_port == SERVER_PORT
    assert flow.key == flow_key(tpacket())
    assert flow.stream(True) is flow.toserver and flow.stream(False) is flow.toclient
    assert tflow(proto=PROTO_ICMP).client_port == 0


# -- memory -----------------------------------------------------------------------------------
def test_memory_100k_flows():
    """100k TCP flows after a SYN each (the table-filling case), fresh address objects per packet.

    Measured ~850 B/flow on CPython 3.11: Flow ~250 B, its two Streams 2 x 120 B (a SYN makes both),
    LRU queue entry ~75 B, key tuple 88 B, the client's address bytes 37 B (the server's one object is
    shared by all flows: MAX_SHARED_ADDRS), flow_id and sequence-number ints. Established
    flows with data both ways measure ~950 B (more live ints and floats). 1000 B/flow bounds the table
    at 100 MB for 100k flows, which keeps a worker (~15-40 MB of code) below the 150 MB RSS target.
    """
    n = 100_000
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        table = FlowTable(max_flows=n)
        for i in range(n):
            src = bytes((10, i >> 16 & 255, i >> 8 & 255, i & 255))
            pkt = Packet(b"", 1.0, Side.LAN, version=4, src_addr=src, dst_addr=pton(SERVER), proto=PROTO_TCP,
                         sport=1024 + i % 60000, dport=80, tcp_flags=SYN, seq=i, ip_len=40)
            flow, to_server, _ = table.lookup(pkt)
            table.update(flow, pkt, to_server)
        del pkt, flow
        gc.collect()
        used = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(table) == n and table.counters["evicted"] == 0
    per_flow = used / n
    print(f"flow table: {used / 2**20:.1f} MiB for {n} flows, {per_flow:.0f} B/flow")
    assert per_flow < 1000


def test_conntrack_reply_direction_makes_the_receiver_the_client():
    """Inline, a flow whose start the worker did not see may begin with the server's packet;
    conntrack's reply direction (Packet.ct_reply) makes its receiver the client, TCP and UDP."""
    from filters.packet import PROTO_UDP, PSH

    table = FlowTable()
    for proto, flags in ((PROTO_TCP, ACK | PSH), (PROTO_UDP, 0)):
        pkt = tpacket(reply=True, proto=proto, ct_reply=True, **({"tcp_flags": flags} if flags else {}))
        flow, to_server, is_new = table.lookup(pkt)
        assert is_new and not to_server
        assert (flow.client_addr, flow.client_port, flow.server_port) == (pton(CLIENT), CLIENT_PORT, SERVER_PORT)
        assert flow.client_side is Side.LAN
        back, to_server, _ = table.lookup(tpacket(proto=proto))
        assert back is flow and to_server
    # without it (offline, or the original direction) the sender stays the client, as before
    flow, _, _ = FlowTable().lookup(tpacket(reply=True, tcp_flags=ACK | PSH))
    assert flow.client_addr == pton(SERVER)


def test_one_way_udp_flows_share_addresses_and_make_one_stream():
    """The memory benchmark's flows (one UDP datagram each from a hundred clients to one server):
    a flow makes only the stream of the direction that sent data, asking whether both directions
    reached their depth makes none, and the flows of one address share one bytes object (each
    packet brings its own copy) while lookups with fresh copies still find them."""
    from filters.flow import MAX_SHARED_ADDRS

    table = FlowTable()
    flows = []
    for i in range(300):
        pkt = tpacket(proto=PROTO_UDP, src=f"192.0.2.{100 + i % 100}", sport=20_000 + i, dport=9, payload=b"flow")
        flow, to_server, is_new = table.lookup(pkt)
        assert is_new and to_server
        assert not flow.depth_reached and flow._toserver is None and flow._toclient is None
        assert table.update(flow, pkt, to_server) == [(True, b"flow", 0)]
        assert flow._toserver is not None and flow._toclient is None and flow.toserver.delivered == 4
        flows.append(flow)
    assert flows[0].client_addr is flows[100].client_addr and flows[0].server_addr is flows[299].server_addr
    assert flows[0].key[2] is flows[0].client_addr or flows[0].key[4] is flows[0].client_addr
    reply = tpacket(reply=True, proto=PROTO_UDP, src=SERVER, dst="192.0.2.100", sport=9, dport=20_000, payload=b"ok")
    back, to_server, is_new = table.lookup(reply)
    assert back is flows[0] and not to_server and not is_new
    assert table.update(back, reply, to_server) == [(False, b"ok", 0)] and back._toclient is not None
    back.reverse()  # the streams swap with the endpoints
    assert back.toserver.delivered == 2 and back.toclient.delivered == 4
    # the shared addresses are bounded: the table starts afresh once it holds MAX_SHARED_ADDRS
    for i in range(MAX_SHARED_ADDRS + 10):
        table.lookup(tpacket(proto=PROTO_UDP, src=f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", sport=1000))
    assert len(table._addrs) <= MAX_SHARED_ADDRS
    assert table.lookup(tpacket(proto=PROTO_UDP, src="192.0.2.100", sport=20_000, dport=9))[0] is flows[0]
    table.remove(flows[0])  # a flow without streams leaves the table like any other
    assert table.lookup(tpacket(proto=PROTO_UDP, src="192.0.2.100", sport=20_000, dport=9))[2]
