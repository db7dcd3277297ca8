"""The soak's plan, analysis and report (lab/bench/soak.py, lab/bench/soak_report.py), without the lab."""
from __future__ import annotations

import pytest

from lab.bench.soak import SoakOptions, parse_bound_queues, plan_events, warmup_for
from lab.bench.soak_report import (
    SOAK_SID,
    EventRow,
    ProbeStats,
    Sample,
    SoakResult,
    Tolerance,
    alarm_matches,
    build_checks,
    match_alarms,
    parse_probes,
    probe_stats,
    render_markdown,
    render_terminal,
    slot_rows,
    thirds,
    timeline,
)

KINDS = {"sighup", "remote-config", "bundle-ips", "bundle-ti", "outage-begin", "outage-end", "kill"}


# ----------------------------------------------------------------------------- plan
@pytest.mark.parametrize("duration", [120, 300, 600])
def test_short_plan_has_every_event_and_alike_first_and_last_thirds(duration: float):
    w, ev = plan_events(duration)
    assert w == warmup_for(duration) and {e.kind for e in ev} == KINDS
    assert [e.t for e in ev] == sorted(e.t for e in ev) and all(0 < e.t < duration for e in ev)
    warm = [e.kind for e in ev if e.t < w]
    assert warm == ["kill", "sighup"]  # a kill, then a reload: every worker owns its engines before the baseline
    (a0, a1), (b0, b1) = thirds(w, duration)
    first = [(e.kind, round((e.t - a0) / (a1 - a0), 2)) for e in ev if a0 <= e.t < a1]
    last = [(e.kind, round((e.t - b0) / (b1 - b0), 2)) for e in ev if b0 <= e.t < b1]
    assert [k for k, _ in first] == ["bundle-ips", "kill"] and [k for k, _ in last] == ["bundle-ti", "kill"]
    assert [p for _, p in first] == [p for _, p in last]
    kills = [e.arg % 2 for e in ev if e.kind == "kill"]
    assert kills == [0, 1, 0, 1]
    begin = next(e.t for e in ev if e.kind == "outage-begin")
    end = next(e.t for e in ev if e.kind == "outage-end")
    rc = next(e.t for e in ev if e.kind == "remote-config")
    assert begin < end < rc  # a remote revision needs the center for its confirm window


def test_long_plan_repeats_the_events_and_keeps_remote_revisions_out_of_outages():
    w, ev = plan_events(1800)
    assert w == 300
    outages = [(b.t, e.t, b.arg) for b, e in zip([x for x in ev if x.kind == "outage-begin"],
                                                   [x for x in ev if x.kind == "outage-end"])]
    assert [(round(e - b), m) for b, e, m in outages] == [(180, "stop"), (180, "cut")]
    for e in ev:
        if e.kind in ("remote-config", "bundle-ips", "bundle-ti"):  # they need the center
            assert not any(b - 60 <= e.t <= end for b, end, _ in outages), e
    reloads = sorted(e.t for e in ev if e.kind in ("sighup", "remote-config"))
    assert len(reloads) >= 6 and max(b - a for a, b in zip(reloads, reloads[1:])) <= 300
    assert sum(e.kind == "kill" for e in ev) >= 5
    assert sum(e.kind.startswith("bundle") for e in ev) >= 4
    assert {e.kind for e in ev if e.t < w} >= {"sighup", "kill"}


def test_options_for_ci_and_for_short_runs():
    ci = SoakOptions.for_ci(120, "t1sk", None)  # type: ignore[arg-type]
    assert ci.ips == "local" and ci.out is None and not ci.noise and ci.sample_every == 1.0
    assert ci.tol.mem_pct > Tolerance().mem_pct
    assert SoakOptions.for_duration(1800).sample_every == 5.0


def test_bound_queues_are_read_from_proc_lines():
    text = ("    0  31337     0 2 65535     0     0       12  1\n"
            "    1 -4181     0 2 65535     0     0        7  1\n"
            "    1  40001     0 2 65535     0     0        7  1\n")
    assert parse_bound_queues(text) == {0: 31337, 1: 40001}


# ----------------------------------------------------------------------------- memory, fds, threads
def series(slot: str, values: list[float], *, pid: int = 10, fds: list[int] | None = None, step: float = 10.0) -> list[Sample]:
    return [Sample(i * step, slot, pid, v, v / 2, (fds or [20] * len(values))[i], 3) for i, v in enumerate(values)]


def test_flat_memory_passes_and_growth_fails():
    flat = series("daemon", [100.0] * 30) + series("worker 0", [200.0] * 30, pid=11)
    rows = slot_rows(flat, 60, 300, Tolerance())
    assert [r.slot for r in rows] == ["daemon", "worker 0", "all"] and all(r.ok for r in rows)
    assert rows[-1].first["pss"] == pytest.approx(150.0)
    grow = series("daemon", [100.0] * 30) + series("worker 0", [200.0 + 6 * i for i in range(30)], pid=11)
    rows = slot_rows(grow, 60, 300, Tolerance())
    assert rows[0].ok and not rows[1].ok and "RSS grew" in rows[1].problems[0] and not rows[-1].ok


def test_noise_within_the_tolerance_passes():
    wobble = series("worker 0", [200.0, 240.0] * 15)  # reload peaks: the median of each third moves little
    assert slot_rows(wobble, 60, 300, Tolerance())[0].ok


def test_fd_leak_fails_and_a_restarted_worker_continues_its_slot():
    leak = series("daemon", [100.0] * 30, fds=[20 + i for i in range(30)])
    rows = slot_rows(leak, 60, 300, Tolerance())
    assert not rows[0].ok and any(p.startswith("fds") for p in rows[0].problems)
    restarted = series("worker 0", [200.0] * 15, pid=11) + [
        Sample(150 + i * 10.0, "worker 0", 12, 190.0, 95.0, 20, 3) for i in range(15)]
    row = slot_rows(restarted, 60, 300, Tolerance())[0]
    assert row.ok and row.pids == [11, 12]


def test_memory_compares_like_with_like_and_leaves_busy_samples_out():
    # first third: reloaded (240) then killed -> fresh (180); last third: fresh only at 185, plus a busy reload peak
    a = [Sample(60 + i * 5.0, "worker 0", 11, 240.0, 120.0, 20, 2, state="restarted, reloaded 2+") for i in range(8)] + \
        [Sample(100 + i * 5.0, "worker 0", 12, 180.0, 90.0, 20, 2, state="restarted") for i in range(8)]
    b = [Sample(220 + i * 5.0, "worker 0", 13, 185.0, 92.0, 20, 2, state="restarted") for i in range(8)] + \
        [Sample(262.0, "worker 0", 13, 400.0, 300.0, 20, 3, state="restarted", busy=True)]
    row = slot_rows(a + b, 60, 300, Tolerance(mem_pct=0.05, mem_mib=8))[0]
    assert row.ok and row.compared.startswith("restarted:") and row.first["rss"] == 180.0 and row.peak_rss == 400.0
    leak = [Sample(s.t, s.slot, s.pid, s.rss + 100, s.pss + 100, s.fds, s.threads, state=s.state) for s in b]
    assert not slot_rows(a + leak, 60, 300, Tolerance(mem_pct=0.05, mem_mib=8))[0].ok


def test_workers_are_classified_by_the_reloads_since_they_started():
    from lab.bench.soak_report import classify

    samples = [Sample(t, "worker 0", 11 if t < 50 else 12, 100.0, 50.0, 20, 2) for t in range(0, 100, 10)]
    samples.append(Sample(0, "daemon", 10, 100.0, 50.0, 20, 2))
    got = {(s.t, s.slot): s.state for s in classify(samples, [15.0, 35.0, 65.0])}
    assert got[(0, "daemon")] == "" and got[(0, "worker 0")] == "forked"
    assert (got[(10, "worker 0")], got[(20, "worker 0")], got[(40, "worker 0")]) == (
        "forked", "forked, reloaded once", "forked, reloaded 2+")
    assert (got[(50, "worker 0")], got[(70, "worker 0")]) == ("restarted", "restarted, reloaded once")


def test_timeline_has_a_line_per_bin():
    cells = timeline(series("daemon", [100.0] * 12), 120, bins=4)
    assert len(cells) == 5 and cells[1][0] == "0–30" and cells[1][1].startswith("100 / 50")


# ----------------------------------------------------------------------------- prober
def test_gaps_between_successful_probes():
    probes = [(100.0 + i * 0.1, 1.0) for i in range(10)] + [(101.0 + i * 0.1, None) for i in range(5)] + \
             [(101.5 + i * 0.1, 2.0) for i in range(10)]
    st = probe_stats("tcp", probes, 0.1, start=100.0, end=102.4)
    assert st.probes == 25 and st.failed == 5
    assert st.max_gap == pytest.approx(0.6) and st.max_gap_at == pytest.approx(101.5)
    assert len(st.long_gaps) == 1 and st.rtt_p50 is not None
    never = probe_stats("udp", [(100.0, None)], 0.1, start=99.0, end=130.0)
    assert never.max_gap == pytest.approx(31.0)


def test_probe_lines_are_parsed():
    by = parse_probes(["tcp 1.5 2.25", "udp 1.5 -1", "held-broken 3.0 0", "garbage"])
    assert by["tcp"] == [(1.5, 2.25)] and by["udp"] == [(1.5, None)] and len(by["held-broken"]) == 1


# ----------------------------------------------------------------------------- alarms
def alert(sport: int, **extra) -> dict:
    rec = {"event_type": "alert", "src_ip": "192.0.2.12", "src_port": sport, "proto": "TCP",
           "alert": {"signature": "x", "signature_id": 1}}
    rec.update(extra)
    return rec


def test_every_action_is_matched_by_source_and_kind():
    acts = [{"kind": "telnet", "src_ip": "192.0.2.12", "sport": 1000, "result": "refused", "as_expected": True},
            {"kind": "ips-http", "src_ip": "192.0.2.12", "sport": 1001, "result": "404", "as_expected": True},
            {"kind": "wf-sni", "src_ip": "192.0.2.12", "sport": 1002, "result": "reset", "as_expected": True},
            {"kind": "ips-dns", "skipped": "paused"}]
    eve = [alert(1000, alert={"signature": "VCR firewall: block outbound telnet"}),
           alert(1001, alert={"signature_id": SOAK_SID}),
           alert(1002, webfilter={"where": "tls_sni"}),
           {"event_type": "drop", "src_ip": "192.0.2.12", "src_port": 1002, "drop": {"signature": "wf"}},
           {"event_type": "update", "update": {"kind": "ips", "action": "activated", "reason": "activated"}}]
    res = match_alarms(acts, eve, [dict(r) for r in eve], ["a", "b", "c", "d", "e"])
    assert res.expected == 3 and res.matched_eve == 3 and res.matched_center == 3 and not res.problems
    assert res.skipped_paused == 1 and res.related == [("drop: wf", 1)] and res.other == [("update: ips activated activated", 1)]


def test_missing_extra_and_center_differences_are_problems():
    acts = [{"kind": "telnet", "src_ip": "192.0.2.12", "sport": p, "result": "refused"} for p in (1, 2, 3)]
    tel = {"signature": "VCR firewall: block outbound telnet"}
    eve = [alert(1, alert=tel), alert(2, alert=tel), alert(2, alert=tel, timestamp="later")]
    res = match_alarms(acts, eve, eve[:2], ["a", "b", "b"])
    row = res.kinds[0]
    assert row.actions == 3 and len(row.missing) == 1 and row.extra == 1 and row.in_eve == 3 and row.at_center == 2
    assert res.missing_at_center == 1 and res.duplicate_ids == 1
    text = "\n".join(res.problems)
    assert "1 of 3 actions raised no alarm" in text and "twice at the center" in text


def test_a_record_of_another_kind_on_the_same_socket_is_not_the_alarm():
    assert not alarm_matches("wf-dns", alert(5, atp={"where": "dns"}), {})
    assert alarm_matches("ti-latest", alert(5, atp={"where": "dns"}), {})
    assert alarm_matches("bundle-latest", alert(5, alert={"signature_id": 9410002}), {"sid": 9410002})
    assert not alarm_matches("bundle-latest", alert(5, alert={"signature_id": 9410001}), {"sid": 9410002})
    assert not alarm_matches("telnet", {"event_type": "drop", "alert": {"signature": "VCR firewall: block outbound telnet"}}, {})


# ----------------------------------------------------------------------------- checks and report
def result(**kw) -> SoakResult:
    samples = series("daemon", [100.0] * 12) + series("worker 0", [200.0] * 12, pid=11)
    tol = Tolerance()
    slots = slot_rows(samples, 30, 120, tol)
    probes = [ProbeStats("tcp", 1000, 0, 0.2, 1005.0, 1.0, 2.0, 3.0, []), ProbeStats("udp", 1000, 0, 0.15, 1005.0, 1.0, 2.0, 3.0, []),
              ProbeStats("held", 1000, 0, 0.1, 1005.0, 0.5, 0.6, 0.7, [])]
    acts = [{"kind": "telnet", "src_ip": "192.0.2.12", "sport": 1, "result": "refused", "as_expected": True}]
    eve = [alert(1, alert={"signature": "VCR firewall: block outbound telnet"})]
    alarms = match_alarms(acts, eve, eve, ["a"])
    office = {"http": {"ok": 100, "failed": 0, "bytes": 1000, "ms_max": 5.0, "failures": {}}}
    events = [EventRow(10, 10.2, 3.0, "kill", "worker 0: pid 1 -> 2", True)]
    args = dict(slots=slots, probes=probes, alarms=alarms, office=office, events=events, restarts=[5.0], kills_planned=1, tol=tol)
    args.update(kw)
    checks = build_checks(**args)
    return SoakResult("Soak", "python -m lab soak --minutes 2", "2026-12-07", 120, 30, 150, {"nproc": "2"}, ["config"], [], tol,
                      args["slots"], timeline(samples, 120), args["probes"], args["alarms"], args["office"], args["events"],
                      args["restarts"], checks, t0=1000.0)


def test_checks_pass_and_the_report_renders():
    res = result()
    assert res.ok, res.failures()
    md = render_markdown(res, ["method line"])
    for heading in ("## Checks", "## Memory, file descriptors and threads per process", "## Alarms: generated, written, stored at the center",
                    "## Connectivity through the bridge (fail-open)", "## Events", "## Method"):
        assert heading in md
    assert "Result: **pass**" in md and "| worker 0 |" in md and "- method line" in md
    assert "soak: PASS" in render_terminal(res)


def test_a_long_gap_a_lost_alarm_or_a_missing_restart_fails():
    gap = [ProbeStats("tcp", 1000, 30, 3.2, 1050.0, 1.0, 2.0, 3.0, [(1050.0, 3.2)]),
           ProbeStats("held", 1000, 0, 0.1, 1005.0, 0.5, 0.6, 0.7, [])]
    res = result(probes=gap)
    assert not res.ok and any("longest gap" in f and "3.20 s" in f for f in res.failures())
    assert "Result: **FAIL**" in render_markdown(res, [])
    lost = match_alarms([{"kind": "telnet", "src_ip": "192.0.2.12", "sport": 1, "result": "refused"}], [], [], [])
    assert not result(alarms=lost).ok
    assert not result(restarts=[-1.0]).ok
    assert not result(kills_planned=2).ok


def test_soak_command_line():
    from lab.bench.soak import command_line
    from lab.cli import build_parser

    args = build_parser().parse_args(["soak"])
    assert (args.minutes, args.ips, args.no_doc, args.out) == (30.0, None, False, "docs/benchmarks.md")
    assert command_line(args, "et-open") == "`make soak` (= `python -m lab soak --minutes 30`)"
    args = build_parser().parse_args(["soak", "--minutes", "5", "--ips", "local", "--no-doc"])
    assert command_line(args, "local") == "`python -m lab soak --minutes 5 --ips local`" and args.no_doc


def test_round_trips_during_reloads_are_told_apart():
    from lab.bench.soak_report import phase_note, rtt_by_phase

    probes = [(float(t), 50.0 if 10 <= t <= 20 else 1.0) for t in range(30)] + [(15.5, None)]
    split = rtt_by_phase(probes, [(10.0, 20.0)])
    assert split["during"]["probes"] == 12 and split["during"]["failed"] == 1 and split["during"]["p50"] == 50.0
    assert split["otherwise"]["p99"] == pytest.approx(1.0)
    assert "10 s in all" in phase_note(split, 10.0)


def test_probes_sent_at_the_same_moment_sort_by_time_only():
    st = probe_stats("held", [(5.0, None), (5.0, 1.0), (4.9, 2.0)], 0.1, start=4.9, end=5.0)
    assert st.probes == 3 and st.failed == 1


def test_a_reused_source_port_matches_only_the_alarm_of_its_own_time():
    tel = {"signature": "VCR firewall: block outbound telnet"}
    acts = [{"kind": "telnet", "src_ip": "192.0.2.12", "sport": 5000, "t": 1796600000.0, "ms": 3.0, "result": "refused"},
            {"kind": "telnet", "src_ip": "192.0.2.12", "sport": 5000, "t": 1796600600.0, "ms": 3.0, "result": "refused"}]
    eve = [alert(5000, alert=tel, timestamp="2026-12-07T00:13:20.100000+0000"),  # 1796602400.1: neither
           alert(5000, alert=tel, timestamp="2026-12-07T00:03:20.100000+0000"),  # 1796601800.1: neither
           alert(5000, alert=tel, timestamp="2026-12-06T23:33:20.500000+0000"),  # 1796600000.5: the first
           alert(5000, alert=tel, timestamp="2026-12-06T23:43:20.900000+0000")]  # 1796600600.9: the second
    res = match_alarms(acts, eve, eve, ["a", "b", "c", "d"])
    assert res.kinds[0].in_eve == 2 and not res.kinds[0].extra and not res.kinds[0].missing
    assert res.other == [("alert: VCR firewall: block outbound telnet", 2)]


def test_an_action_whose_connection_never_opened_expects_no_alarm():
    acts = [{"kind": "inbound", "src_ip": "203.0.113.66", "sport": 7, "result": "connect-timeout", "delivered": False,
             "as_expected": None},
            {"kind": "inbound", "src_ip": "203.0.113.66", "sport": 8, "result": "timeout", "as_expected": True}]
    eve = [{"event_type": "alert", "src_ip": "203.0.113.66", "src_port": 8, "alert": {"signature_id": 9200001}}]
    res = match_alarms(acts, eve, eve, ["a"])
    row = res.kinds[0]
    assert (row.actions, row.undelivered, row.in_eve, len(row.missing), row.misbehaved) == (1, 1, 1, 0, 0)
    assert "(+1 not sent)" in render_markdown(result(alarms=res), [])


def test_the_raw_syn_has_a_valid_checksum():
    import socket
    import struct

    from filters.packet import inet_checksum
    from lab.bench.soak_roles import syn_segment

    src, dst = "192.0.2.12", "203.0.113.99"
    pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, socket.IPPROTO_TCP, 20)
    hdr = syn_segment(src, dst, 45000, 4443, 12345)
    assert inet_checksum(pseudo + hdr) == 0  # a correct checksum sums to all ones
    scapy = pytest.importorskip("scapy.all")
    ref = scapy.IP(bytes(scapy.IP(src=src, dst=dst) / scapy.TCP(sport=45000, dport=4443, seq=12345, flags="S", window=64240)))
    assert bytes(ref[scapy.TCP]) == hdr  # the same SYN as scapy builds it, checksum included
