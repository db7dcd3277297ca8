"""A response body that arrives in many segments: each segment raises an HTTP body event, and the
IPS inspects only what changed (filters/ips/engine.py _TxMemo). Alerts must be exactly those of a
full inspection: once per transaction, at the packet that completes the match."""
from __future__ import annotations

import io
import json
from pathlib import Path

from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether
from scapy.utils import wrpcap

from agent import offline

CLIENT, SERVER = "192.168.10.5", "198.51.100.7"
SEG = 100


def http_flow(body: bytes, uri: bytes = b"/dl/file.bin", sport: int = 40000) -> list:
    """Handshake, one GET, a 200 response whose body comes in SEG-byte segments, then FIN."""
    c, s = 1000, 5000
    pkts = []

    def add(src: str, flags: str, data: bytes = b"") -> None:
        nonlocal c, s
        if src == CLIENT:
            ip, tcp = IP(src=CLIENT, dst=SERVER), TCP(sport=sport, dport=80, flags=flags, seq=c, ack=s)
            c += len(data) + (1 if "S" in flags or "F" in flags else 0)
        else:
            ip, tcp = IP(src=SERVER, dst=CLIENT), TCP(sport=80, dport=sport, flags=flags, seq=s, ack=c)
            s += len(data) + (1 if "S" in flags or "F" in flags else 0)
        pkts.append(Ether() / ip / tcp / data if data else Ether() / ip / tcp)

    add(CLIENT, "S")
    pkts[-1][TCP].ack = 0
    add(SERVER, "SA")
    add(CLIENT, "A")
    add(CLIENT, "PA", b"GET " + uri + b" HTTP/1.1\r\nHost: files.example\r\nUser-Agent: test/1\r\n\r\n")
    add(SERVER, "A")
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n" % len(body)
    add(SERVER, "PA", head)
    for i in range(0, len(body), SEG):
        add(SERVER, "PA", body[i:i + SEG])
        if i // SEG % 2:
            add(CLIENT, "A")
    add(CLIENT, "FA")
    add(SERVER, "FA")
    add(CLIENT, "A")
    for i, p in enumerate(pkts):
        p.time = 1_700_000_000 + i * 0.001
    return pkts


RULES = r'''
alert http any any -> any any (msg:"across segments"; file.data; content:"EVIL-PATTERN-ACROSS"; sid:1; rev:1;)
alert http any any -> any any (msg:"header then body"; http.content_type; content:"octet"; file.data; content:"LATE-MARKER"; sid:2; rev:1;)
alert http any any -> any any (msg:"never"; http.content_type; content:"octet"; file.data; content:"NOT-IN-THE-BODY"; sid:3; rev:1;)
alert http any any -> any any (msg:"status and body"; http.stat_code; content:"200"; file.data; content:"EARLY"; sid:4; rev:1;)
alert http any any -> any any (msg:"pcre late"; http.stat_code; content:"200"; file.data; content:"ZZZ"; pcre:"/Z{5}END$/"; sid:5; rev:1;)
'''


def run(tmp_path: Path, pkts: list) -> list[dict]:
    pcap = tmp_path / "body.pcap"
    wrpcap(str(pcap), pkts)
    rules = tmp_path / "test.rules"
    rules.write_text(RULES)
    cfg = offline.offline_config(None, [], rule_files=[str(rules)])
    out = io.StringIO()
    offline.run_pcap(offline.OfflineOptions(pcap=pcap), cfg, out=out)
    return [r for r in map(json.loads, out.getvalue().splitlines()) if r.get("event_type") == "alert"]


def body_with(marks: dict[int, bytes], size: int = 20_000) -> bytes:
    body = bytearray(b"." * size)
    for at, text in marks.items():
        body[at:at + len(text)] = text
    return bytes(body)


def packet_of(pkts: list, needle: bytes, start: int) -> int:
    """pcap_cnt (1-based) of the server packet that ends ``needle`` in the body."""
    body_at = 0
    for i, p in enumerate(pkts, 1):
        data = bytes(p[TCP].payload)
        if p[IP].src == SERVER and i > 6 and data:
            body_at += len(data)
            if body_at >= start + len(needle):
                return i
    raise AssertionError("needle past the body")


def test_body_matches_fire_once_at_the_completing_packet(tmp_path: Path) -> None:
    marks = {150: b"EARLY", 5_050 - 9: b"EVIL-PATTERN-ACROSS", 19_980 - 11: b"LATE-MARKER", 20_000 - 8: b"ZZZZZEND"}
    body = body_with(marks)
    pkts = http_flow(body)
    alerts = run(tmp_path, pkts)
    sids = sorted(a["alert"]["signature_id"] for a in alerts)
    assert sids == [1, 2, 4, 5]  # once each; sid 3's body content never comes
    at = {a["alert"]["signature_id"]: a["pcap_cnt"] for a in alerts}
    # each fires with the segment that completes its body content, not at the end of the response
    assert at[1] == packet_of(pkts, b"EVIL-PATTERN-ACROSS", 5_050 - 9)
    assert at[4] == packet_of(pkts, b"EARLY", 150)
    assert at[2] == packet_of(pkts, b"LATE-MARKER", 19_980 - 11)
    assert at[1] < at[2]


def test_two_transactions_of_one_flow_are_inspected_apart(tmp_path: Path) -> None:
    """A second flow with the same body: its transaction fires again (memos are per transaction)."""
    body = body_with({5_050 - 9: b"EVIL-PATTERN-ACROSS"})
    pkts = http_flow(body) + http_flow(body, sport=40001)
    for i, p in enumerate(pkts):
        p.time = 1_700_000_000 + i * 0.001
    alerts = run(tmp_path, pkts)
    assert sorted((a["src_port"], a["alert"]["signature_id"]) for a in alerts) == [(80, 1), (80, 1)]
    assert {a["dest_port"] for a in alerts} == {40000, 40001}
