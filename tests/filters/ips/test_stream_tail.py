"""Stream rules meet each chunk with the end of the previous one (the tail, for matches across two
chunks): a match wholly inside that tail was reported with the earlier chunk and must not fire
again, a match across the boundary fires once, with the chunk that completes it
(filters/ips/engine.py on_stream: the window is checked first, then the old tail alone)."""
from __future__ import annotations

import io
import json
from pathlib import Path

from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether
from scapy.utils import wrpcap

from agent.offline import replay as offline

CLIENT, SERVER = "192.168.10.5", "198.51.100.7"
RULES = r'''
alert tcp any any -> any 9999 (msg:"early"; flow:to_server,established; content:"EARLY-MARK"; sid:21; rev:1;)
alert tcp any any -> any 9999 (msg:"split"; flow:to_server,established; content:"SPLIT-MARK"; sid:22; rev:1;)
alert tcp any any -> any 9999 (msg:"pair"; flow:to_server,established; content:"PAIR-ONE"; content:"PAIR-TWO"; distance:0; sid:23; rev:1;)
alert tcp any any -> any 21 (msg:"wrong port"; flow:to_server,established; content:"EARLY-MARK"; sid:24; rev:1;)
'''


def stream(chunks: list[bytes]) -> list:
    c, s = 1000, 5000
    pkts = [Ether() / IP(src=CLIENT, dst=SERVER) / TCP(sport=40000, dport=9999, flags="S", seq=c - 1),
            Ether() / IP(src=SERVER, dst=CLIENT) / TCP(sport=9999, dport=40000, flags="SA", seq=s - 1, ack=c),
            Ether() / IP(src=CLIENT, dst=SERVER) / TCP(sport=40000, dport=9999, flags="A", seq=c, ack=s)]
    for data in chunks:
        pkts.append(Ether() / IP(src=CLIENT, dst=SERVER) / TCP(sport=40000, dport=9999, flags="PA", seq=c, ack=s) / data)
        c += len(data)
        pkts.append(Ether() / IP(src=SERVER, dst=CLIENT) / TCP(sport=9999, dport=40000, flags="A", seq=s, ack=c))
    for i, p in enumerate(pkts):
        p.time = 1_700_000_000 + i * 0.001
    return pkts


def alerts(tmp_path: Path, pkts: list) -> list[tuple[int, int]]:
    pcap, rules = tmp_path / "s.pcap", tmp_path / "s.rules"
    wrpcap(str(pcap), pkts)
    rules.write_text(RULES)
    out = io.StringIO()
    offline.run_pcap(offline.OfflineOptions(pcap=pcap), offline.offline_config(None, [], rule_files=[str(rules)]), out=out)
    return sorted((r["pcap_cnt"], r["alert"]["signature_id"]) for r in map(json.loads, out.getvalue().splitlines())
                  if r.get("event_type") == "alert")


def test_tail_matches_fire_once_and_boundary_matches_with_the_completing_chunk(tmp_path: Path) -> None:
    chunks = [b"x" * 200 + b"EARLY-MARK" + b"x" * 200 + b"PAIR-ONE" + b"y" * 100,
              b"z" * 300 + b"SPL",
              b"IT-MARK" + b"z" * 300 + b"PAIR-TWO",
              b"w" * 500]
    got = alerts(tmp_path, stream(chunks))
    # packets: 3 of the handshake, then each chunk (4, 6, 8, 10) and its ACK
    assert got == [(4, 21), (8, 22), (8, 23)]  # sid 24: its header does not fit (port 21)
