"""HTTP/2 in clear text through `vcr-agent pcap`: captures made here from two real HTTP/2 endpoints
(prior-knowledge h2c, and HTTP/1 with ``Upgrade: h2c``), Suricata-style rules on the ``http.*``
buffers, and the alerts they must give: once each, as on HTTP/1 (Suricata maps its http2
keywords onto the same buffers). ``http1`` and ``http2`` rules match only their own version."""
from __future__ import annotations

from pathlib import Path

from tests.agent.offline.test_evasion import alerts, run, session
from tests.filters.app.h2_traffic import evil_exchange, upgrade_exchange

RULES = "\n".join([
    'alert http any any -> any any (msg:"evil uri"; flow:established,to_server; http.uri; content:"/evil/payload"; sid:1;)',
    'alert http any any -> any any (msg:"evil body"; flow:established,to_client; http.response_body; content:"malicious-marker"; sid:2;)',
    'alert http any any -> any any (msg:"evil file"; file_data; content:"malicious-marker"; sid:3;)',
    'alert http any any -> any any (msg:"exe upload"; flow:to_server; file_data; content:"MZ"; startswith; sid:4;)',
    'alert http2 any any -> any any (msg:"h2 post"; http.method; content:"POST"; sid:5;)',
    'alert http1 any any -> any any (msg:"h1 only"; http.uri; content:"/evil"; sid:6;)',
    'alert http any any -> any any (msg:"host"; http.host; content:"evil.example"; sid:7;)',
    'alert http any any -> any any (msg:"legacy uri"; content:"/evil/"; http_uri; sid:8;)',
    'alert http any any -> any any (msg:"created"; http.stat_code; content:"201"; sid:9;)',
    'alert http any any -> any any (msg:"h2 line"; http.request_line; content:"POST /upload/tool.exe HTTP/2"; sid:10;)',
    'alert tcp any any -> any any (msg:"raw uri never in h2 bytes"; content:"/evil/../evil/payload"; sid:11;)',
    'alert http any any -> any any (msg:"ua"; http.user_agent; content:"h2-test"; sid:12;)',
    "",
])


def segments(wire: list[tuple[bool, bytes]], mss: int = 1400) -> list[tuple[bool, bytes]]:
    return [(to_server, data[i:i + mss]) for to_server, data in wire for i in range(0, len(data), mss)]


def counts(recs: list[dict]) -> dict[int, int]:
    out: dict[int, int] = {}
    for r in alerts(recs):
        sid = r["alert"]["signature_id"]
        out[sid] = out.get(sid, 0) + 1
    return out


def test_prior_knowledge_h2c_rules_alert_once_each(tmp_path: Path) -> None:
    recs, _ = run(tmp_path, session(segments(evil_exchange().wire)), RULES)
    # sid 7: two transactions with that host; sid 11: HPACK hides the literal path from raw matching
    assert counts(recs) == {1: 1, 2: 1, 3: 1, 4: 1, 5: 1, 7: 2, 8: 1, 9: 1, 10: 1, 12: 1}
    body = alerts(recs, 2)[0]
    assert body["app_proto"] == "http2"
    assert body["http"]["hostname"] == "evil.example" and body["http"]["protocol"] == "HTTP/2"
    assert body["http"]["url"] == "/evil/../evil/payload?x=1"


def test_upgrade_h2c_rules_alert_once_each(tmp_path: Path) -> None:
    wire, _ = upgrade_exchange()
    recs, _ = run(tmp_path, session(segments(wire)), RULES.replace("/evil/payload", "/evil/start"))
    got = counts(recs)
    # the request is HTTP/1 (sids 1, 6, 8, 12 fire on it); the answer on stream 1 is HTTP/2 (2, 3);
    # sid 7 (a request buffer): the HTTP/1 request and stream 3, not stream 1 again
    assert got == {1: 1, 2: 1, 3: 1, 6: 1, 7: 2, 8: 1, 12: 1}
    assert alerts(recs, 6)[0]["app_proto"] == "http" and alerts(recs, 2)[0]["app_proto"] == "http2"
