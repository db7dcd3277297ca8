"""Prefilter answers kept by buffer bytes (rule_groups.ScanCache): the candidates and the alerts
with the cache are those without it, over varied traffic, with a cache so small that it fills and
is emptied again and again, and across a reload (new prefilters: nothing kept from the old ones)."""
from __future__ import annotations

import functools
import random
from pathlib import Path

from filters.flow import FlowTable
from filters.ips.engine import Ips
from filters.ips import rule_groups
from filters.ips.netspec import Variables
from filters.ips.rule_groups import CACHED_BUFFERS, Detector, ScanCache
from filters.ips.rule_parser import LoadResult, load_text
from filters.packet import ACK, PSH, SYN
from filters.pipeline import Pipeline
from tests.filters.factories import CISN, SISN, tpacket
from tests.filters.ips.test_reload_state import ips_with, sids

NO_CACHE = dict(max_len=-1)  # no buffer is short enough: every answer is a scan


def _values(det: Detector, rng: random.Random) -> dict[str, list[bytes]]:
    """Per buffer of the app group's prefilters, a small pool of values (so that events repeat
    them), a quarter of which hold one of that buffer's fast patterns, some past the cache's
    length bound."""
    pools: dict[str, list[bytes]] = {}
    for (name, _, _), _pf in det.groups["app"].prefilters.items():
        pats = [i.rule.fast_pattern.pattern for i in det.groups["app"].rules
                if i.rule.fast_pattern is not None and i.rule.fast_pattern.buffer == name]
        pool = pools.setdefault(name, [])
        for _ in range(6):
            filler = bytes(rng.choice(b"abcdefghijklmnopqrstuvwxyz/.-: ") for _ in range(rng.randrange(0, 40)))
            if pats and rng.random() < 0.25:
                pat = rng.choice(pats)
                pat = pat.upper() if rng.random() < 0.5 else pat  # nocase patterns
                filler = filler[:len(filler) // 2] + pat + filler[len(filler) // 2:]
            if rng.random() < 0.1:
                filler += b"x" * 300  # too long to be kept
            pool.append(filler)
    return pools


def _events(det: Detector, n: int, seed: int) -> list[tuple[bool, dict[str, list[bytes]]]]:
    rng = random.Random(seed)
    pools = _values(det, rng)
    out = []
    for _ in range(n):
        bufs = {name: ([rng.choice(pool)] if rng.random() < 0.8 else []) for name, pool in pools.items()}
        out.append((rng.random() < 0.5, bufs))
    return out


def _candidates(det: Detector, events: list[tuple[bool, dict[str, list[bytes]]]], memo: bool) -> list[list[int]]:
    group = det.groups["app"]
    out = []
    for to_server, bufs in events:
        got = group.candidates(lambda name: bufs.get(name, []), det.infos, memo={} if memo else None,
                               app="http", to_server=to_server)
        out.append([i.idx for i in got])
    return out


def test_et_open_candidates_with_the_cache_are_those_without_it(et_open: LoadResult) -> None:
    rules = [r for r in et_open.rules if r.app_proto in (None, "http", "http1", "http2")]
    reference = Detector(rules, ScanCache(**NO_CACHE))
    events = _events(reference, 400, seed=15)
    want = _candidates(reference, events, memo=True)
    assert want == _candidates(reference, events, memo=False)
    assert sum(map(len, want)) > 100  # the traffic meets the rules' fast patterns
    for cache in (ScanCache(), ScanCache(max_entries=7), ScanCache(max_bytes=200)):
        det = Detector(rules, cache)
        for memo in (True, False):
            assert _candidates(det, events, memo) == want
        assert cache.counters["prefilter_cache.hits"] > 0, (cache.max_entries, cache.max_bytes, cache.counters)
        if cache.max_entries == 7 or cache.max_bytes == 200:
            assert cache.counters["prefilter_cache.clears"] > 10  # filled and emptied again and again
        assert cache.entries <= cache.max_entries and cache.bytes <= cache.max_bytes
    assert reference.scan_cache.counters["prefilter_cache.hits"] == 0


def test_only_short_repeating_buffers_are_kept() -> None:
    text = r'''
alert http any any -> any any (msg:"ua"; http.user_agent; content:"EvilBot"; sid:1; rev:1;)
alert http any any -> any any (msg:"uri"; http.uri; content:"/evil"; sid:2; rev:1;)
'''
    det = Detector(load_text(text, Variables.suricata_defaults()).rules, ScanCache(max_len=16))
    assert "http.user_agent" in CACHED_BUFFERS and "http.uri" not in CACHED_BUFFERS
    group, counters = det.groups["app"], det.scan_cache.counters

    def sids(bufs: dict[str, list[bytes]]) -> list[int]:
        return [i.rule.sid for i in group.candidates(lambda n: bufs.get(n, []), det.infos, app="http",
                                                     to_server=True)]

    for _ in range(3):
        assert sids({"http.user_agent": [b"x EvilBot"], "http.uri": [b"/evil"]}) == [1, 2]
        assert sids({"http.user_agent": [b"x" * 17 + b"EvilBot"]}) == [1]  # past max_len: scanned
    assert (counters["prefilter_cache.misses"], counters["prefilter_cache.hits"]) == (1, 2)
    assert det.scan_cache.entries == 1


# -- the engine: alerts over a keep-alive connection, and across a reload ------------------------------

UA_RULE = 'alert http any any -> any any (msg:"bad agent"; flow:to_server; http.user_agent; content:"EvilBot"; sid:{sid}; rev:1;)'
HOST_RULE = 'alert http any any -> any any (msg:"bad host"; http.host; content:"bad.example"; sid:31; rev:1;)'
SERVER_RULE = 'alert http any any -> any any (msg:"old server"; http.server; content:"Apache/1."; sid:32; rev:1;)'


def _connection(pipe: Pipeline, exchanges: list[tuple[bytes, bytes, bytes]],
                reload_at: int | None = None, new: Ips | None = None) -> list[list[int]]:
    pipe.process(tpacket(tcp_flags=SYN, seq=CISN, ack=0), object())
    pipe.process(tpacket(reply=True, tcp_flags=SYN | ACK, seq=SISN, ack=CISN + 1), object())
    pipe.process(tpacket(tcp_flags=ACK, seq=CISN + 1, ack=SISN + 1), object())
    c = s = 0
    got = []
    for n, (ua, host, server) in enumerate(exchanges):
        if n == reload_at and new is not None:
            pipe.replace_engines([new])
        req = b"GET /x HTTP/1.1\r\nHost: " + host + b"\r\nUser-Agent: " + ua + b"\r\n\r\n"
        got.append(sorted(sids(pipe, tpacket(tcp_flags=ACK | PSH, seq=CISN + 1 + c, ack=SISN + 1 + s, payload=req,
                                         ts=1.0 + n))))
        c += len(req)
        resp = b"HTTP/1.1 200 OK\r\nServer: " + server + b"\r\nContent-Length: 2\r\n\r\nok"
        got.append(sorted(sids(pipe, tpacket(reply=True, tcp_flags=ACK | PSH, seq=SISN + 1 + s, ack=CISN + 1 + c,
                                         payload=resp, ts=1.5 + n))))
        s += len(resp)
    return got


def test_engine_alerts_with_a_small_cache_are_those_without_it(tmp_path: Path, monkeypatch) -> None:
    rng = random.Random(7)
    uas = [b"Mozilla/5.0", b"EvilBot/2", b"curl/8.1", b"x-EVILBOT-y"]
    hosts = [b"www.example.org", b"bad.example", b"cdn.example.net"]
    servers = [b"nginx", b"Apache/1.3.29", b"Apache/2.4"]
    exchanges = [(rng.choice(uas), rng.choice(hosts), rng.choice(servers)) for _ in range(40)]
    rules = (UA_RULE.format(sid=30).replace('content:"EvilBot"', 'content:"EvilBot"; nocase'), HOST_RULE, SERVER_RULE)
    results = {}
    for label, kwargs in (("none", NO_CACHE), ("tiny", dict(max_entries=5)), ("default", {})):
        monkeypatch.setattr(rule_groups, "ScanCache", functools.partial(ScanCache, **kwargs))
        ips = ips_with(tmp_path, label, *rules)
        results[label] = _connection(Pipeline([ips], FlowTable()), exchanges)
        counters = ips.counters
        if label == "none":
            assert counters["prefilter_cache.hits"] == 0
        else:
            assert counters["prefilter_cache.hits"] > 0
        if label == "tiny":
            assert counters["prefilter_cache.clears"] > 0
    assert any(results["none"])
    assert results["tiny"] == results["none"] == results["default"]


def test_a_reload_drops_the_answers_of_the_old_prefilters(tmp_path: Path) -> None:
    """The same user agent, kept as "rule 0 hits" under the old rules, meets other rules after
    a reload: the answer comes from the new prefilters."""
    old = ips_with(tmp_path, "old", UA_RULE.format(sid=40))
    pipe = Pipeline([old], FlowTable())
    exchanges = [(b"EvilBot/2", b"www.example.org", b"nginx")] * 4
    new = ips_with(tmp_path, "new", HOST_RULE, UA_RULE.format(sid=41).replace("EvilBot", "GoodBot"))
    got = _connection(pipe, exchanges, reload_at=2, new=new)
    assert got == [[40], [], [40], [], [], [], [], []]
    assert old.counters["prefilter_cache.hits"] == 1 and new.counters["prefilter_cache.hits"] == 2  # agent, host
