"""A flow that lives across a rule reload (a new Detector, in the same engine or a new one) is
inspected by the new rules as a flow that started under them: per-flow caches keyed by the old
rule set's indices (rule headers judged, unfiltered candidates, transaction memos) are not reused,
while what the flow itself earned (flowbits, a pass) carries over, as Suricata's detect-engine
reload keeps a flow's state but resets its inspection state."""
from __future__ import annotations

from pathlib import Path

from filters.flow import FlowTable
from filters.ips.engine import Ips
from filters.packet import ACK, PSH, SYN
from filters.pipeline import Pipeline
from tests.filters.factories import CISN, SISN, tpacket

TRAVERSAL = ('drop http any any -> any any (msg:"path traversal to /etc/passwd"; flow:established,to_server; '
             'http.uri.raw; content:"../"; content:"etc/passwd"; distance:0; sid:9200001; rev:1;)')
# A rule whose header never fits the flow below (another port): judged False once, for its index.
OTHER_PORT = 'alert tcp any any -> any 9999 (msg:"GET to 9999"; content:"GET"; sid:1; rev:1;)'
# Keeps HTTP flows in Python (not handed to the kernel) under the old rule set.
OTHER_URI = 'alert http any any -> any any (msg:"another URI"; http.uri; content:"/never-requested"; sid:2; rev:1;)'


def ips_with(tmp_path: Path, name: str, *rules: str) -> Ips:
    path = tmp_path / f"{name}.rules"
    path.write_text("\n".join(rules) + "\n")
    ips = Ips()
    ips.reload([path])
    return ips


def request(path: bytes, rel: int, ts: float):
    data = b"GET " + path + b" HTTP/1.1\r\nHost: www.example.org\r\n\r\n"
    return tpacket(tcp_flags=ACK | PSH, seq=CISN + 1 + rel, ack=SISN + 1, payload=data, ts=ts), len(data)


def response(rel: int, ts: float):
    data = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    return tpacket(reply=True, tcp_flags=ACK | PSH, seq=SISN + 1 + rel, ack=CISN + 1, payload=data, ts=ts), len(data)


def sids(pipe: Pipeline, pkt) -> list[int]:
    out: list[dict] = []
    pipe.emit = out.append
    pipe.process(pkt, object())
    return [r["alert"]["signature_id"] for r in out if r.get("event_type") == "alert"]


def test_a_keep_alive_connection_across_a_reload_meets_the_new_rules(tmp_path: Path) -> None:
    old = ips_with(tmp_path, "old", OTHER_PORT, OTHER_URI)
    pipe = Pipeline([old], FlowTable())
    pipe.process(tpacket(tcp_flags=SYN, seq=CISN, ack=0), object())
    pipe.process(tpacket(reply=True, tcp_flags=SYN | ACK, seq=SISN, ack=CISN + 1), object())
    pipe.process(tpacket(tcp_flags=ACK, seq=CISN + 1, ack=SISN + 1), object())
    first, n = request(b"/index.html", 0, 1.1)
    assert sids(pipe, first) == []  # rule 0 (port 9999) was judged: its header does not fit
    reply, m = response(0, 1.2)
    pipe.process(reply, object())
    # the reload: the traversal rule is rule 0 of the new rule set
    new = ips_with(tmp_path, "new", TRAVERSAL, OTHER_PORT, OTHER_URI)
    pipe.replace_engines([new])
    attack, _ = request(b"/cgi-bin/../../../../etc/passwd", n, 1.3)
    assert sids(pipe, attack) == [9200001]


def test_flowbits_and_a_pass_carry_over_a_reload(tmp_path: Path) -> None:
    setter = 'alert http any any -> any any (msg:"login"; http.uri; content:"/login"; flowbits:set,logged_in; flowbits:noalert; sid:10; rev:1;)'
    checker = 'alert http any any -> any any (msg:"admin after login"; http.uri; content:"/admin"; flowbits:isset,logged_in; sid:11; rev:1;)'
    old = ips_with(tmp_path, "old", setter, checker)
    pipe = Pipeline([old], FlowTable())
    pipe.process(tpacket(tcp_flags=SYN, seq=CISN, ack=0), object())
    pipe.process(tpacket(reply=True, tcp_flags=SYN | ACK, seq=SISN, ack=CISN + 1), object())
    pipe.process(tpacket(tcp_flags=ACK, seq=CISN + 1, ack=SISN + 1), object())
    login, n = request(b"/login", 0, 1.1)
    assert sids(pipe, login) == []
    reply, _ = response(0, 1.2)
    pipe.process(reply, object())
    pipe.replace_engines([ips_with(tmp_path, "new", OTHER_PORT, checker, setter)])
    admin, _ = request(b"/admin", n, 1.3)
    assert sids(pipe, admin) == [11]


def test_a_match_across_the_reload_chunk_boundary_with_no_stream_rule_before(tmp_path: Path) -> None:
    """Without stream rules the IPS still keeps each direction's tail (Ips.on_stream): a reload
    that brings one sees a content that began in the last chunk before it."""
    pipe = Pipeline([ips_with(tmp_path, "old", OTHER_URI)], FlowTable())
    pipe.process(tpacket(tcp_flags=SYN, seq=CISN, ack=0), object())
    pipe.process(tpacket(reply=True, tcp_flags=SYN | ACK, seq=SISN, ack=CISN + 1), object())
    pipe.process(tpacket(tcp_flags=ACK, seq=CISN + 1, ack=SISN + 1), object())
    head = b"GET /index.html HTTP/1.1\r\nX-Note: SPLIT-"
    assert sids(pipe, tpacket(tcp_flags=ACK | PSH, seq=CISN + 1, ack=SISN + 1, payload=head, ts=1.1)) == []
    stream_rule = 'alert tcp any any -> any any (msg:"split"; flow:to_server,established; content:"SPLIT-MARK"; sid:3; rev:1;)'
    pipe.replace_engines([ips_with(tmp_path, "new", stream_rule, OTHER_URI)])
    rest = b"MARK\r\nHost: www.example.org\r\n\r\n"
    assert sids(pipe, tpacket(tcp_flags=ACK | PSH, seq=CISN + 1 + len(head), ack=SISN + 1, payload=rest, ts=1.2)) == [3]
