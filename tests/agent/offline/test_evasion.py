"""Evasion and robustness cases, suricata-verify style: a capture made here, rules, and the alerts
(and EVE records) `vcr-agent pcap` must give, as Suricata gives them.

Fragments (reassembled before detection, overlap policies, VLAN, IPv6, bounds), unreadable capture
records, IPv6 addresses in EVE, drops and passes, protocol changes, and packets whose transport
header is invalid.
"""
from __future__ import annotations

import io
import json
import struct
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from scapy.layers.inet import IP, TCP, UDP, fragment
from scapy.layers.inet6 import IPv6, IPv6ExtHdrFragment, fragment6
from scapy.layers.l2 import Dot1Q, Ether
from scapy.packet import Packet as ScapyPacket
from scapy.utils import wrpcap

from agent.offline import replay
from agent.offline.pcapfile import MAX_RECORD
from tests.filters.app.test_tls import client_hello_body, handshake, record

CLIENT, SERVER = "10.0.0.1", "192.0.2.80"
CLIENT6, SERVER6 = "2001:db8::1", "2001:db8:0:1::80"


def run(tmp_path: Path, pkts: list[Any], rules: str, *, ips: bool = False, sets: list[str] | None = None,
        dataplane: dict[str, Any] | None = None, raw: bytes | None = None) -> tuple[list[dict], dict]:
    """Write the capture, run `vcr-agent pcap -r CAP -S RULES` (Suricata's defaults), return the
    EVE records and the run summary."""
    pcap = tmp_path / "case.pcap"
    if raw is not None:
        pcap.write_bytes(raw)
    else:
        for i, p in enumerate(pkts):
            p.time = Decimal(1_700_000_000) + Decimal(i) / 100
        wrpcap(str(pcap), pkts)
    rules_file = tmp_path / "test.rules"
    rules_file.write_text(rules)
    base = None
    if dataplane is not None:
        base = {"engines": {"firewall": {"enabled": False}}, "home_net": replay.SURICATA_HOME_NET,
                "dataplane": {"flows": {"midstream": False}, **dataplane}}
    cfg = replay.offline_config(base, sets or [], rule_files=[str(rules_file)])
    out = io.StringIO()
    summary = replay.run_pcap(replay.OfflineOptions(pcap=pcap, simulate_ips=ips), cfg, out=out)
    return [json.loads(line) for line in out.getvalue().splitlines()], summary


def alerts(recs: list[dict], sid: int | None = None) -> list[dict]:
    return [r for r in recs if r["event_type"] == "alert" and (sid is None or r["alert"]["signature_id"] == sid)]


def anomalies(recs: list[dict]) -> list[str]:
    return [r["anomaly"]["event"] for r in recs if r["event_type"] == "anomaly"]


def session(payloads: list[tuple[bool, bytes]], *, src: str = CLIENT, dst: str = SERVER, sport: int = 40000,
            dport: int = 80, ip: Any = IP) -> list[ScapyPacket]:
    """A TCP session: handshake, then each (to_server, data) as one segment with its ACK, then FINs."""
    c, s = 1000, 5000
    cli, srv = ip(src=src, dst=dst), ip(src=dst, dst=src)
    out = [cli / TCP(sport=sport, dport=dport, flags="S", seq=c - 1),
           srv / TCP(sport=dport, dport=sport, flags="SA", seq=s - 1, ack=c),
           cli / TCP(sport=sport, dport=dport, flags="A", seq=c, ack=s)]
    for to_server, data in payloads:
        if to_server:
            out.append(cli / TCP(sport=sport, dport=dport, flags="PA", seq=c, ack=s) / data)
            c += len(data)
            out.append(srv / TCP(sport=dport, dport=sport, flags="A", seq=s, ack=c))
        else:
            out.append(srv / TCP(sport=dport, dport=sport, flags="PA", seq=s, ack=c) / data)
            s += len(data)
            out.append(cli / TCP(sport=sport, dport=dport, flags="A", seq=c, ack=s))
    out += [cli / TCP(sport=sport, dport=dport, flags="FA", seq=c, ack=s),
            srv / TCP(sport=dport, dport=sport, flags="FA", seq=s, ack=c + 1),
            cli / TCP(sport=sport, dport=dport, flags="A", seq=c + 1, ack=s + 1)]
    return out


def eth(pkts: list[ScapyPacket], vlan: int | None = None) -> list[ScapyPacket]:
    head = Ether(src="00:01:02:03:04:05", dst="05:04:03:02:01:00")
    if vlan is not None:
        head = head / Dot1Q(vlan=vlan)
    return [head / p for p in pkts]


# -- 1. fragments ---------------------------------------------------------------------------------

SPLIT_RULES = 'alert tcp any any -> any any (msg:"split"; content:"EVIL-PAYLOAD-ACROSS-FRAGMENTS"; sid:1;)\n'


@pytest.mark.parametrize("order", ["in_order", "reversed"])
def test_content_split_across_two_fragments_alerts_once(tmp_path: Path, order: str) -> None:
    data = b"GET /" + b"x" * 20 + b"EVIL-PAYLOAD-" + b"ACROSS-FRAGMENTS HTTP/1.0\r\n\r\n"
    pkts = session([(True, data)])
    req = pkts[3]
    frags = fragment(req, fragsize=48)  # the content starts in the first fragment, ends in the second
    assert len(frags) >= 2 and b"EVIL-PAYLOAD-ACROSS-FRAGMENTS" not in b"".join(bytes(f) for f in frags)
    if order == "reversed":
        frags.reverse()
    recs, summary = run(tmp_path, pkts[:3] + list(frags) + pkts[4:], SPLIT_RULES)
    hits = alerts(recs, 1)
    assert len(hits) == 1 and hits[0]["pcap_cnt"] == 3 + len(frags)  # on the fragment that completed it
    assert summary["stats"]["defrag"]["reassembled"] == 1


def test_fragmented_packet_without_handshake_still_inspected(tmp_path: Path) -> None:
    """suricata-verify defrag/bug-8232: eight 8-byte fragments in reverse order, no SYN seen and
    midstream pickup off: the packet is inspected on its own and alerts once."""
    payload = b"FIRST-FRAG-LAST-regression-check-8232\n"
    pkt = IP(src="1.1.1.1", dst="2.2.2.2", id=8232) / TCP(sport=12345, dport=8080, flags="PA", seq=1) / payload
    frags = list(fragment(pkt, fragsize=8))
    frags.reverse()
    recs, _ = run(tmp_path, frags, 'alert tcp any any -> any any (content:"FIRST-FRAG-LAST-regression"; sid:1;)\n')
    assert len(alerts(recs, 1)) == 1


def test_vlan_tagged_fragmented_syn(tmp_path: Path) -> None:
    """suricata-verify defrag/bug-6887 (Ethernet + VLAN + IPv4 fragments of a SYN)."""
    syn = IP(src="1.1.1.1", dst="2.2.2.2") / TCP(dport=8080, sport=12345, flags="S", seq=1, options=[("WScale", 14)])
    frags = eth(list(fragment(syn, fragsize=8)), vlan=6)
    assert all(Dot1Q in f for f in frags) and len(frags) == 3
    recs, _ = run(tmp_path, frags, "alert tcp any any -> any any (flags:S; sid:1;)\n")
    (hit,) = alerts(recs, 1)
    assert hit["pcap_cnt"] == 3 and (hit["src_port"], hit["dest_port"]) == (12345, 8080)


def test_ipv6_fragments_reassembled_and_eve_addresses_in_full(tmp_path: Path) -> None:
    data = b"A" * 680 + b"IPV6-SPLIT-" + b"SIGNATURE" + b"B" * 700
    pkts = session([(True, data)], src=CLIENT6, dst=SERVER6, ip=IPv6)
    req = pkts[3]
    whole = IPv6(src=CLIENT6, dst=SERVER6) / IPv6ExtHdrFragment(id=77) / req[TCP]
    frags = list(fragment6(whole, 756))
    assert len(frags) >= 2 and b"IPV6-SPLIT-SIGNATURE" not in b"".join(bytes(f) for f in frags)
    recs, _ = run(tmp_path, pkts[:3] + frags + pkts[4:],
                  'alert tcp any any -> any any (msg:"v6 split"; content:"IPV6-SPLIT-SIGNATURE"; sid:6;)\n')
    (hit,) = alerts(recs, 6)
    assert hit["src_ip"] == "2001:0db8:0000:0000:0000:0000:0000:0001"  # as Suricata writes it
    assert hit["dest_ip"] == "2001:0db8:0000:0001:0000:0000:0000:0080"


def overlap_frags(ident: int) -> list[ScapyPacket]:
    """A UDP datagram whose bytes 24..40 come twice: first "ORIGINAL-BYTES!!" in a fragment at 16,
    later "REPLACED-BYTES!!" in a fragment at 24 (it starts higher than the one it overlaps)."""
    body = b"0123456789abcdefORIGINAL-BYTES!!tail-of-datagram."
    udp = UDP(sport=1111, dport=2222, len=8 + len(body), chksum=0)
    whole = bytes(udp) + body  # L4 bytes: 8 UDP header + body
    ip = IP(src=CLIENT, dst=SERVER, id=ident, proto=17)
    first = ip.copy()
    first.flags, first.frag = "MF", 0
    a = first / whole[:16]  # header + "01234567"
    b = ip.copy()
    b.flags, b.frag = "MF", 2
    b = b / whole[16:40]  # "89abcdef" + "ORIGINAL-BYTES!!"  (data offsets 16..40)
    c = ip.copy()
    c.flags, c.frag = "MF", 3
    c = c / b"REPLACED-BYTES!!"  # offsets 24..40, later: starts inside b, covers its tail
    d = ip.copy()
    d.flags, d.frag = 0, 5
    d = d / whole[40:]
    return [a, b, c, d]


OVERLAP_RULES = (
    'alert udp any any -> any any (msg:"original kept"; content:"ORIGINAL-BYTES!!"; sid:10;)\n'
    'alert udp any any -> any any (msg:"new kept"; content:"REPLACED-BYTES!!"; sid:11;)\n'
)


@pytest.mark.parametrize(("policy", "sid"), [("bsd", 10), ("first", 10), ("windows", 10), ("last", 11), ("linux", 10)])
def test_overlapping_fragments_follow_the_policy(tmp_path: Path, policy: str, sid: int) -> None:
    recs, summary = run(tmp_path, overlap_frags(5), OVERLAP_RULES, dataplane={"defrag": {"policy": policy}})
    assert sorted(a["alert"]["signature_id"] for a in alerts(recs)) == [sid]
    assert "ipv4.frag_overlap" in anomalies(recs)
    assert summary["stats"]["defrag"]["overlaps"] >= 1


def test_overlap_starting_lower_wins_under_bsd_not_first(tmp_path: Path) -> None:
    """The later fragment starts lower than the one it overlaps: bsd keeps the later bytes, first
    keeps the earlier (Suricata's default policy is bsd)."""
    ip = IP(src=CLIENT, dst=SERVER, id=9, proto=17)
    payload = bytes(UDP(sport=1, dport=2, len=8 + 40, chksum=0)) + b"." * 40  # 48 bytes of L4
    f_hi = ip.copy()
    f_hi.flags, f_hi.frag = "MF", 2
    f_hi = f_hi / b"EARLYBYTES-AT-16"
    f_lo = ip.copy()
    f_lo.flags, f_lo.frag = "MF", 0
    f_lo = f_lo / (payload[:16] + b"LATER-BYTES-AT16")
    f_end = ip.copy()
    f_end.flags, f_end.frag = 0, 4
    f_end = f_end / payload[32:]
    rules = ('alert udp any any -> any any (content:"EARLYBYTES-AT-16"; sid:20;)\n'
             'alert udp any any -> any any (content:"LATER-BYTES-AT16"; sid:21;)\n')
    for policy, sid in (("bsd", 21), ("first", 20), ("last", 21)):
        recs, _ = run(tmp_path, [f_hi, f_lo, f_end], rules, dataplane={"defrag": {"policy": policy}})
        assert [a["alert"]["signature_id"] for a in alerts(recs)] == [sid], policy


def test_too_many_fragments_are_given_up_and_dropped(tmp_path: Path) -> None:
    pkt = IP(src=CLIENT, dst=SERVER, id=3) / UDP(sport=1, dport=2) / (b"z" * 400 + b"HIDDEN-BEYOND-LIMIT")
    frags = list(fragment(pkt, fragsize=8))
    recs, summary = run(tmp_path, frags, 'alert udp any any -> any any (content:"HIDDEN-BEYOND-LIMIT"; sid:1;)\n',
                        ips=True, dataplane={"defrag": {"max_frags": 16}})
    assert alerts(recs) == [] and "defrag.max_frags" in anomalies(recs)
    assert summary["dropped"] == len(frags) and summary["stats"]["defrag"]["max_frags"] == 1


def test_incomplete_datagram_times_out_and_is_dropped(tmp_path: Path) -> None:
    pkt = IP(src=CLIENT, dst=SERVER, id=4) / UDP(sport=1, dport=2) / (b"q" * 64)
    frags = list(fragment(pkt, fragsize=16))[:-1]  # the last fragment never comes
    recs, summary = run(tmp_path, frags, "alert udp any any -> any any (sid:1;)\n", ips=True)
    assert summary["dropped"] == len(frags) and "defrag.timeout" in anomalies(recs)
    assert summary["stats"]["defrag"]["timeouts"] == 1


def test_fragment_header_rules_see_each_fragment(tmp_path: Path) -> None:
    """fragbits rules match the fragments themselves (no flow, no ports), IP-only rules too."""
    pkt = IP(src=CLIENT, dst=SERVER, id=5) / UDP(sport=1, dport=2) / (b"q" * 64)
    frags = list(fragment(pkt, fragsize=32))
    rules = ('alert ip any any -> any any (msg:"more fragments"; fragbits:M; sid:1;)\n'
             'alert udp any any -> any 2 (msg:"datagram"; sid:2;)\n')
    recs, _ = run(tmp_path, frags, rules)
    assert len(alerts(recs, 1)) == len(frags) - 1 and len(alerts(recs, 2)) == 1


# -- 2. unreadable capture records ----------------------------------------------------------------


def test_oversized_pcap_record_is_skipped_and_the_run_goes_on(tmp_path: Path) -> None:
    pkts = session([(True, b"GET /after-the-bad-record HTTP/1.0\r\n\r\n")])
    head = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 101)
    recs_bytes = b""
    for i, p in enumerate(pkts):
        data = bytes(p)
        recs_bytes += struct.pack("<IIII", 1_700_000_000 + i, 0, len(data), len(data)) + data
        if i == 1:
            recs_bytes += struct.pack("<IIII", 1_700_000_000, 0, MAX_RECORD + 8, MAX_RECORD + 8) + bytes(MAX_RECORD + 8)
    recs, summary = run(tmp_path, [], 'alert tcp any any -> any 80 (content:"after-the-bad-record"; sid:1;)\n',
                        raw=head + recs_bytes)
    assert len(alerts(recs, 1)) == 1 and summary["packets"] == len(pkts)
    assert summary["skipped_records"] == {"pcap.record_too_large": 1}
    (anom,) = [r for r in recs if r["event_type"] == "anomaly"]
    assert anom["anomaly"]["type"] == "pcap" and anom["anomaly"]["event"] == "pcap.record_too_large"


def test_cli_pcap_does_not_fail_on_a_bogus_pcapng_block(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from agent.cli import main
    from tests.agent.offline.test_pcapfile import epb, idb, shb

    frames = [bytes(p) for p in eth(session([(True, b"GET /x HTTP/1.0\r\n\r\n")]))]
    data = shb("<") + idb("<", 1) + epb("<", 0, 1, frames[0]) + struct.pack("<II", 6, 13) + bytes(20)
    data += b"".join(epb("<", 0, 2 + i, f) for i, f in enumerate(frames[1:]))
    (tmp_path / "x.pcapng").write_bytes(data)
    (tmp_path / "t.rules").write_text('alert tcp any any -> any any (content:"GET /x"; sid:1;)\n')
    rc = main(["pcap", "-r", str(tmp_path / "x.pcapng"), "-S", str(tmp_path / "t.rules"), "-l", str(tmp_path / "log")])
    assert rc == 0
    eve_lines = [json.loads(x) for x in (tmp_path / "log" / "eve.json").read_text().splitlines()]
    assert len(alerts(eve_lines, 1)) == 1 and "pcap.bad_block_length" in anomalies(eve_lines)
    assert "unreadable records skipped" in capsys.readouterr().err


# -- 4. drops, passes and protocol changes --------------------------------------------------------

DROP_RULES = ('drop tcp any any -> any 80 (msg:"drop"; content:"BAD"; sid:1;)\n'
              'alert tcp any any -> any any (msg:"later data"; content:"MORE"; sid:2;)\n')


@pytest.mark.parametrize("ips", [True, False])
def test_no_alert_after_a_flow_drop(tmp_path: Path, ips: bool) -> None:
    """After a drop rule matched, the flow's later packets are dropped (IPS) and never inspected
    again (IPS and IDS alike, as Suricata marks the flow dropped in both): sid 2 stays silent."""
    pkts = session([(True, b"BAD request"), (True, b"MORE data"), (False, b"MORE reply")])
    recs, summary = run(tmp_path, pkts, DROP_RULES, ips=ips)
    (hit,) = alerts(recs, 1)
    assert hit["alert"]["action"] == ("blocked" if ips else "allowed") and alerts(recs, 2) == []
    assert summary["dropped"] == (len(pkts) - 3 if ips else 0)


def test_dropped_flow_is_not_redecided_inline() -> None:
    """Inline (kernel offload) a packet of a dropped flow that was already queued when the verdict
    was given stays dropped: it is neither inspected again nor let through as a new flow."""
    from filters.app.layer import AppLayer
    from filters.flow import FlowTable
    from filters.packet import parse_ip
    from filters.pipeline import Outcome, Pipeline, PipelinePolicy

    engine = _ips(DROP_RULES)
    pipe = Pipeline([engine], FlowTable(), PipelinePolicy(kernel_offload=True), app=AppLayer())
    pkts = session([(True, b"BAD request"), (True, b"harmless follow-up")])
    outs = []
    for i, p in enumerate(pkts):
        outs += pipe.process(parse_ip(bytes(p), ts=100.0 + i * 5), i)
    by_token = {r.token: r.outcome for r in outs}
    assert by_token[3] is Outcome.DROP
    assert all(by_token[i] is Outcome.DROP for i in range(4, len(pkts)))
    assert pipe.counters.get("flows.redecided", 0) == 0


def _ips(rules: str) -> Any:
    import tempfile

    from filters.ips.engine import Ips

    with tempfile.NamedTemporaryFile("w", suffix=".rules", delete=False) as fh:
        fh.write(rules)
    engine = Ips()
    engine.configure({"rule_files": [fh.name]})
    engine.prepare()
    return engine


def test_http_connect_tunnel_changes_protocol_to_tls(tmp_path: Path) -> None:
    """CONNECT accepted: the HTTP parser stops, TLS inside is parsed (tls.sni rules fire) and
    rules for HTTP no longer match the tunnel's packets."""
    hello = record(22, handshake(1, client_hello_body(sni=b"hidden.example.org")))
    pkts = session([(True, b"CONNECT hidden.example.org:443 HTTP/1.1\r\nHost: hidden.example.org:443\r\n\r\n"),
                    (False, b"HTTP/1.1 200 Connection established\r\n\r\n"),
                    (True, hello)], dport=3128)
    rules = ('alert tls any any -> any any (msg:"sni"; tls.sni; content:"hidden.example.org"; sid:1;)\n'
             'alert http any any -> any any (msg:"connect"; http.method; content:"CONNECT"; sid:2;)\n')
    recs, _ = run(tmp_path, pkts, rules)
    assert len(alerts(recs, 1)) == 1 and len(alerts(recs, 2)) == 1
    assert alerts(recs, 1)[0]["pcap_cnt"] == 8  # the ClientHello inside the tunnel


def test_smtp_starttls_changes_protocol_to_tls(tmp_path: Path) -> None:
    hello = record(22, handshake(1, client_hello_body(sni=b"mail.example.org")))
    pkts = session([(False, b"220 mx ESMTP\r\n"), (True, b"EHLO me\r\n"),
                    (False, b"250-mx\r\n250 STARTTLS\r\n"), (True, b"STARTTLS\r\n"),
                    (False, b"220 go ahead\r\n"), (True, hello)], dport=25)
    rules = 'alert tls any any -> any any (msg:"sni"; tls.sni; content:"mail.example.org"; sid:1;)\n'
    recs, _ = run(tmp_path, pkts, rules)
    assert len(alerts(recs, 1)) == 1


# -- 5. invalid transport headers -------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["bad_tcp_offset", "truncated_tcp", "udp_length"])
def test_invalid_transport_header_still_meets_ip_rules(tmp_path: Path, kind: str) -> None:
    ip = IP(src=CLIENT, dst=SERVER)
    if kind == "bad_tcp_offset":
        bad = ip / TCP(sport=1, dport=80, dataofs=2) / b"payload"
        code = "tcp.bad_offset"
    elif kind == "truncated_tcp":
        bad = IP(bytes(ip / TCP(sport=1, dport=80))[:20 + 12])  # 12 of 20 header bytes, length says so
        bad.len = 32
        code = "tcp.truncated"
    else:
        bad = ip / UDP(sport=1, dport=53, len=400) / b"short"
        code = "udp.bad_length"
    rules = ('alert ip any any -> any any (msg:"ip-only"; sid:1;)\n'
             'alert tcp any any -> any any (msg:"tcp, ip-only"; sid:2;)\n'
             'alert udp any any -> any any (msg:"udp, ip-only"; sid:3;)\n'
             'alert tcp any any -> any 80 (msg:"tcp port"; sid:4;)\n'
             'alert udp any any -> any 53 (msg:"udp port"; sid:5;)\n'
             'alert ip any any -> any any (msg:"payload"; content:"payload"; sid:6;)\n')
    recs, _ = run(tmp_path, [bad], rules)
    # IP-only rules (addresses and protocol, which the IP header gives) match; rules that need the
    # ports or payload of the invalid header do not (Suricata: the packet has no L4 decoded).
    assert sorted(a["alert"]["signature_id"] for a in alerts(recs)) == [1, 3 if kind == "udp_length" else 2]
    assert code in anomalies(recs)
