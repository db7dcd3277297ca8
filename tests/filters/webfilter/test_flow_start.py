"""The web filter's decisions at a flow's start (QUIC, DoT): by the internet side's port."""
from __future__ import annotations


def test_quic_and_dot_are_judged_by_the_internet_sides_port():
    """QUIC (UDP/443) and DoT (853) are judged by the internet side's port, also when the flow's
    first packet here is the server's reply (the worker did not see the flow start, so the server
    became the flow's 'client')."""
    from filters.flow import FlowTable
    from filters.packet import PROTO_UDP
    from filters.webfilter.engine import WebFilter
    from tests.filters.factories import tpacket

    wf, table = WebFilter(), FlowTable()
    for i, (reply, port) in enumerate(((False, 443), (True, 443), (True, 853))):
        eph = 50000 + i
        pkt = tpacket(reply=reply, proto=PROTO_UDP, sport=port if reply else eph, dport=eph if reply else port)
        flow, _, is_new = table.lookup(pkt)
        assert is_new
        assert wf.on_flow_start(flow, pkt), (reply, port)
    pkt = tpacket(proto=PROTO_UDP, sport=443, dport=50999)  # a LAN host's own source port 443: no QUIC server
    flow, _, _ = table.lookup(pkt)
    assert not wf.on_flow_start(flow, pkt)
