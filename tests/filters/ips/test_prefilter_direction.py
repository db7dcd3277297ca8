"""App prefilters per event direction (rule_groups.Group.prefilters_for): a request event is
prefiltered with the fast patterns of rules inspected on requests, an answer with those of rules
inspected on answers; a rule of both directions is in both. The candidates must be exactly the
rules the direction filter of Ips._app kept before, and an answer must not build the request
buffers only request rules look at."""
from __future__ import annotations

from filters.ips.netspec import Variables
from filters.ips.rule_groups import Detector
from filters.ips.rule_parser import load_text

RULES = r'''
alert http any any -> any any (msg:"uri"; http.uri; content:"/evil"; sid:1; rev:1;)
alert http any any -> any any (msg:"body either way"; file.data; content:"bodymark"; sid:2; rev:1;)
alert http any any -> any any (msg:"answer body"; flow:to_client; file.data; content:"answermark"; sid:3; rev:1;)
alert http any any -> any any (msg:"answer with uri"; flow:to_client; http.uri; content:"/evil"; http.stat_code; content:"200"; sid:4; rev:1;)
alert http any any -> any any (msg:"server"; http.server; content:"nginx"; sid:5; rev:1;)
alert http any any -> any any (msg:"host"; http.host; content:"bad.example"; sid:6; rev:1;)
'''
BUFFERS = {"http.uri": [b"/evil/x"], "file.data": [b"..bodymark..answermark.."], "http.stat_code": [b"200"],
           "http.server": [b"nginx/1.22"], "http.host": [b"bad.example"]}


def candidates(to_server: bool | None) -> tuple[list[int], list[str]]:
    det = Detector(load_text(RULES, Variables.suricata_defaults()).rules)
    asked: list[str] = []

    def buffers(name: str) -> list[bytes]:
        asked.append(name)
        return BUFFERS.get(name, [])

    got = det.groups["app"].candidates(buffers, det.infos, memo={}, app="http", to_server=to_server)
    return sorted(i.rule.sid for i in got), asked


def test_each_direction_gets_the_rules_inspected_in_it() -> None:
    sids, asked = candidates(True)
    assert sids == [1, 2, 6]
    assert "http.server" not in asked and "http.stat_code" not in asked
    sids, asked = candidates(False)
    assert sids == [2, 3, 4, 5]  # sid 4: a request buffer's pattern of a rule inspected on answers
    assert "http.host" not in asked  # only request rules look at it: not built for an answer


def test_either_direction_is_the_union_the_engine_then_filters() -> None:
    assert candidates(None)[0] == [1, 2, 3, 4, 5, 6]
    det = Detector(load_text(RULES, Variables.suricata_defaults()).rules)
    by_sid = {i.rule.sid: i for i in det.infos}
    # what Ips._app kept of the union before the split, per direction
    for to_server in (True, False):
        assert candidates(to_server)[0] == [s for s in candidates(None)[0] if to_server in by_sid[s].dirs]


BODY_RULES = RULES + r'''
alert http 10.0.0.0/8 any -> any any (msg:"no fast pattern, by address"; http.stat_code; pcre:"/^2/"; sid:7; rev:1;)
alert http 192.168.0.0/16 any -> any any (msg:"no fast pattern, other address"; file.data; pcre:"/late/"; sid:8; rev:1;)
alert http any any -> any any (msg:"late body"; file.data; content:"latemark"; sid:9; rev:1;)
'''


def test_a_body_in_progress_has_the_candidates_of_a_full_look_at_each_event() -> None:
    """Group.candidates with ``changing`` (the events of a body in progress after the first): the
    unprefiltered rules and the static buffers' hits kept from the first event, the growing
    buffers scanned from where they were, give what a look at every whole buffer gives."""
    from filters.ips.engine import _GROWING

    det = Detector(load_text(BODY_RULES, Variables.suricata_defaults()).rules)
    group = det.groups["app"]
    static = {k: v for k, v in BUFFERS.items() if k != "file.data"}
    body = b""
    memo: dict = {}
    for n, chunk in enumerate([b"..", b"bodymark", b"." * 3000, b"late", b"mark..", b"answermark"]):
        body += chunk
        bufs = dict(static, **{"file.data": [body]})
        addrs = (bytes([10, 0, 0, 1]), bytes([8, 8, 8, 8]))
        want = group.candidates(lambda name: bufs.get(name, []), det.infos, addrs, app="http", to_server=False)
        got = group.candidates(lambda name: bufs.get(name, []), det.infos, addrs, memo=memo,
                               changing=_GROWING if n else None, app="http", to_server=False)
        assert [i.rule.sid for i in got] == [i.rule.sid for i in want], n
    assert {i.rule.sid for i in want} >= {2, 3, 7, 9} and 8 not in {i.rule.sid for i in want}
