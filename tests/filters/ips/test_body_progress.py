"""A response body that arrives in many segments: each segment raises an HTTP body event, and the
IPS inspects only what changed (filters/ips/engine.py _TxMemo). Alerts must be exactly those of a
full inspection: once per transaction, at the packet that completes the match."""
from __future__ import annotations

import io
import json
from pathlib import Path

from scapy.layers.inet import IP, TCP
from scapy.utils import wrpcap

from hypothesis import given, settings, strategies as st

from agent.offline import replay as offline
from filters.ips.engine import _still_absent, _TxMemo
from filters.ips.netspec import Variables
from filters.ips.rule_groups import RuleInfo, classify
from filters.ips.rule_parser import parse_rule
from tests.filters.ips.scapyflow import SERVER, TcpConversation, timed

SEG = 100


def http_flow(body: bytes, uri: bytes = b"/dl/file.bin", sport: int = 40000) -> list:
    """Handshake, one GET, a 200 response whose body comes in SEG-byte segments, then FIN."""
    t = TcpConversation(80, sport)
    t.open()
    t.add(True, "PA", b"GET " + uri + b" HTTP/1.1\r\nHost: files.example\r\nUser-Agent: test/1\r\n\r\n")
    t.add(False, "A")
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n" % len(body)
    t.add(False, "PA", head)
    for i in range(0, len(body), SEG):
        t.add(False, "PA", body[i:i + SEG])
        if i // SEG % 2:
            t.add(True, "A")
    t.close()
    return timed(t.packets)


RULES = r'''
alert http any any -> any any (msg:"across segments"; file.data; content:"EVIL-PATTERN-ACROSS"; sid:1; rev:1;)
alert http any any -> any any (msg:"header then body"; http.content_type; content:"octet"; file.data; content:"LATE-MARKER"; sid:2; rev:1;)
alert http any any -> any any (msg:"never"; http.content_type; content:"octet"; file.data; content:"NOT-IN-THE-BODY"; sid:3; rev:1;)
alert http any any -> any any (msg:"status and body"; http.stat_code; content:"200"; file.data; content:"EARLY"; sid:4; rev:1;)
alert http any any -> any any (msg:"pcre late"; http.stat_code; content:"200"; file.data; content:"ZZZ"; pcre:"/Z{5}END$/"; sid:5; rev:1;)
'''


def run(tmp_path: Path, pkts: list, rules_text: str | None = None) -> list[dict]:
    pcap = tmp_path / "body.pcap"
    wrpcap(str(pcap), pkts)
    rules = tmp_path / "test.rules"
    rules.write_text(RULES if rules_text is None else rules_text)
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


# A rule whose fast pattern comes early in the body and another of its contents late: every body
# event re-runs it, and the engine searches only the new bytes for the late content
# (engine._still_absent). It must fire at the packet that completes the late content, whether
# that content lies across two segments (one byte of it in the second), is matched without case or belongs to a rule that sets a
# flowbit (not memoized), and never when the content only appears outside its buffer.
LATE_RULES = r'''
alert http any any -> any any (msg:"late across"; file.data; content:"FASTPAT-EARLY"; fast_pattern; content:"needle-late-across"; sid:11; rev:1;)
alert http any any -> any any (msg:"late nocase"; file.data; content:"FASTPAT-EARLY"; fast_pattern; content:"MiXeD-CaSe-LaTe"; nocase; sid:12; rev:1;)
alert http any any -> any any (msg:"late flowbit"; flowbits:set,late.seen; file.data; content:"FASTPAT-EARLY"; fast_pattern; content:"flowbit-late"; sid:13; rev:1;)
alert http any any -> any any (msg:"only in a header"; file.data; content:"FASTPAT-EARLY"; fast_pattern; content:"octet-stream"; sid:14; rev:1;)
alert http any any -> any any (msg:"relative late"; file.data; content:"FASTPAT-EARLY"; fast_pattern; content:"rel-one"; content:"rel-two"; distance:0; sid:15; rev:1;)
alert http any any -> any any (msg:"status never"; http.stat_code; content:"403"; file.data; content:"FASTPAT-EARLY"; fast_pattern; sid:16; rev:1;)
alert http any any -> any any (msg:"header and late"; http.content_type; content:"octet"; file.data; content:"FASTPAT-EARLY"; fast_pattern; content:"needle-late-across"; sid:17; rev:1;)
'''
LATE_MARKS = {100: b"FASTPAT-EARLY", 10_001 - 18: b"needle-late-across", 15_000 - 5: b"mixed-case-late",
              18_000 - 3: b"flowbit-late", 12_000: b"rel-two", 12_500: b"rel-one", 19_000 - 2: b"rel-two"}


def test_late_contents_fire_at_the_completing_packet(tmp_path: Path) -> None:
    pkts = http_flow(body_with(LATE_MARKS))
    alerts = run(tmp_path, pkts, LATE_RULES)
    at = {a["alert"]["signature_id"]: a["pcap_cnt"] for a in alerts}
    # 14: "octet-stream" is in a header only; 16: the status is 200
    assert sorted(at) == [11, 12, 13, 15, 17] and len(alerts) == 5
    assert at[11] == at[17] == packet_of(pkts, b"needle-late-across", 10_001 - 18)
    assert at[12] == packet_of(pkts, b"mixed-case-late", 15_000 - 5)
    assert at[13] == packet_of(pkts, b"flowbit-late", 18_000 - 3)
    assert at[15] == packet_of(pkts, b"rel-two", 19_000 - 2)  # the rel-two before rel-one does not count


def test_late_contents_alert_as_a_full_evaluation_does(tmp_path: Path, monkeypatch) -> None:
    """The oracle: the same captures with the shortcut off (every candidate rule evaluated in full)."""
    from filters.ips import engine

    captures = [http_flow(body_with(LATE_MARKS)),
                http_flow(body_with({50: b"FASTPAT-EARLY", 99: b"needle-late-across"})),  # across the first segment
                http_flow(body_with({19_950: b"FASTPAT-EARLY", 19_970: b"MIXED-CASE-LATE"})),
                http_flow(body_with({3_000: b"flowbit-late", 9_000: b"FASTPAT-EARLY"}))]
    rules = LATE_RULES + RULES
    got = [[(a["pcap_cnt"], a["alert"]["signature_id"]) for a in run(tmp_path, p, rules)] for p in captures]
    monkeypatch.setattr(engine, "_still_absent", lambda info, buffers, memo: False)
    want = [[(a["pcap_cnt"], a["alert"]["signature_id"]) for a in run(tmp_path, p, rules)] for p in captures]
    assert got == want
    assert all(got)  # every capture alerts: the comparison is not between two empty lists


def test_a_rule_missing_a_static_content_is_not_looked_at_again_in_its_body(tmp_path: Path, monkeypatch) -> None:
    """sid 16 needs status 403 (the response's is 200): found missing on the first body event, the
    rule is dead for the rest of the body (_TxMemo.dead), not searched again on each segment."""
    from filters.ips import engine

    calls: list[int] = []
    still_absent = engine._still_absent

    def counted(info, buffers, memo):
        if info.rule.sid == 16:
            calls.append(info.rule.sid)
        return still_absent(info, buffers, memo)

    monkeypatch.setattr(engine, "_still_absent", counted)
    pkts = http_flow(body_with(LATE_MARKS))
    assert sorted(a["alert"]["signature_id"] for a in run(tmp_path, pkts, LATE_RULES)) == [11, 12, 13, 15, 17]
    assert len(calls) == 2  # 199 body segments after "FASTPAT-EARLY": one look in the body, one at its end


def test_required_content_search_of_new_bytes_agrees_with_a_whole_search() -> None:
    """engine._still_absent over a body growing chunk by chunk (and sometimes replaced by one that
    is no continuation) answers at every step as a search of the whole body does."""
    def rule(needle: bytes, nocase: bool) -> RuleInfo:
        text = (f'alert http any any -> any any (msg:"t"; file.data; content:"FP"; fast_pattern; '
                f'content:"|{needle.hex(" ")}|";{" nocase;" if nocase else ""} sid:1; rev:1;)')
        return classify(0, parse_rule(text, vars=Variables.suricata_defaults()))

    @settings(max_examples=300, deadline=None)
    @given(needle=st.binary(min_size=1, max_size=6).map(lambda b: bytes(c % 4 + 0x61 for c in b)),
           nocase=st.booleans(),
           steps=st.lists(st.tuples(st.booleans(), st.binary(max_size=12).map(
               lambda b: bytes((0x41 if c & 8 else 0x61) + c % 4 for c in b))), min_size=1, max_size=12))
    def check(needle: bytes, nocase: bool, steps: list[tuple[bool, bytes]]) -> None:
        info = rule(needle, nocase)
        assert info.required == (("file.data", needle, nocase),)
        memo, body = _TxMemo(), b""
        for restart, chunk in steps:
            body = chunk if restart else body + chunk
            whole = needle not in (body.lower() if nocase else body)
            assert _still_absent(info, lambda name: [body] if body else [], memo) == (whole and bool(body))

    check()
