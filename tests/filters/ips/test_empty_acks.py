"""What the kernel may keep from the workers (issue 15): which loaded rules could match an empty
TCP ACK (no payload; ACK without SYN, FIN, RST), and what the engines declare from it."""
from __future__ import annotations

from pathlib import Path

import pytest
from scapy.layers.inet import IP, TCP

from filters.engine import Engine
from filters.firewall import Firewall
from filters.ips.engine import Ips
from filters.ips.netspec import Variables
from filters.ips.packet_match import match_packet_checks
from filters.ips.rule_groups import Detector, _EMPTY_ACK_FLAGS, classify, could_match_empty_ack
from filters.ips.rule_parser import LoadResult, parse_rule
from filters.packet import parse_ip
from filters.registry import dataplane_needs

VARS = Variables.suricata_defaults()


def could(rule: str) -> bool:
    return could_match_empty_ack(classify(0, parse_rule(rule, vars=VARS)))


@pytest.mark.parametrize("rule", [
    'alert tcp any any -> any any (msg:"zero window"; flags:A; window:0; sid:1;)',
    # ET Open's NMAP -sA rule (disabled as shipped): flags:A,12 dsize:0 and fragbits
    'alert tcp any any -> any any (fragbits:!D; dsize:0; flags:A,12; window:1024; sid:2000538;)',
    'alert tcp any any -> any any (ack:0; flags:A,12; flow:stateless; sid:2100628;)',
    'alert tcp any any -> any any (flags:PA; sid:1;)',  # an empty PSH+ACK is kept in the kernel too
    'alert tcp any any -> any any (dsize:<10; sid:3;)',  # suricata-verify test-dsize-values
    'alert ip any any -> any any (ttl:0; sid:1321;)',  # suricata-verify bug-990
    'alert tcp 192.168.51.206 any -> !192.168.51.206 any (flow:established; sid:1001;)',  # like-ip-only-01
    'alert http any any -> any any (msg:"HTTP traffic"; sid:1;)',  # an app-protocol-only rule
    'alert tcp any any -> any any (flowbits:isset,x; sid:1;)',
    'alert tcp any any -> any any (stream_size:server,>,10; sid:1;)',
])
def test_rules_that_could_match_an_empty_ack(rule):
    assert could(rule)


@pytest.mark.parametrize("rule", [
    'alert tcp any any -> any any (content:"evil"; sid:1;)',  # stream: reassembled bytes only
    'alert tcp any any -> any any (flow:established,to_server; content:"x"; dsize:0; sid:1;)',
    'alert http any any -> any any (http.uri; content:"/x"; sid:1;)',  # app-layer buffers
    'alert ip any any -> any any (sid:1;)',  # IP-only: the first packet of each direction (SYN, SYN+ACK)
    'alert tcp any any -> any any (flags:S,12; sid:1;)',
    'alert tcp any any -> any any (flags:SA; sid:1;)',
    'alert tcp any any -> any any (flags:F,12; dsize:0; sid:1;)',
    'alert tcp any any -> any any (flags:R; sid:1;)',
    'alert tcp any any -> any any (flags:0; sid:1;)',
    'alert tcp any any -> any any (flags:!A; sid:1;)',
    'alert tcp any any -> any any (dsize:>0; sid:1;)',
    'alert tcp any any -> any any (dsize:10; sid:1;)',
    'alert tcp any any -> any any (itype:8; sid:1;)',
    'alert tcp any any -> any any (isdataat:!1; sid:1;)',  # a payload keyword: no buffer to inspect
    'alert tcp any any -> any any (ip_proto:17; sid:1;)',
    'alert udp any any -> any any (dsize:0; sid:1;)',
    'alert icmp any any -> any any (itype:0; sid:1;)',
])
def test_rules_that_cannot(rule):
    assert not could(rule)


@pytest.mark.parametrize("options", [
    "flags:S,12;", "flags:SA;", "flags:F,12; dsize:0;", "flags:R;", "flags:0;", "flags:!A;", "dsize:>0;",
    "dsize:10;", "itype:8;", "ip_proto:17;",
])
def test_what_cannot_match_does_not_match_a_real_empty_ack(options):
    """The oracle: the packet checks of a rule judged unable fail on every empty ACK the kernel keeps."""
    rule = parse_rule(f"alert tcp any any -> any any ({options} sid:1;)", vars=VARS)
    assert not could_match_empty_ack(classify(0, rule))
    for flags in _EMPTY_ACK_FLAGS:
        pkt = parse_ip(bytes(IP(src="10.0.0.1", dst="10.0.0.2") / TCP(sport=1234, dport=80, flags=flags, window=512)))
        assert not pkt.payload and not match_packet_checks(rule, pkt)


def test_et_open_as_shipped_needs_no_empty_ack(et_open: LoadResult):
    """No active ET Open rule can match one (those that could, the NMAP scan rules, ship disabled)."""
    assert Detector(et_open.rules).empty_ack_rules == ()


def ips(tmp_path: Path, rules: str) -> Ips:
    f = tmp_path / "t.rules"
    f.write_text(rules)
    e = Ips()
    e.configure({"enabled": True, "rule_files": [str(f)]})
    return e


def test_the_ips_declares_it_once_its_rules_are_loaded(tmp_path: Path):
    e = ips(tmp_path, 'drop tcp any any -> any 80 (content:"evil"; sid:1;)\n')
    assert e.needs_empty_acks()  # not loaded yet: unknown
    e.prepare()
    assert not e.needs_empty_acks() and e.needs_packets()
    e = ips(tmp_path, 'drop tcp any any -> any 80 (content:"evil"; sid:1;)\n'
                      'alert tcp any any -> any any (flags:A; window:0; sid:2;)\n')
    e.prepare()
    assert e.needs_empty_acks() and e.detector.empty_ack_rules == (2,)


def test_the_firewall_needs_no_packet():
    """Its policy is in the kernel; the connections of its log rules the kernel queues itself
    (tests/agent/dataplane/test_ruleset.py)."""
    for action in ("deny", "log"):
        fw = Firewall()
        fw.configure({"rules": [{"name": "telnet", "service": "tcp/23", "action": action}]})
        assert not fw.needs_packets() and not fw.needs_empty_acks()


def test_combined_needs_and_the_conservative_default(tmp_path: Path):
    class Packets(Engine):  # an engine that takes packets and says nothing: it needs them all
        name = "packets"

        def on_packet(self, pkt, flow):
            return None

    class Files(Engine):  # only app-layer events: no packet of an allowed connection is needed?
        name = "files"

        def on_file(self, flow, file):
            return None

    assert dataplane_needs([Firewall()]) == (False, False)
    assert dataplane_needs([]) == (False, False)
    assert dataplane_needs([Firewall(), Files()]) == (True, False)
    assert dataplane_needs([Firewall(), Packets()]) == (True, True)
    e = ips(tmp_path, 'drop tcp any any -> any 80 (content:"evil"; sid:1;)\n')
    assert dataplane_needs([Firewall(), e]) == (True, True)  # rules not loaded yet
    e.prepare()
    assert dataplane_needs([Firewall(), e]) == (True, False)
