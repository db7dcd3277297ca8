"""`vcr-agent pcap` keeps the empty ACKs the kernel keeps inline (agent/dataplane/ruleset.py
``EmptyAckSkip``, issue 15) when no loaded engine needs them, and gives the same EVE records as
a run that hands every packet to the pipeline."""
from __future__ import annotations

from pathlib import Path
from unittest import mock

from agent.offline import replay
from tests.agent.offline.test_evasion import run, session

REQUEST = b"GET /evil/x HTTP/1.1\r\nHost: evil.example\r\n\r\n"
BODY = b"A" * 3000 + b"malicious-marker" + b"B" * 3000
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(BODY) + BODY
# none of these can match an empty ACK (rule_groups.could_match_empty_ack)
RULES = "\n".join([
    'alert http any any -> any any (msg:"uri"; http.uri; content:"/evil/"; sid:1;)',
    'alert http any any -> any any (msg:"file"; file.data; content:"malicious-marker"; sid:2;)',
    'alert tcp any any -> any any (msg:"stream"; content:"malicious-marker"; sid:3;)',
    'alert http any any -> any any (msg:"body"; http.response_body; content:"BBBB"; sid:4;)',
    "",
])


def wire() -> list:
    segments = [(True, REQUEST)] + [(False, RESPONSE[i:i + 1000]) for i in range(0, len(RESPONSE), 1000)]
    return session(segments) + session(segments, sport=40001)


def records(recs: list[dict]) -> list[dict]:
    """EVE records without their flow ids (each run salts its own)."""
    return [{k: v for k, v in r.items() if k != "flow_id"} for r in recs]


def everything(tmp_path: Path, rules: str, **kw) -> tuple[list[dict], dict]:
    """The run with every packet handed to the pipeline (no skip)."""
    with mock.patch.object(replay, "empty_ack_skip", return_value=None):
        return run(tmp_path, wire(), rules, **kw)


def test_kept_empty_acks_change_no_record(tmp_path: Path) -> None:
    recs, summary = run(tmp_path, wire(), RULES)
    base, base_summary = everything(tmp_path, RULES)
    # per connection: the handshake's ACK goes, the ACKs of its 8 data segments stay, a FIN ends the skip
    assert summary["stats"]["pcap"]["empty_acks_kept"] == 2 * 8
    assert base_summary["stats"]["pcap"]["empty_acks_kept"] == 0
    assert records(recs) == records(base) and {r["alert"]["signature_id"] for r in recs if r["event_type"] == "alert"} == {1, 2, 3, 4}
    assert summary["packets"] == base_summary["packets"] and summary["accepted"] == base_summary["accepted"]


def test_every_packet_when_a_rule_needs_empty_acks_or_ips_mode(tmp_path: Path) -> None:
    needy = RULES + 'alert tcp any any -> any any (msg:"zero window"; flags:A; window:0; sid:5;)\n'
    recs, summary = run(tmp_path, wire(), needy)
    assert summary["stats"]["pcap"]["empty_acks_kept"] == 0
    assert records(recs) == records(everything(tmp_path, needy)[0])
    # --simulate-ips: a dropped connection's packets are dropped in the kernel before the skip
    _, summary = run(tmp_path, wire(), RULES, ips=True)
    assert summary["stats"]["pcap"]["empty_acks_kept"] == 0
