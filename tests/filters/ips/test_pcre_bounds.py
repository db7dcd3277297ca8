"""Rule pcre runs on PCRE2 under match limits: a backtracking pattern on crafted input stops at the
limit, counts as no match, and is counted per sid (filters/ips/pcre.py, buffer_match, engine)."""
from __future__ import annotations

import pytest

from filters.flow import FlowTable
from filters.ips.buffer_match import MatchContext, match_section
from filters.ips.engine import Ips
from filters.ips.pcre import MATCH_LIMIT, RegexLimit, compile_pcre
from filters.ips.netspec import Variables
from filters.ips.rule_parser import parse_rule
from filters.packet import PROTO_UDP
from filters.pipeline import Pipeline
from tests.filters.factories import tpacket

EVIL = b"a" * 30 + b"!"  # (a+)+$ backtracks 2**30 times on this without a bound


def test_catastrophic_backtracking_hits_the_match_limit():
    regex = compile_pcre("(a+)+$", "")
    with pytest.raises(RegexLimit) as exc:
        regex.search(EVIL)
    assert exc.value.is_limit and exc.value.what == "match limit"
    assert regex.search(b"aaaa")  # an ordinary subject still matches


def test_a_rule_cannot_lift_the_limit():
    regex = compile_pcre("(*LIMIT_MATCH=100000000)(*LIMIT_DEPTH=100000000)(a+)+$", "")
    assert b"LIMIT_MATCH=%d)" % MATCH_LIMIT in regex.source and b"100000000" not in regex.source
    with pytest.raises(RegexLimit):
        regex.search(EVIL)
    lower = compile_pcre("(*LIMIT_MATCH=10)(*UTF)a", "")
    assert lower.source.startswith(b"(*LIMIT_MATCH=10)") and b"(*UTF)a" in lower.source


def test_the_o_modifier_keeps_the_bound():
    regex = compile_pcre("(a+)+$", "O")
    with pytest.raises(RegexLimit):
        regex.search(EVIL)


def test_a_section_that_hits_the_limit_does_not_match():
    rule = parse_rule('alert tcp any any -> any any (msg:"x"; pcre:"/(a+)+$/"; sid:1;)', vars=Variables.suricata_defaults())
    ctx = MatchContext()
    assert not match_section(rule.sections[0], EVIL, ctx)
    assert ctx.pcre_limit is not None and ctx.pcre_limit.is_limit
    negated = parse_rule('alert tcp any any -> any any (msg:"x"; pcre:!"/(a+)+$/"; sid:2;)', vars=Variables.suricata_defaults())
    ctx = MatchContext()
    assert not match_section(negated.sections[0], EVIL, ctx)  # not "no match, so the negation holds"
    assert ctx.pcre_limit is not None


def test_the_engine_counts_the_hit_by_sid(tmp_path):
    rules = tmp_path / "redos.rules"
    rules.write_text('alert udp any any -> any any (msg:"redos"; pcre:"/(a+)+$/"; sid:9001; rev:1;)\n'
                     'alert udp any any -> any any (msg:"plain"; pcre:"/a{3}!/"; sid:9002; rev:1;)\n')
    ips = Ips()
    ips.reload([rules])
    pipe = Pipeline([ips], FlowTable())
    pkt = tpacket(proto=PROTO_UDP, sport=5000, dport=5001, payload=EVIL)
    pipe.process(pkt, 1)
    assert ips.counters.get("matches.alert") == 1  # sid 9002 matched; 9001 counted as no match
    assert ips.counters["pcre.limit_hits"] == 1
    assert ips.counters["pcre.limit_hits.sid:9001"] == 1
    summary = ips.summary()
    assert summary["pcre_limit_hits"] == 1 and summary["pcre_limit_sids"] == {9001: 1}
    assert pipe.stats()["ips"]["pcre.limit_hits.sid:9001"] == 1  # the stats record names the sid
