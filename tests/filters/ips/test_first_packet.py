"""The IPS's first-packet shortcuts must not change what fires: rules without a fast pattern are
looked up per flow by addresses and port class (Ips._header_class), shared between flows; long UDP
flows keep their rule-header answers; the HTTP stages of one segment are inspected once."""
from __future__ import annotations

import io
import json
from pathlib import Path

from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether
from scapy.utils import wrpcap

from agent.offline import replay as offline
from tests.filters.ips.scapyflow import CLIENT, SERVER, TcpConversation, timed

RULES = r'''
alert udp any any -> any 5000:5010 (msg:"range"; dsize:>0; sid:1; rev:1;)
alert udp any any -> any 6000 (msg:"one port"; dsize:>0; sid:2; rev:1;)
alert udp any 1024: -> any !5000:5010 (msg:"high source, outside the range"; dsize:>0; sid:3; rev:1;)
alert udp any any -> any 5000:5010 (msg:"content, every datagram"; content:"PING"; sid:4; rev:1;)
alert http any any -> any any (msg:"request and answer of one segment each"; http.method; content:"GET"; http.stat_code; content:"200"; flow:to_client; sid:5; rev:1;)
alert http any any -> any any (msg:"request header"; http.user_agent; content:"probe/1"; sid:6; rev:1;)
'''


def run(tmp_path: Path, pkts: list) -> list[dict]:
    wrpcap(str(tmp_path / "in.pcap"), timed(pkts))
    (tmp_path / "test.rules").write_text(RULES)
    cfg = offline.offline_config(None, [], rule_files=[str(tmp_path / "test.rules")])
    out = io.StringIO()
    offline.run_pcap(offline.OfflineOptions(pcap=tmp_path / "in.pcap"), cfg, out=out)
    return [r for r in map(json.loads, out.getvalue().splitlines()) if r.get("event_type") == "alert"]


def udp(sport: int, dport: int, data: bytes = b"x") -> object:
    return Ether() / IP(src=CLIENT, dst=SERVER) / UDP(sport=sport, dport=dport) / data


def test_flows_sharing_addresses_get_the_rules_of_their_own_ports(tmp_path: Path) -> None:
    pkts = [udp(40000, 5005), udp(40001, 7000), udp(40002, 5006), udp(40003, 6000), udp(999, 7001)]
    alerts = run(tmp_path, pkts)
    got = sorted((a["dest_port"], a["alert"]["signature_id"]) for a in alerts)
    assert got == [(5005, 1), (5006, 1), (6000, 2), (6000, 3), (7000, 3)]


def test_a_long_udp_flow_is_judged_the_same_on_every_datagram(tmp_path: Path) -> None:
    pkts = [udp(40000, 5001, b"PING %d" % i) for i in range(12)] + [udp(40000, 5001, b"quiet")]
    alerts = run(tmp_path, pkts)
    assert [a["alert"]["signature_id"] for a in alerts].count(4) == 12
    assert [a["alert"]["signature_id"] for a in alerts].count(1) == 13


def test_http_stages_of_one_segment_fire_once_each_rule(tmp_path: Path) -> None:
    t = TcpConversation(80)
    t.open()
    t.add(True, "PA", b"GET / HTTP/1.1\r\nHost: a.example\r\nUser-Agent: probe/1\r\n\r\n")
    t.add(False, "PA", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
    t.close()
    pkts = t.packets
    alerts = run(tmp_path, pkts)
    assert sorted((a["alert"]["signature_id"], a["pcap_cnt"]) for a in alerts) == [(5, 5), (6, 4)]
