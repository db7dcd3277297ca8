"""The EVE fields of an app-layer event in its alerts (the IPS makes them only when a rule fires:
filters/ips/engine.py ``_app``): HTTP (request and response events, two alerts of one event) and
DNS, through `vcr-agent pcap`."""
from __future__ import annotations

from pathlib import Path

from scapy.layers.dns import DNS, DNSQR, DNSRR
from scapy.layers.inet import IP, UDP

from tests.agent.offline.test_evasion import CLIENT, SERVER, alerts, run, session

RULES = "\n".join([
    'alert http any any -> any any (msg:"uri"; http.uri; content:"/evil"; sid:1;)',
    'alert http any any -> any any (msg:"status"; http.stat_code; content:"404"; sid:2;)',
    'alert http any any -> any any (msg:"server"; http.server; content:"evil-httpd"; sid:3;)',
    'alert dns any any -> any any (msg:"query"; dns.query; content:"evil"; sid:4;)',
    "",
])


def test_http_and_dns_alerts_carry_their_event_fields(tmp_path: Path) -> None:
    request = b"GET /evil HTTP/1.1\r\nHost: evil.example\r\nUser-Agent: agent-x\r\n\r\n"
    response = b"HTTP/1.1 404 Not Found\r\nServer: evil-httpd\r\nContent-Length: 0\r\n\r\n"
    dns = [IP(src=CLIENT, dst="198.51.100.53") / UDP(sport=5353, dport=53) / DNS(id=77, rd=1, qd=DNSQR(qname="evil.example")),
           IP(src="198.51.100.53", dst=CLIENT) / UDP(sport=53, dport=5353) /
           DNS(id=77, qr=1, qd=DNSQR(qname="evil.example"), an=DNSRR(rrname="evil.example", rdata="192.0.2.1"))]
    recs, _ = run(tmp_path, session([(True, request), (False, response)]) + dns, RULES)
    http = {"hostname": "evil.example", "url": "/evil", "http_method": "GET", "protocol": "HTTP/1.1",
            "http_user_agent": "agent-x"}
    uri, = alerts(recs, 1)
    assert uri["app_proto"] == "http" and uri["http"] == http
    status, server = alerts(recs, 2) + alerts(recs, 3)  # one event, two alerts: each with the fields
    for rec in (status, server):
        assert rec["app_proto"] == "http" and rec["http"] == {**http, "status": 404}
    query, = alerts(recs, 4)  # dns.query: the request's (Suricata's to_server buffer)
    assert query["app_proto"] == "dns" and query["dns"] == {"type": "query", "id": 77, "queries": ["evil.example"]}
