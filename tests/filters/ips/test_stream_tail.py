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


# -- the stream group's prefilter over a chunk and its tail (rule_groups.Group.window_hits) ------------

def _window_hits_agree(det, chunks: list[bytes], tail_len: int) -> int:
    """Feed ``chunks`` as one stream direction, as Ips.on_stream does: at each chunk the hits of
    window_hits (the chunk and the tail's last bytes scanned, earlier hits looked for in the tail)
    must be those of a scan of the whole window. The number of hits seen."""
    group, infos = det.groups["stream"], det.infos
    ((_, pf),) = group.prefilters_for(None, None)
    tail, before, seen = b"", (), 0
    for data in chunks:
        window = tail + data
        whole: set[int] = set()
        pf.scan(window, whole)
        got = group.window_hits(tail, window, before, infos)
        assert got == whole, (len(tail), len(data))
        seen += len(got)
        tail = window[-tail_len:]
        before = tuple(got)
    return seen


def test_window_hits_are_those_of_the_whole_window() -> None:
    import random

    from filters.ips.netspec import Variables
    from filters.ips.rule_groups import Detector
    from filters.ips.rule_parser import load_text

    pats = [b"ab", b"abc", b"Zq", b"a\x00b", b"xyzzy", b"QQQQQQQQ", b"b"]
    rules = "\n".join(f'alert tcp any any -> any any (msg:"p{n}"; content:"{p.decode("latin-1").replace(chr(0), "|00|")}";'
                      f'{" nocase;" if n % 2 else ""} sid:{100 + n}; rev:1;)' for n, p in enumerate(pats))
    det = Detector(load_text(rules, Variables.suricata_defaults()).rules)
    assert len(det.groups["stream"].rules) == len(pats)
    rng = random.Random(15)
    alphabet = b"abcxyzqQZ\x00 "
    seen = 0
    for _ in range(300):
        tail_len = rng.choice((1, 3, 8, 16, 64))
        chunks = [bytes(rng.choice(alphabet) for _ in range(rng.randint(1, 40))) for _ in range(rng.randint(1, 12))]
        seen += _window_hits_agree(det, chunks, tail_len)
    assert seen > 1000  # the patterns were met, in tails and across boundaries


def test_window_hits_with_et_open(et_open) -> None:
    """ET Open's stream group over chunks sewn with its own fast patterns (cut across chunk
    boundaries and left in tails), with the engine's tail of 4 KB and a short one."""
    import random

    from filters.ips.config import STREAM_TAIL
    from filters.ips.rule_groups import Detector

    det = Detector(et_open.rules)
    infos = det.infos
    pats = [infos[i.idx].rule.fast_pattern for i in det.groups["stream"].rules]
    rng = random.Random(1160)
    for tail_len in (STREAM_TAIL, 37):
        for _ in range(20):
            parts = []
            for _ in range(rng.randint(20, 200)):
                fp = rng.choice(pats)
                p = fp.pattern.upper() if fp.nocase and rng.random() < 0.5 else fp.pattern
                parts.append(rng.randbytes(rng.randint(0, 3000)) if rng.random() < 0.2 else p)
            stream = b"".join(parts)
            cuts = sorted(rng.sample(range(1, len(stream)), min(len(stream) - 1, rng.randint(1, 40))))
            chunks = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)])]
            assert _window_hits_agree(det, chunks, tail_len) > 0


def test_a_rule_header_judged_for_one_direction_does_not_decide_the_other(tmp_path: Path) -> None:
    """on_stream drops the hits whose header the flow's cache already rejected, per direction: the
    server sending the pattern first (sid 21 cannot fit that direction) must not hide the client's."""
    c, s = 1000, 5000
    server_data, client_data = b"s" * 50 + b"EARLY-MARK", b"c" * 50 + b"EARLY-MARK"
    pkts = [Ether() / IP(src=CLIENT, dst=SERVER) / TCP(sport=40000, dport=9999, flags="S", seq=c - 1),
            Ether() / IP(src=SERVER, dst=CLIENT) / TCP(sport=9999, dport=40000, flags="SA", seq=s - 1, ack=c),
            Ether() / IP(src=CLIENT, dst=SERVER) / TCP(sport=40000, dport=9999, flags="A", seq=c, ack=s),
            Ether() / IP(src=SERVER, dst=CLIENT) / TCP(sport=9999, dport=40000, flags="PA", seq=s, ack=c) / server_data,
            Ether() / IP(src=CLIENT, dst=SERVER) / TCP(sport=40000, dport=9999, flags="A", seq=c, ack=s + len(server_data)),
            Ether() / IP(src=SERVER, dst=CLIENT) / TCP(sport=9999, dport=40000, flags="PA", seq=s + len(server_data), ack=c)
            / server_data,
            Ether() / IP(src=CLIENT, dst=SERVER) / TCP(sport=40000, dport=9999, flags="PA", seq=c,
                                                       ack=s + 2 * len(server_data)) / client_data,
            Ether() / IP(src=SERVER, dst=CLIENT) / TCP(sport=9999, dport=40000, flags="A", seq=s + 2 * len(server_data),
                                                       ack=c + len(client_data))]
    for i, p in enumerate(pkts):
        p.time = 1_700_000_000 + i * 0.001
    assert [sid for _, sid in alerts(tmp_path, pkts)] == [21]
