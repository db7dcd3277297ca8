"""Firewall policy parsing and decisions (the Python side of the policy)."""
from __future__ import annotations

import ipaddress

import pytest

from filters.engine import Action, ConfigError
from filters.firewall import BLOCKLIST_SID, SID_BASE, Firewall, parse_service
from filters.packet import PROTO_ICMPV6, PROTO_TCP, PROTO_UDP, Side


def fw(**section) -> Firewall:
    f = Firewall()
    f.configure(section)
    return f


def a(text: str) -> bytes:
    return ipaddress.ip_address(text).packed


LAN, WEB, ATK = a("192.0.2.11"), a("198.51.100.10"), a("203.0.113.66")


def test_default_allows_lan_out_denies_wan_in():
    f = fw()
    assert f.decide(Side.LAN, LAN, WEB, PROTO_TCP, 80, -1)[0] == "allow"
    assert f.decide(Side.WAN, ATK, LAN, PROTO_TCP, 22, -1)[0] == "deny"


def test_first_matching_rule_wins_and_zones_apply():
    f = fw(
        services={"web": ["tcp/80", "tcp/443"]},
        rules=[
            {"name": "web in", "from": "wan", "to": "lan", "dst": "192.0.2.11", "service": "web", "action": "allow"},
            {"name": "no telnet", "from": "lan", "to": "wan", "service": "tcp/23", "action": "reject"},
            {"name": "log dns", "from": "lan", "service": ["udp/53", "tcp/53"], "action": "log"},
        ],
    )
    assert f.decide(Side.WAN, ATK, LAN, PROTO_TCP, 443, -1)[0] == "allow"
    assert f.decide(Side.WAN, ATK, a("192.0.2.12"), PROTO_TCP, 443, -1)[0] == "deny"  # other host: default
    action, rule = f.decide(Side.LAN, LAN, WEB, PROTO_TCP, 23, -1)
    assert action == "reject" and rule is not None and rule.sid == SID_BASE + 2
    assert f.decide(Side.WAN, WEB, LAN, PROTO_TCP, 23, -1)[0] == "deny"  # zone: rule is lan->wan only
    assert f.decide(Side.LAN, LAN, WEB, PROTO_UDP, 53, -1)[0] == "log"


def test_address_groups_mix_families():
    f = fw(address_groups={"office": ["192.0.2.0/24", "2001:db8:1::/64"]},
           rules=[{"from": "lan", "src": "office", "service": "tcp/25", "action": "deny"}])
    assert f.decide(Side.LAN, LAN, WEB, PROTO_TCP, 25, -1)[0] == "deny"
    assert f.decide(Side.LAN, a("2001:db8:1::11"), a("2001:db8:100::10"), PROTO_TCP, 25, -1)[0] == "deny"
    assert f.decide(Side.LAN, a("2001:db8:2::11"), a("2001:db8:100::10"), PROTO_TCP, 25, -1)[0] == "allow"


def test_ndp_and_dhcp_replies_always_cross():
    f = fw(default={"wan_to_lan": "deny"})
    assert f.decide(Side.WAN, a("fe80::1"), a("ff02::1"), PROTO_ICMPV6, 0, 134)[0] == "allow"
    assert f.decide(Side.WAN, a("192.0.2.1"), a("255.255.255.255"), PROTO_UDP, 68, -1)[0] == "allow"


def test_blocklist_beats_rules():
    f = fw(blocklist=["203.0.113.0/28"], rules=[{"action": "allow"}])
    action, _ = f.decide(Side.LAN, LAN, a("203.0.113.5"), PROTO_TCP, 443, -1)
    assert action == "deny"


def test_verdicts_carry_eve_fields():
    from types import SimpleNamespace

    from tests.filters.factories import tpacket

    f = fw(rules=[{"name": "no telnet", "from": "lan", "service": "tcp/23", "action": "reject"}])
    flow = SimpleNamespace(client_side=Side.LAN, client_addr=LAN, server_addr=WEB, proto=PROTO_TCP, server_port=23)
    (v,) = f.on_flow_start(flow, tpacket(dport=23))
    assert v.action is Action.REJECT and v.rule_id == SID_BASE + 1 and "no telnet" in v.signature
    assert v.category == "Firewall policy"
    assert f.on_flow_start(SimpleNamespace(client_side=Side.LAN, client_addr=LAN, server_addr=WEB, proto=PROTO_TCP, server_port=80), tpacket()) is None


@pytest.mark.parametrize("text, problem", [("tcp/0-70000", "out of"), ("xyz/1", "unknown protocol"), ("tcp/a", "bad port"), ("any/5", "no port")])
def test_bad_services(text, problem):
    with pytest.raises(ConfigError, match=problem):
        parse_service(text, "k")


def test_blocklist_sid_distinct():
    assert BLOCKLIST_SID != SID_BASE


def _fw_pipeline(emitted: list, midstream: bool = True):
    from filters.flow import FlowTable
    from filters.pipeline import Pipeline, PipelinePolicy

    f = fw()  # the shipped defaults: LAN out allowed, WAN in denied
    return Pipeline([f], FlowTable(midstream=midstream), PipelinePolicy(kernel_offload=True), emit=emitted.append)


@pytest.mark.parametrize("midstream", [True, False])
def test_only_new_connections_are_judged_by_the_policy(midstream):
    """A LAN client's connection whose start the worker never saw (a server reply first: the SYN
    passed a full queue, or the flow table forgot it) is no new inbound connection: no
    "default deny wan_to_lan" alarm, no drop. A real inbound SYN still is."""
    from filters.packet import ACK, PSH, SYN
    from filters.pipeline import Outcome
    from tests.filters.factories import tpacket

    emitted: list = []
    pipe = _fw_pipeline(emitted, midstream)
    (rel,) = pipe.process(tpacket(reply=True, tcp_flags=ACK | PSH, payload=b"HTTP/1.1 200 OK\r\n", ts=1.0), "reply")
    assert rel.outcome is Outcome.ACCEPT and emitted == []
    assert pipe.engines[0].counters["flows.out_of_state"] == 1
    (rel,) = pipe.process(tpacket(src="203.0.113.66", dst="192.0.2.11", sport=40000, dport=22, tcp_flags=SYN,
                                  side=Side.WAN, ts=2.0), "scan")
    assert rel.outcome is Outcome.DROP
    assert [r["alert"]["signature"] for r in emitted if r["event_type"] == "alert"] == ["VCR firewall: default deny wan_to_lan"]


def test_late_reply_after_the_offload_grace_is_not_a_new_inbound_flow():
    """Inline, a passed flow lives in the kernel; a server's packet that still reaches the worker
    well after the pass (conntrack found it INVALID: out of window after a reset, a late
    retransmission) belongs to the passed connection: it is accepted, not judged as a new flow
    from the internet (before the fix: 'default deny wan_to_lan', and the drop saved to the
    connection's mark)."""
    from filters.packet import ACK, SYN
    from filters.pipeline import Outcome
    from tests.filters.factories import tpacket

    emitted: list = []
    pipe = _fw_pipeline(emitted)
    (first,) = pipe.process(tpacket(tcp_flags=SYN, ts=1.0), "syn")
    assert first.outcome is Outcome.ACCEPT and first.offload
    for i, ts in enumerate((10.0, 30.0, 300.0)):
        (late,) = pipe.process(tpacket(reply=True, tcp_flags=ACK, ts=ts), f"late{i}")
        assert late.outcome is Outcome.ACCEPT
    assert emitted == []
