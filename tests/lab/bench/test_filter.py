"""lab/bench/filter.py, its pure parts: the look-up mixes, the figures, verdicts and the report."""
from __future__ import annotations

import ipaddress
import random
from pathlib import Path

import pytest

from lab.bench.filter import (
    COLUMNS,
    CONN_GOAL_RATIO,
    DNS_GOAL_MS,
    LAB_METRICS,
    LOOKUP_GOAL,
    SUFFIXES,
    FilterReport,
    agent_overrides,
    category_lines,
    command_line,
    dns_names,
    feed_files,
    intel_lines,
    ip_mix,
    lab_rows,
    line_cells,
    made_up,
    name_mix,
    near_miss,
    plain_name,
    rates,
    read_ut1,
    render_markdown,
    render_terminal,
    rtt_stats,
    url_mix,
    with_subdomain,
)
from lab.bench.report import Row, samples_cells

LISTED = ["evil.example", "bad.example.com", "phish.co.jp", "x.y.z.example.net"]
URLS = [("host.example", "/bad/path"), ("other.example", "/dl/setup.exe")]


def _is_under(name: str, base: str) -> bool:
    return name == base or name.endswith("." + base)


# ----------------------------------------------------------------------------- mixes
def test_name_mix_has_the_requested_shares_and_is_reproducible():
    items = name_mix(LISTED, URLS, 1000, random.Random(7))
    assert len(items) == 1000
    kinds = {k: sum(1 for i in items if i[0] == k) for k in ("listed", "near-miss", "made-up", "url-listed", "url-other")}
    assert kinds["url-listed"] + kinds["url-other"] == 100  # URL_SHARE of 10%
    assert kinds["listed"] == 450 and kinds["near-miss"] + kinds["made-up"] == 450
    assert name_mix(LISTED, URLS, 1000, random.Random(7)) == items
    assert name_mix(LISTED, URLS, 1000, random.Random(8)) != items


def test_name_mix_kinds_are_what_they_say():
    for kind, host, path in name_mix(LISTED, URLS, 2000, random.Random(1)):
        if kind == "listed":
            assert path == "" and any(_is_under(host, base) for base in LISTED)
        elif kind == "near-miss":
            assert path == "" and not any(_is_under(host, base) for base in LISTED)
        elif kind == "made-up":
            assert path == "" and any(host.endswith("." + s) for s in SUFFIXES)
        elif kind == "url-listed":
            base = next(p for h, p in URLS if host in (h, "www." + h))
            assert path.startswith(base.rstrip("/"))
        else:
            assert kind == "url-other" and path.startswith("/")


def test_name_mix_without_urls_is_all_host_names():
    items = name_mix(LISTED, [], 100, random.Random(3), url_share=0.5)
    assert all(path == "" for _, _, path in items) and len(items) == 100


def test_name_mix_needs_listed_names():
    with pytest.raises(ValueError):
        name_mix([], URLS, 10, random.Random(1))


def test_subdomain_shapes_and_near_misses():
    rng = random.Random(5)
    shapes = {with_subdomain("evil.example", rng).count(".") for _ in range(200)}
    assert shapes == {1, 2, 3}  # itself, www./one label, two labels
    for _ in range(200):
        name = near_miss("evil.example", rng)
        assert name.endswith(".example") and name != "evil.example" and "evil" in name
        assert not _is_under(name, "evil.example")


def test_made_up_names_and_dns_names_are_unique():
    rng = random.Random(9)
    assert all(plain_name(made_up(rng)) for _ in range(100))
    taken = {"a.example"}
    names = dns_names(rng, 500, taken)
    assert len(set(names)) == 500 and "a.example" not in names and taken >= set(names)
    assert not set(dns_names(rng, 100, taken)) & set(names)


def test_url_and_ip_mixes():
    urls = url_mix(["evil.example/dl/x.exe", "1.2.3.4/bins/arm7"], 400, random.Random(2))
    assert len(urls) == 400 and sum(k == "listed" for k, _, _ in urls) == 200
    assert all(path.startswith("/") for _, _, path in urls)
    ips = ip_mix(["1.2.3.4"], 301, random.Random(2))
    assert len(ips) == 301 and sum(k == "listed" for k, _ in ips) == 150
    assert all(ipaddress.ip_address(a).is_global for k, a in ips if k == "random")


def test_plain_name():
    assert plain_name("evil.example") and plain_name("a-b_c.example.co.jp")
    assert not plain_name("1.2.3.4") and not plain_name("localhost") and not plain_name("bad name.example")


def test_read_ut1_reads_domains_and_urls_of_every_category(tmp_path: Path):
    (tmp_path / "malware").mkdir()
    (tmp_path / "malware" / "domains").write_text("Evil.Example\n1.2.3.4\n\nbad.example\n")
    (tmp_path / "malware" / "urls").write_text("host.example/a/b\nnopath.example\n")
    (tmp_path / "adult").mkdir()
    (tmp_path / "adult" / "domains.0").write_text("x.example\n")
    (tmp_path / "README.md").write_text("not a category\n")
    names, urls = read_ut1(tmp_path)
    assert sorted(names) == ["bad.example", "evil.example", "x.example"]
    assert urls == [("host.example", "/a/b")]


def test_feed_files_skip_readme_and_license(tmp_path: Path):
    for name in ("README.md", "LICENSE-CC0.md", ".hidden", "list.txt", "other.csv"):
        (tmp_path / name).write_text("x\n")
    assert [p.name for p in feed_files(tmp_path)] == ["list.txt", "other.csv"]


# ----------------------------------------------------------------------------- figures and verdicts
def test_rtt_stats_percentiles():
    stats = rtt_stats([float(v) for v in range(1, 101)])
    assert stats["dns_p50"] == pytest.approx(50.5)
    assert stats["dns_p90"] == pytest.approx(90.1)
    assert stats["dns_p99"] == pytest.approx(99.01)


def test_rates_are_medians_of_wall_and_cpu():
    r = rates(1000, [[0.01, 0.005], [0.02, 0.004], [0.004, 0.002]])
    assert r == {"wall": 100_000, "cpu": 250_000}  # rates 200k, 250k, 500k


def _lab_samples(bare_p50: float, agent_p50: float, bare_rate: float, agent_rate: float) -> dict:
    def mode(p50: float, rate: float) -> dict:
        return {"dns_p50": [p50] * 3, "dns_p90": [p50 * 2] * 3, "dns_p99": [p50 * 4] * 3, "https_rate": [rate] * 3}

    return {"bare": mode(bare_p50, bare_rate), "agent": mode(agent_p50, agent_rate)}


def test_lab_rows_judge_added_dns_p50_and_the_connection_ratio():
    rows = {r.metric.key: r for r in lab_rows(_lab_samples(0.2, 0.2 + DNS_GOAL_MS - 0.1, 1000, 1000 * CONN_GOAL_RATIO + 1), {})}
    assert rows["dns_p50"].verdict == "pass" and rows["https_rate"].verdict == "pass"
    assert rows["dns_p90"].verdict == "reported"
    assert rows["dns_p50"].compare.startswith("+0.400 ms")
    rows = {r.metric.key: r for r in lab_rows(_lab_samples(0.2, 0.2 + DNS_GOAL_MS + 0.1, 1000, 100), {})}
    assert rows["dns_p50"].verdict == "FAIL" and rows["https_rate"].verdict == "FAIL"
    assert rows["https_rate"].compare == "0.10×"


def test_lab_rows_without_samples_are_errors_with_their_reasons():
    rows = lab_rows({"bare": {}, "agent": {}}, {"agent": {"dns_p50": ["agent, run 1: boom"]}})
    assert all(r.verdict == "error" for r in rows)
    assert rows[0].errors == ["agent, run 1: boom"]


def _categories(cpu_seconds: float) -> dict:
    n = 200_000
    timing = [[cpu_seconds * 1.5, cpu_seconds]] * 3
    return {
        "load_samples": [[2.0, 1.9], [2.2, 2.0], [2.1, 2.0]], "rss_before_mib": 40.0, "rss_after_mib": 100.0,
        "db": {"domain_keys": 10, "ip_keys": 1, "url_hosts": 2, "url_entries": 3, "categories": 2,
               "skipped": {"bad": 1}, "version": "v"},
        "sizes": {"mix": n, "hosts": n, "urls": n, "allowed": n, "blocked": n},
        "kinds": {"listed": 10}, "matched": {"listed": 9}, "blocked": {"listed": 5},
        "timings": {k: timing for k in ("decide_mix", "decide_hosts", "decide_urls", "decide_allowed", "decide_blocked",
                                        "lookup_mix")},
        "tls_name": "allow",
    }


def test_category_lines_judge_the_cpu_rate_against_the_goal():
    fast = category_lines(_categories(0.5))  # 400k/s per CPU second
    assert fast[3].result == "pass" and "400,000/s per CPU second" in fast[3].value
    assert fast[1].result == "pass" and fast[1].value.startswith("2.10 s")
    assert "60.0 MiB" in fast[2].value
    slow = category_lines(_categories(200_000 / (LOOKUP_GOAL * 0.5)))
    assert slow[3].result == "FAIL"


def _intel() -> dict:
    t = [[0.02, 0.01]] * 3
    return {"load_samples": [[0.3, 0.2]] * 3, "rss_before_mib": 40.0, "rss_after_mib": 43.0,
            "formats": [["/x/urlhaus-filter-online.txt", "abp"]], "indicators": 6,
            "by_kind": {"ip": 2, "cidr": 0, "domain": 1, "url": 3}, "lines": 8, "skipped": {},
            "sizes": {"match_domain": 1000, "match_url": 1000, "match_ip": 1000},
            "kinds": {k: {"listed": 500} for k in ("match_domain", "match_url", "match_ip")},
            "hits": {k: {"listed": 500} for k in ("match_domain", "match_url", "match_ip")},
            "timings": {"match_domain": t, "match_url": t, "match_ip": t}}


def _report(**kw) -> FilterReport:
    base = dict(date="2026-01-01 00:00 UTC", machine={"nproc": "2", "cpu": "X", "memory": "1 GiB", "kernel": "6"},
                command=command_line(3, 5.0), noise=["Before the bench: quiet."], categories=_categories(0.5),
                categories_error="", intel=_intel(), intel_error="",
                lab=lab_rows(_lab_samples(0.2, 0.3, 1000, 800), {}), samples=_lab_samples(0.2, 0.3, 1000, 800),
                agent_config="shipped config", notes=["a note"], method=["a method"], diagnostics=["### d"])
    base.update(kw)
    return FilterReport(**base)


def test_report_renders_every_table_and_verdict():
    rep = _report()
    md = render_markdown(rep)
    assert md.startswith("# Benchmarks: web filter and threat protection\n\nGenerated by `python -m lab bench --suite "
                         "filter` (lab/bench/filter.py); do not edit by hand, run it again.\n\n- Date: 2026-01-01")
    for heading in ("## Category database", "## Threat intel", "## In the lab", "## Notes on this run", "## Samples",
                    "## Method", "## Diagnostics"):
        assert heading in md
    assert "`make bench-filter` (= `python -m lab bench --suite filter --runs 3 --seconds 5`)" in md
    assert f"≥ {LOOKUP_GOAL:,}/s | pass" in md
    assert "| DNS query round trip p50 | 0.200 ms | 0.300 ms | +0.100 ms (1.50×) |" in md
    assert "| New HTTPS connections (TLS handshake + GET) | 1,000 conn/s | 800 conn/s | 0.80× |" in md
    assert "## Errors" not in md
    assert rep.ok()
    text = render_terminal(rep)
    assert "Category database (UT1)" in text and "0.80×" in text
    assert "`match_url()` (1,000 look-ups, one thread)" in " ".join(c for line in line_cells(intel_lines(_intel()))
                                                                     for c in line)


def test_report_with_a_failed_part_is_not_ok_and_says_why():
    rep = _report(categories=None, categories_error="error: categories failed: boom",
                  lab=lab_rows(_lab_samples(0.2, 0.9, 1000, 100), {}))
    md = render_markdown(rep)
    assert "**error: categories failed: boom**" in md and "## Errors" in md
    assert not rep.ok()
    skipped = _report(intel=None, intel_error="skipped: no feed")
    assert skipped.ok() and "**skipped: no feed**" in render_markdown(skipped)


def test_samples_table_lists_every_run():
    cells = samples_cells(LAB_METRICS, {"bare": {"dns_p50": [0.1, 0.2]}, "agent": {}}, COLUMNS)
    assert cells[0] == ["Metric", "Bare bridge, per run", "Agent, per run"]
    assert cells[1] == ["DNS query round trip p50 (ms)", "0.100, 0.200", "—"]


def test_command_line():
    assert command_line(1, 2.0) == "`python -m lab bench --suite filter --runs 1 --seconds 2`"


# ----------------------------------------------------------------------------- configuration
def test_agent_overrides_give_atp_the_feed_and_switch_the_ips_off(tmp_path: Path):
    from lab.agentrun import lab_config

    feed = tmp_path / "urlhaus-filter-online.txt"
    cfg = lab_config(tmp_path, overrides=agent_overrides([feed]))
    engines = cfg["engines"]
    assert engines["ips"]["enabled"] is False
    assert engines["atp"]["enabled"] is True and engines["atp"]["feeds"] == [str(feed)]
    assert engines["atp"]["dns_action"] == "sinkhole"  # the rest of the shipped section is kept
    assert engines["webfilter"]["enabled"] is True


def test_row_type_is_the_data_path_bench_row():
    assert all(isinstance(r, Row) for r in lab_rows(_lab_samples(0.1, 0.2, 1, 1), {}))
