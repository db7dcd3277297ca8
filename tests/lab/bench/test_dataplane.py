"""lab/bench/dataplane.py: parsing the tools' output, the rate search, the agent configurations, the kernel
floor, and the run's sections and notes (with a fake lab)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from lab.bench.dataplane import (
    KERNEL,
    agent_setups,
    engines_off,
    iperf_omitted_gbps,
    iperf_tcp_gbps,
    iperf_udp,
    parse_iperf,
    pair_order,
    parse_ping,
    ping_tail,
    search_rate,
    shipped_engines,
    skipped_rows,
)
from lab.bench.dataplane_report import FW_METRICS, IPS_METRICS
from lab.bench.host import BenchError
from lab.bench.offline import ET_OPEN_MISSING, et_open_files
from lab.bench.report import Goal, summarize, verdict_ok

BULK = next(m for m in FW_METRICS if m.key == "bulk_gbps")


def test_parse_ping() -> None:
    text = (
        "PING 198.51.100.10 (198.51.100.10) 56(84) bytes of data.\n"
        "64 bytes from 198.51.100.10: icmp_seq=1 ttl=63 time=0.330 ms\n"
        "64 bytes from 198.51.100.10: icmp_seq=2 ttl=63 time=0.127 ms\n"
        "rtt min/avg/max/mdev = 0.048/0.115/0.855/0.045 ms\n"
    )
    assert parse_ping(text) == [0.330, 0.127]


def test_ping_tail() -> None:
    stall = [0.1] * 50 + [40.0, 30.0, 20.0, 10.0] + [0.1] * 50 + [6.0]
    assert ping_tail(stall) == "slowest 40.0 ms; 5 of 105 replies over 5 ms, in 2 run(s) of consecutive replies"
    assert ping_tail([0.1, 0.2]) == "slowest 0.2 ms; 0 of 2 replies over 5 ms"


def test_parse_iperf() -> None:
    tcp = {"end": {"sum_received": {"bits_per_second": 9.0e9}, "sum_sent": {"bits_per_second": 9.1e9}}}
    assert iperf_tcp_gbps(parse_iperf(json.dumps(tcp))) == 9.0
    assert iperf_omitted_gbps(tcp) is None  # no -O: nothing omitted
    # -O 1 (iperf3 3.12 layout): the omitted interval is flagged, the end sums leave it out
    omitted = {"intervals": [
        {"sum": {"start": 0, "end": 1.0, "seconds": 1.0, "bytes": 1.0e9, "bits_per_second": 8.0e9, "omitted": True}},
        {"sum": {"start": 0, "end": 1.0, "seconds": 1.0, "bytes": 2.5e9, "bits_per_second": 20.0e9, "omitted": False}},
    ], **tcp}
    assert iperf_omitted_gbps(omitted) == 8.0 and iperf_tcp_gbps(omitted) == 9.0
    udp = {"end": {"sum": {"seconds": 2.0, "packets": 100_000, "lost_packets": 3}}}
    assert iperf_udp(parse_iperf(json.dumps(udp))) == (50_000.0, 3)
    with pytest.raises(BenchError, match="busy"):
        parse_iperf(json.dumps({"error": "the server is busy running a test"}))
    with pytest.raises(BenchError):
        parse_iperf("iperf3: error - unable to connect")


def test_search_rate_doubles_then_bisects() -> None:
    capacity = 70_000

    def probe(target: int) -> tuple[float, bool]:
        return float(target), target <= capacity

    best, limited, history = search_rate(probe, 20_000, 5)
    assert [h[0] for h in history] == [20_000, 40_000, 80_000, 60_000, 70_000]
    assert best == 70_000 and not limited


def test_search_rate_stops_when_the_generator_is_the_limit() -> None:
    def probe(target: int) -> tuple[float, bool]:
        return float(min(target, 50_000)), True

    best, limited, history = search_rate(probe, 20_000, 5)
    assert best == 50_000 and limited
    assert [h[0] for h in history] == [20_000, 40_000, 80_000]


def test_search_rate_goes_down_when_the_first_probe_fails() -> None:
    def probe(target: int) -> tuple[float, bool]:
        return float(target), target <= 12_000

    best, _, history = search_rate(probe, 20_000, 4)
    assert [h[0] for h in history] == [20_000, 10_000, 15_000, 12_500]
    assert best == 10_000


def test_agent_setups_with_and_without_et_open(tmp_path: Path) -> None:
    (tmp_path / "b.rules").write_text("")
    (tmp_path / "a.rules").write_text("")
    (tmp_path / "classification.config").write_text("")
    fw, ips = agent_setups(tmp_path, ["firewall", "ips", "webfilter"])
    assert (fw.mode, fw.memory, fw.skipped) == ("fw", True, "")
    assert fw.overrides == {"engines.ips.enabled": False, "engines.webfilter.enabled": False}
    assert "`engines.ips.enabled: false`, `engines.webfilter.enabled: false`" in fw.description
    assert ips.overrides == {"engines.webfilter.enabled": False,
                             "engines.ips.rule_files": [str(tmp_path / "a.rules"), str(tmp_path / "b.rules")],
                             "engines.ips.classification": str(tmp_path / "classification.config")}
    assert ips.start_timeout == 120 and ips.memory and not ips.skipped and ips.flow_rate < fw.flow_rate
    assert et_open_files(tmp_path)[1] == tmp_path / "classification.config"
    _, missing = agent_setups(tmp_path / "nowhere", ["firewall", "ips"])
    assert missing.skipped.startswith(ET_OPEN_MISSING) and missing.overrides == {}
    assert et_open_files(tmp_path / "nowhere") == ([], None)
    fw_only, _ = agent_setups(tmp_path, ["firewall"])
    assert fw_only.overrides == {} and "with no change" in fw_only.description


def test_engines_off_and_the_shipped_config() -> None:
    assert engines_off(["firewall", "ips", "webfilter"], {"firewall"}) == {
        "engines.ips.enabled": False, "engines.webfilter.enabled": False}
    assert engines_off(["firewall", "ips"], {"firewall", "ips"}) == {}
    assert {"firewall", "ips"} <= set(shipped_engines())


def test_goals_per_configuration() -> None:
    fw = {m.key: m.goal for m in FW_METRICS}
    assert fw["bulk_gbps"] == Goal("min_ratio", 0.9) and fw["conn_rate"] == Goal("min_ratio", 0.3)
    assert fw["ping_p50"] == Goal("max_delta", 0.2) and fw["udp_pps"] is None and "rss_mib" in fw
    ips = {m.key: m.goal for m in IPS_METRICS}
    assert ips["bulk_gbps"] == Goal("min_ratio", 0.8)
    assert ips["conn_rate"] is None and ips["ping_p50"] is None and ips["rss_mib"] is None
    bulk_ips = next(m for m in IPS_METRICS if m.key == "bulk_gbps")
    assert summarize(bulk_ips, [10.0], [8.5]).verdict == "pass"
    assert summarize(BULK, [10.0], [8.5]).verdict == "FAIL"


def test_skipped_rows_and_exit_verdicts() -> None:
    _, ips = agent_setups(Path("/nonexistent"))
    rows = skipped_rows(ips)
    assert [r.metric.key for r in rows] == [m.key for m in IPS_METRICS]
    assert {r.verdict for r in rows} == {ET_OPEN_MISSING}
    assert all(verdict_ok(v) for v in ("pass", "reported", ET_OPEN_MISSING))
    assert not any(verdict_ok(v) for v in ("FAIL", "error"))


def test_floor_ruleset_is_the_agents_jump_and_fast_path_compare() -> None:
    from lab.bench.dataplane import KERNEL_CHAIN, floor_ruleset
    from agent.dataplane.ruleset import DataplaneSpec, jump_rule, render
    from filters.firewall import parse_policy

    text = floor_ruleset("br0").splitlines()
    assert text[0] == "*filter" and text[-1] == "COMMIT"
    spec = DataplaneSpec("br0", "lan0", "wan0", queue_base=0, workers=2, fail_open=True, nflog_group=17,
                         stream_depth=1 << 20)
    # the same jump and the same first compare as the agent's ruleset: only the queue is left out
    assert text[2] == "-A FORWARD " + " ".join(jump_rule(spec)).replace("VCR-FWD", KERNEL_CHAIN)
    agent_first = next(l for l in render(spec, parse_policy({}), 4).splitlines() if l.startswith("-A VCR-FWD"))
    assert text[3] == agent_first.replace("VCR-FWD", KERNEL_CHAIN)
    assert text[4] == f"-A {KERNEL_CHAIN} -j CONNMARK --set-xmark 0x10000000/0x70000000"
    assert not any("NFQUEUE" in l for l in text)


class _FakeLab:
    hosts = {"web": type("H", (), {"ipv4": "198.51.100.10"})()}


def test_kernel_floor_section_compares_floor_to_bare_and_agent_to_floor(tmp_path: Path) -> None:
    from lab.bench.dataplane import BRNF, KERNEL, KERNEL_TITLE, Bench
    from lab.bench.report import render_table

    setups = [s for s in agent_setups(Path("/nonexistent")) if s.mode == "fw"]
    bench = Bench(_FakeLab(), 3, 5.0, tmp_path, setups)  # type: ignore[arg-type]
    assert bench.modes == ["bare", BRNF, KERNEL, "fw"]
    assert [name for name, _, _ in bench.scenarios(KERNEL)] == ["bulk TCP"]
    assert [name for name, _, _ in bench.scenarios(BRNF)] == ["bulk TCP"]
    bench.samples["bare"]["bulk_gbps"] = [20.0, 22.0, 21.0]
    bench.samples[BRNF]["bulk_gbps"] = [19.0, 18.0, 18.0]
    bench.samples[KERNEL]["bulk_gbps"] = [17.0, 18.0, 16.0]
    bench.samples["fw"]["bulk_gbps"] = [16.0, 18.0, 17.0]
    secs = bench.sections()
    assert [s.title for s in secs] == ["Agent, firewall only", KERNEL_TITLE]
    floor = secs[1]
    assert [(r.bare, r.agent, r.compare, r.verdict) for r in floor.rows] == [
        (21.0, 18.0, "0.86×", "reported"), (21.0, 17.0, "0.81×", "reported"), (17.0, 17.0, "1.00×", "reported"),
        (None, None, "—", "error")]  # the paired goal row, not measured here
    bench.pairs = [(20.0, 19.8), (15.0, 15.3)] * 5
    goal = bench.kernel_section().rows[-1]
    assert goal.metric.key == "floor_pairs" and goal.metric.goal == Goal("min_ratio", 0.97, "floor")
    assert (goal.verdict, goal.bare, goal.agent) == ("pass", 17.5, 17.55)
    assert goal.compare == "1.00× (median of 10 pairs; 95% interval 0.99–1.02×)"
    assert "paired runs (the goal): per pair in run order, floor -> agent Gbit/s (ratio): 20.00 -> 19.80 (0.99×); " \
        "15.00 -> 15.30 (1.02×)" in "\n".join(bench.run_notes())
    table = render_table(floor.rows, floor.headers)
    assert "Baseline (median)" in table and "against the kernel floor" in table and "br_netfilter alone" in table
    note = next(n for n in bench.run_notes() if n.startswith(KERNEL_TITLE))
    assert "br_netfilter alone 0.95×, 0.82×, 0.86×" in note
    assert "the floor 0.85×, 0.82×, 0.76×" in note and "0.94×, 1.00×, 1.06×" in note


def test_settle_waits_for_the_queues_to_drain(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from lab.bench.dataplane import Bench

    def line(q: int, waiting: int) -> str:
        return f"    {q}  1234  {waiting} 2 65531  0  0  {1000 + q}  1"

    backlog = [(300, 40), (120, 0), (0, 0), (0, 0), (0, 0)]  # queue 0 and 1 waiting, per read

    class Lab(_FakeLab):
        reads = 0

        def exec(self, host: str, argv: list[str], **kw: object) -> SimpleNamespace:
            w0, w1 = backlog[min(self.reads, len(backlog) - 1)]
            self.reads += 1
            return SimpleNamespace(stdout="\n".join([line(0, w0), line(1, w1)]))

    lab = Lab()
    bench = Bench(lab, 1, 5.0, tmp_path, [s for s in agent_setups(Path("/nonexistent")) if s.mode == "fw"])  # type: ignore[arg-type]
    bench.settle("fw", "latency")
    assert lab.reads == 4  # two reads with packets waiting, then two empty ones in a row
    assert bench.settles == []  # well under 0.1 s: not worth a note
    backlog[:] = [(5, 0)]  # never drains
    import lab.bench.dataplane as mod

    old, mod.SETTLE_TIMEOUT = mod.SETTLE_TIMEOUT, 0.1
    try:
        bench.settle("fw", "latency")
    finally:
        mod.SETTLE_TIMEOUT = old
    assert bench.settles == ["fw before latency: 5 packets still queued after 0.1 s"]


def test_a_partial_run_measures_only_the_chosen_scenarios_and_modes(tmp_path: Path) -> None:
    from lab.bench.dataplane import Bench, Selection

    setups = [s for s in agent_setups(Path("/nonexistent")) if s.mode == "fw"]
    only = Selection.parse("udp,latency", "fw")
    bench = Bench(_FakeLab(), 1, 3.0, tmp_path, setups, only)  # type: ignore[arg-type]
    # the floors only measure bulk TCP: with no bulk scenario they are left out; bare stays as the baseline
    assert bench.modes == ["bare", "fw"]
    assert [name for name, _, _ in bench.scenarios("fw")] == ["latency", "small packets"]
    bench.samples["bare"]["udp_pps"] = [100_000.0]
    bench.samples["fw"]["udp_pps"] = [90_000.0]
    [section] = bench.sections()  # the rows of what was measured: no "error" rows for the rest
    assert {r.metric.key for r in section.rows} == {"ping_p50", "ping_p99", "rr_p50", "rr_p99", "udp_pps"}
    assert next(r for r in section.rows if r.metric.key == "udp_pps").agent == 90_000.0
    assert Selection.parse(None, None) is None
    with pytest.raises(BenchError, match="unknown scenario pings"):
        Selection.parse("udp,pings", None)


def test_a_partial_run_does_not_overwrite_the_benchmarks_document() -> None:
    import argparse

    from lab.bench.dataplane import run_bench

    args = argparse.Namespace(runs=1, seconds=3.0, out=None, prefix="vbt", scenarios="udp", modes=None)
    assert run_bench(args) == 2  # refused before building anything: --out is required


def test_pair_order_alternates_which_mode_goes_first() -> None:
    assert pair_order(4) == [("fw", KERNEL), (KERNEL, "fw"), ("fw", KERNEL), (KERNEL, "fw")]
    flat = [m for pair in pair_order(10) for m in pair]
    switches = sum(1 for a, b in zip(flat, flat[1:]) if a != b)
    assert switches == 10 and flat.count("fw") == flat.count(KERNEL) == 10  # 11 set-ups for 20 runs


def test_floor_pairs_set_up_each_mode_once_per_run_of_it_and_drop_a_broken_pair(tmp_path: Path) -> None:
    import contextlib
    from typing import Iterator

    from lab.bench.dataplane import Bench

    bench = Bench(_FakeLab(), 1, 5.0, tmp_path, [s for s in agent_setups(Path("/nonexistent")) if s.mode == "fw"])  # type: ignore[arg-type]
    setups: list[tuple[str, object]] = []
    runs: list[tuple[str, int]] = []

    @contextlib.contextmanager
    def mode(mode: str, run: object, starts: list[str] | None = None) -> Iterator[None]:
        assert starts is bench.pair_starts  # the blocks' agent starts stay apart
        setups.append((mode, run))
        if (mode, run) == (KERNEL, "pair5"):
            raise RuntimeError("bridge busy")
        yield

    def pair_run(mode: str, i: int) -> float:
        runs.append((mode, i))
        if (mode, i) == ("fw", 2):
            raise RuntimeError("iperf3 printed no JSON")
        return 10.0 + i + (0.5 if mode == "fw" else 0.0)

    bench.mode = mode  # type: ignore[method-assign]
    bench.pair_run = pair_run  # type: ignore[method-assign]
    bench.floor_pairs(6)
    assert setups == [("fw", "pair1"), (KERNEL, "pair1"), ("fw", "pair2"), (KERNEL, "pair3"), ("fw", "pair4"),
                      (KERNEL, "pair5"), ("fw", "pair6")]
    assert runs == [("fw", 0), (KERNEL, 0), (KERNEL, 1), ("fw", 1), ("fw", 2), (KERNEL, 2), (KERNEL, 3), ("fw", 3),
                    ("fw", 4), ("fw", 5)]
    # pair 3 lost its agent run, pairs 5 and 6 their floor run (the set-up failed): three complete pairs
    assert bench.pairs == [(10.0, 10.5), (11.0, 11.5), (13.0, 13.5)]
    assert bench.pair_errors == ["pair 3, fw: iperf3 printed no JSON", "pair 5, kernel: bridge busy"]


def test_a_partial_run_of_the_paired_floor_goal(tmp_path: Path) -> None:
    from lab.bench.dataplane import KERNEL_TITLE, Bench, Selection

    setups = agent_setups(Path("/nonexistent"))
    bench = Bench(_FakeLab(), 1, 5.0, tmp_path, setups, Selection.parse("floor", "fw,kernel"))  # type: ignore[arg-type]
    assert bench.modes == [] and bench.wants_pairs()  # no block: the pairs set up their own modes
    bench.pairs = [(20.0, 19.0)] * 10
    [section] = bench.sections()
    assert section.title == KERNEL_TITLE
    assert [(r.metric.key, r.verdict) for r in section.rows] == [("floor_pairs", "FAIL")]
    # every mode (no --modes) measures it too; without the floor's mode or the scenario it is not measured
    assert Bench(_FakeLab(), 1, 5.0, tmp_path, setups, Selection.parse("floor", None)).wants_pairs()  # type: ignore[arg-type]
    assert not Bench(_FakeLab(), 1, 5.0, tmp_path, setups, Selection.parse("floor", "fw")).wants_pairs()  # type: ignore[arg-type]
    bulk = Bench(_FakeLab(), 1, 5.0, tmp_path, setups, Selection.parse("bulk", "fw,kernel"))  # type: ignore[arg-type]
    assert not bulk.wants_pairs()
    # the kernel section of a partial run has the rows of the modes it measured (no brnf here)
    assert [r.metric.label.split(": ")[1] for r in bulk.sections()[1].rows] == [
        "kernel floor against the bare bridge", "agent, firewall only, against the kernel floor"]
    assert Bench(_FakeLab(), 1, 5.0, tmp_path, setups).wants_pairs()  # type: ignore[arg-type]  # make bench


def test_the_method_says_how_the_paired_goal_is_measured_and_judged() -> None:
    from lab.bench.dataplane import FLOOR_PAIRS, METHOD, _interval_text

    text = next(m for m in METHOD if "paired" in m)
    assert "`--scenarios floor`" in text and f"{FLOOR_PAIRS} pairs" in text and "pass when the whole interval" in text
    assert _interval_text(10) == "with 10 pairs, from the 2nd smallest to the 2nd largest ratio, 97.9% coverage"
    assert _interval_text(12) == "with 12 pairs, from the 3rd smallest to the 3rd largest ratio, 96.1% coverage"
    assert _interval_text(5) == "5 pairs are too few for one"
