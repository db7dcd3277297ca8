"""Benchmarks of the web filter and threat protection (``python -m lab bench --suite filter``).

Three parts, written to the ``filter`` section of docs/benchmarks.md (lab/bench/doc.py):

* **Category database** (no lab): a fresh child process loads all of the UT1 lists beside the
  repository (``../shared/data/ut1``) three times (load time, RSS growth of the first load), then
  times ``decide(db, policy, host, path)`` of the shipped policy over a mix of names: half real
  entries sampled from the UT1 files with random subdomains, half unlisted names (near misses of
  listed names and made-up names), plus host+path URL look-ups, on one thread.
* **Threat intel** (no lab): the same for the URLhaus list of ``../shared/data/urlhaus``
  (``load_feed`` with the detected format, ``ThreatIntel.build``) and its ``match_domain``,
  ``match_url`` and ``match_ip``.
* **In the lab** (lab/netns.py): DNS round trips and new HTTPS connections per second from pc1
  through the bare bridge and through the agent (the shipped config with the web filter on the real
  UT1 lists and ATP on the URLhaus list, the IPS off), in alternating blocks.

The look-up measurements run in fresh child processes (``python -m lab.bench.filter categories|intel``);
the DNS server and the clients in the lab namespaces are the roles of lab/bench/load.py.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import ipaddress
import json
import logging
import os
import platform
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from lab import shared_dir
from lab.bench.blocks import agent_mode, bare_bridge, block_noise, measure, record_error, rotated
from lab.bench.doc import write_section
from lab.bench.host import (
    NFQUEUE_PROC,
    NGINX_HEAD,
    BenchError,
    agent_cpu_seconds,
    ensure_nginx,
    eve_alerts,
    helper_argv,
    helper_env,
    helper_results,
    last_json,
    listening,
    machine,
    machine_noise,
    parse_nfqueue,
    start_nginx,
)
from lab.bench.load import DNS_TIMEOUT
from lab.bench.report import (
    Goal,
    Metric,
    Row,
    aligned,
    closing_lines,
    compare_rows,
    header_lines,
    markdown,
    md_table,
    median,
    noise_note,
    percentile,
    samples_cells,
    table_cells,
)

log = logging.getLogger(__name__)

SHARED = shared_dir() / "data"
UT1 = SHARED / "ut1"
URLHAUS = SHARED / "urlhaus"
SECTION = "filter"
TITLE = "Benchmarks: web filter and threat protection"
SOURCE = "lab/bench/filter.py"
LOAD = "lab.bench.load"  # the module of the DNS server and the clients (python -m lab.bench.load ROLE)
COLUMNS = [("bare", "Bare bridge"), ("agent", "Agent")]  # the modes of the lab part, as the samples table heads them

# ----- the look-up benchmarks (no lab)
MIX_SIZE = 200_000  # look-ups in the category mix (and in each threat-intel mix)
URL_SHARE = 0.1  # share of the category mix that is host + path (plain HTTP requests)
MIX_SEED = 4004
LOADS = 3  # loads of each database (median)
PASSES = 3  # timed passes over each mix (median)
WARMUP = 20_000  # look-ups before the timed passes
LOOKUP_GOAL = 200_000  # look-ups per second (issue 4, item 7)
LOAD_GOAL_S = 10.0  # issue 4 says the real UT1 data "must load in seconds"; this is how many
CHILD_TIMEOUT = 600
# listed names get one of these subdomain shapes: (number of random labels, weight); "www." is its own shape
SUBDOMAIN_SHAPES = (("", 30), ("www", 30), ("1", 25), ("2", 15))
# made-up names end in one of these (weighted roughly as an office in Japan sees them)
SUFFIXES = ("com", "com", "com", "com", "net", "org", "jp", "co.jp", "co.jp", "ne.jp", "or.jp", "io",
            "de", "info", "xyz", "cn", "ru", "com.br", "co.uk", "app")
URL_PATHS = ("/", "/index.html", "/login", "/wp-login.php", "/images/logo.png", "/news/2026/11/article-{n}.html",
             "/search?q=item{n}&lang=ja", "/api/v1/items/{n}", "/static/js/app.{n}.js", "/download/setup-{n}.exe")
URL_TAILS = ("", "", "/", "/index.html", "?id={n}", "/a/b?ref=mail")
_PLAIN_NAME = re.compile(r"[a-z0-9_-]{1,63}(?:\.[a-z0-9_-]{1,63})+")
_LABEL_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789"

# ----- the lab
DNS_HOST, DNS_IP, DNS_PORT = "dns", "198.51.100.53", 53
DNS_QUERIES = 2000  # per block, each a different name
DNS_WARMUP = 20  # queries before the timed ones (ARP, the agent's first flows), other names again
DNS_FIRST_PORT = 20_000  # the client's source ports: one new port (a new flow) per query
DNS_GOAL_MS = 0.5  # added p50 (issue 4, item 7)
DNS_LABEL = (8, 14)  # characters in the random labels of the DNS names
HTTPS_PORT = 443
HTTPS_PROCS = 4  # TLS client processes in pc1, each one connection at a time
TLS_NAME = "www.example.org"  # the SNI: a name no list holds
CONN_GOAL_RATIO = 0.3  # the data-path bench's goal for new connections (no goal of its own in issue 4)
AGENT_START_TIMEOUT = 120.0  # the agent loads UT1 and the feed before its workers bind their queues
CLIENT_PORTS = "1024 65535"
NGINX_TLS_CONF = NGINX_HEAD + """  ssl_session_cache off;
  ssl_session_tickets off;
  server {{
    listen {port} ssl reuseport backlog=4096;
    ssl_certificate {dir}/cert.pem;
    ssl_certificate_key {dir}/key.pem;
    ssl_protocols TLSv1.2 TLSv1.3;
    location / {{ return 200 "ok\\n"; }}
  }}
}}
"""

LAB_METRICS = (
    Metric("dns_p50", "DNS query round trip p50", "ms", 3, Goal("max_delta", DNS_GOAL_MS), delta=True),
    Metric("dns_p90", "DNS query round trip p90", "ms", 3, delta=True),
    Metric("dns_p99", "DNS query round trip p99", "ms", 3, delta=True),
    Metric("https_rate", "New HTTPS connections (TLS handshake + GET)", "conn/s", 0, Goal("min_ratio", CONN_GOAL_RATIO)),
)


# ----------------------------------------------------------------------------- name mixes (pure)
def random_label(rng: random.Random, lo: int = 3, hi: int = 10) -> str:
    return "".join(rng.choice(_LABEL_CHARS) for _ in range(rng.randint(lo, hi)))


def plain_name(text: str) -> bool:
    """A list line that is a plain host name (not an IP address): what a DNS query or an SNI carries."""
    return bool(_PLAIN_NAME.fullmatch(text)) and text[-1].isalpha()


def read_ut1(folder: Path) -> tuple[list[str], list[tuple[str, str]]]:
    """The plain names of every ``<category>/domains*`` file and the (host, path) of every ``urls*`` line,
    as listed (lower-cased, stripped), duplicates kept: sampling follows the lists' own weights."""
    names: list[str] = []
    urls: list[tuple[str, str]] = []
    for cat in sorted(p for p in Path(folder).iterdir() if p.is_dir()):
        for path in sorted(cat.iterdir()):
            kind = path.name.split(".")[0]
            if kind not in ("domains", "urls") or not path.is_file():
                continue
            for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
                line = line.strip().lower()
                if kind == "domains":
                    if plain_name(line):
                        names.append(line)
                else:
                    host, sep, rest = line.partition("/")
                    if sep and plain_name(host):
                        urls.append((host, "/" + rest))
    return names, urls


def with_subdomain(name: str, rng: random.Random) -> str:
    """``name`` as it is looked up: itself, under www., or under one or two random labels."""
    shape = rng.choices([s for s, _ in SUBDOMAIN_SHAPES], [w for _, w in SUBDOMAIN_SHAPES])[0]
    if shape == "www":
        return "www." + name
    if shape == "":
        return name
    return ".".join(random_label(rng) for _ in range(int(shape))) + "." + name


def near_miss(name: str, rng: random.Random) -> str:
    """A name that shares all but its first label's text with a listed one (``notevil.example`` for
    ``evil.example``): never a subdomain of it."""
    first, _, rest = name.partition(".")
    extra = random_label(rng, 1, 3)
    first = extra + first if rng.random() < 0.5 else first + extra
    return f"{first[:63]}.{rest}"


def made_up(rng: random.Random, lo: int = 3, hi: int = 10) -> str:
    """A name no list is likely to hold: one or two random labels (``lo``-``hi`` characters) under a common suffix."""
    labels = [random_label(rng, lo, hi) for _ in range(rng.choice((1, 1, 2)))]
    return ".".join(labels) + "." + rng.choice(SUFFIXES)


def random_path(rng: random.Random) -> str:
    return rng.choice(URL_PATHS).format(n=rng.randint(1, 99_999))


def name_mix(listed: Sequence[str], urls: Sequence[tuple[str, str]], size: int, rng: random.Random,
             url_share: float = URL_SHARE) -> list[tuple[str, str, str]]:
    """``size`` look-ups as (kind, host, path), shuffled.

    ``round(size * url_share)`` are host + path (only when ``urls`` is given): half a listed urls
    entry (its host, maybe under www., its path plus a tail), half a random path on a listed or an
    unlisted host. Of the rest, half are ``listed`` names (a listed entry under a random subdomain
    shape), a quarter ``near-miss`` and a quarter ``made-up`` names (path "").
    """
    if not listed:
        raise ValueError("no listed names to sample from")
    n_urls = round(size * url_share) if urls else 0
    n_names = size - n_urls
    n_listed = n_names // 2
    n_near = (n_names - n_listed) // 2
    out: list[tuple[str, str, str]] = []
    for _ in range(n_listed):
        out.append(("listed", with_subdomain(rng.choice(listed), rng), ""))
    for _ in range(n_near):
        out.append(("near-miss", near_miss(rng.choice(listed), rng), ""))
    for _ in range(n_names - n_listed - n_near):
        out.append(("made-up", made_up(rng), ""))
    for i in range(n_urls):
        if i % 2 == 0:
            host, path = rng.choice(urls)
            host = "www." + host if rng.random() < 0.3 and not host.startswith("www.") else host
            tail = rng.choice(URL_TAILS).format(n=rng.randint(1, 99_999))
            out.append(("url-listed", host, path.rstrip("/") + tail if tail.startswith("/") else path + tail))
        else:
            host = with_subdomain(rng.choice(listed), rng) if rng.random() < 0.5 else made_up(rng)
            out.append(("url-other", host, random_path(rng)))
    rng.shuffle(out)
    return out


def url_mix(listed: Sequence[str], size: int, rng: random.Random) -> list[tuple[str, str, str]]:
    """Threat-intel URL look-ups as (kind, host, path): half a listed ``host/path`` (maybe under www.,
    maybe followed by a query), a quarter another path on a listed host, a quarter made-up URLs."""
    if not listed:
        raise ValueError("no listed URLs to sample from")
    out = []
    for i in range(size):
        host, _, path = rng.choice(listed).partition("/")
        if i % 2 == 0:
            host = "www." + host if rng.random() < 0.3 else host
            out.append(("listed", host, "/" + path + rng.choice(("", "", "?id=1", "&x=2"))))
        elif i % 4 == 1:
            out.append(("other-path", host, random_path(rng)))
        else:
            out.append(("made-up", made_up(rng), random_path(rng)))
    rng.shuffle(out)
    return out


def ip_mix(listed: Sequence[str], size: int, rng: random.Random) -> list[tuple[str, str]]:
    """(kind, address) look-ups: half listed addresses, half random global IPv4 addresses."""
    if not listed:
        raise ValueError("no listed addresses to sample from")
    out = [("listed", rng.choice(listed)) for _ in range(size // 2)]
    while len(out) < size:
        addr = ipaddress.IPv4Address(rng.getrandbits(32))
        if addr.is_global:
            out.append(("random", str(addr)))
    rng.shuffle(out)
    return out


def dns_names(rng: random.Random, count: int, taken: set[str] | None = None) -> list[str]:
    """``count`` different made-up names with long labels (short ones like ``k3x.com`` are real names that a
    list may hold), none in ``taken`` (which is updated)."""
    taken = set() if taken is None else taken
    out = []
    while len(out) < count:
        name = made_up(rng, DNS_LABEL[0], DNS_LABEL[1])
        if name not in taken:
            taken.add(name)
            out.append(name)
    return out


# ----------------------------------------------------------------------------- figures (pure)
def rtt_stats(rtts_ms: Sequence[float]) -> dict[str, float]:
    """p50/p90/p99 of one block's round trips (ms)."""
    return {f"dns_p{p}": percentile(rtts_ms, p) for p in (50, 90, 99)}


def rates(count: int, samples: Sequence[Sequence[float]]) -> dict[str, float]:
    """Look-ups per second from per-pass [wall, cpu] seconds: medians of the wall-clock and CPU-time rates."""
    wall = [count / w for w, _ in samples if w > 0]
    cpu = [count / c for _, c in samples if c > 0]
    return {"wall": median(wall) or 0.0, "cpu": median(cpu) or 0.0}


def lookup_verdict(rate: float, goal: float = LOOKUP_GOAL) -> str:
    return "pass" if rate >= goal else "FAIL"


def fmt_rate(r: dict[str, float]) -> str:
    return f"{r['cpu']:,.0f}/s per CPU second ({r['wall']:,.0f}/s wall clock)"


def fmt_secs(samples: Sequence[float]) -> str:
    return ", ".join(f"{s:.2f}" for s in samples) + " s"


@dataclass
class Line:
    """One row of the category / threat-intel tables."""

    label: str
    value: str
    goal: str = "reported"
    result: str = "reported"


def category_lines(res: dict[str, Any]) -> list[Line]:
    """The category-database rows from the ``categories`` child's result."""
    loads = [w for w, _ in res["load_samples"]]
    stats = res["db"]
    mix = rates(res["sizes"]["mix"], res["timings"]["decide_mix"])
    lookup = rates(res["sizes"]["mix"], res["timings"]["lookup_mix"])
    return [
        Line("Entries loaded", f"{stats['domain_keys']:,} domains, {stats['ip_keys']:,} IP addresses, "
                               f"{stats['url_entries']:,} URL prefixes on {stats['url_hosts']:,} hosts, "
                               f"{stats['categories']} categories ({sum(stats['skipped'].values()):,} lines skipped)"),
        Line(f"Load time (`CategoryDB.load`, median of {len(loads)})", f"{median(loads):.2f} s ({fmt_secs(loads)})",
             f"≤ {LOAD_GOAL_S:g} s (issue 4: \"in seconds\")", "pass" if median(loads) <= LOAD_GOAL_S else "FAIL"),
        Line("Memory (RSS growth of a fresh process)",
             f"{res['rss_after_mib'] - res['rss_before_mib']:,.1f} MiB ({res['rss_before_mib']:,.1f} -> "
             f"{res['rss_after_mib']:,.1f} MiB)"),
        # The look-up (item 1: a host name plus an optional path in, the categories out) is
        # CategoryDB.lookup; decide() adds the customer policy and, for a block, the entry's name.
        Line(f"`CategoryDB.lookup()` over the mix ({res['sizes']['mix']:,} look-ups, {URL_SHARE:.0%} with a path), one thread",
             fmt_rate(lookup), f"≥ {LOOKUP_GOAL:,}/s", lookup_verdict(lookup["cpu"])),
        Line("`decide()` over the same mix (policy, allow/deny lists, the matched entry of a block)", fmt_rate(mix)),
        Line("`decide()`, the host-name part alone (DNS, SNI, Host)",
             fmt_rate(rates(res["sizes"]["hosts"], res["timings"]["decide_hosts"]))),
        Line("`decide()`, the host + path part alone (HTTP requests)",
             fmt_rate(rates(res["sizes"]["urls"], res["timings"]["decide_urls"]))),
        Line(f"`decide()`, the host names it allows ({res['sizes']['allowed']:,})",
             fmt_rate(rates(res["sizes"]["allowed"], res["timings"]["decide_allowed"]))),
        Line(f"`decide()`, the host names it blocks ({res['sizes']['blocked']:,})",
             fmt_rate(rates(res["sizes"]["blocked"], res["timings"]["decide_blocked"]))),
    ]


def intel_lines(res: dict[str, Any]) -> list[Line]:
    """The threat-intel rows from the ``intel`` child's result."""
    loads = [w for w, _ in res["load_samples"]]
    kinds = res["by_kind"]
    out = [
        Line("Indicators", f"{res['indicators']:,} ({', '.join(f'{v:,} {k}' for k, v in kinds.items() if v)}) from "
                           f"{res['lines']:,} lines of {', '.join(f'{Path(f).name} ({fmt})' for f, fmt in res['formats'])}"),
        Line(f"Load time (`load_feed` + `ThreatIntel.build`, median of {len(loads)})",
             f"{median(loads):.3f} s ({', '.join(f'{s:.3f}' for s in loads)} s)"),
        Line("Memory (RSS growth of a fresh process)",
             f"{res['rss_after_mib'] - res['rss_before_mib']:,.1f} MiB ({res['rss_before_mib']:,.1f} -> "
             f"{res['rss_after_mib']:,.1f} MiB)"),
    ]
    for key, label in (("match_domain", "`match_domain()`"), ("match_url", "`match_url()`"), ("match_ip", "`match_ip()`")):
        out.append(Line(f"{label} ({res['sizes'][key]:,} look-ups, one thread)",
                        fmt_rate(rates(res["sizes"][key], res["timings"][key]))))
    return out


def line_cells(lines: Sequence[Line]) -> list[list[str]]:
    return [["Measure", "Result", "Goal", "Verdict"], *([ln.label, ln.value, ln.goal, ln.result] for ln in lines)]


def lab_rows(samples: dict[str, dict[str, list[float]]], errors: dict[str, dict[str, list[str]]]) -> list[Row]:
    """Medians, agent-vs-bare comparison and verdicts of the lab metrics."""
    return compare_rows(LAB_METRICS, samples, errors, "bare", "agent")


def command_line(runs: int, seconds: float) -> str:
    cmd = f"python -m lab bench --suite filter --runs {runs} --seconds {seconds:g}"
    return f"`make bench-filter` (= `{cmd}`)" if (runs, seconds) == (3, 5.0) else f"`{cmd}`"


@dataclass
class FilterReport:
    """Everything the ``filter`` section shows."""

    date: str
    machine: dict[str, str]
    command: str
    noise: list[str]
    categories: dict[str, Any] | None
    categories_error: str
    intel: dict[str, Any] | None
    intel_error: str
    lab: list[Row]
    samples: dict[str, dict[str, list[float]]]
    agent_config: str
    notes: list[str] = field(default_factory=list)
    method: list[str] = field(default_factory=list)
    diagnostics: list[str] = field(default_factory=list)
    duration: str = ""

    def verdicts(self) -> list[str]:
        out = [r.verdict for r in self.lab]
        if self.categories is not None:
            out += [ln.result for ln in category_lines(self.categories)]
        out += ["error" for e in (self.categories_error, self.intel_error) if e.startswith("error")]
        return out

    def ok(self) -> bool:
        return all(v in ("pass", "reported") for v in self.verdicts())


def _mix_note(res: dict[str, Any]) -> str:
    kinds, matched, blocked = res["kinds"], res["matched"], res["blocked"]
    parts = [f"{kind} {n:,} ({matched.get(kind, 0) / n:.1%} in a category, {blocked.get(kind, 0) / n:.1%} blocked)"
             for kind, n in kinds.items() if n]
    return "Category mix: " + "; ".join(parts) + "."


def _intel_note(res: dict[str, Any]) -> str:
    parts = []
    for key in ("match_domain", "match_url", "match_ip"):
        kinds, hits = res["kinds"][key], res["hits"][key]
        parts.append(f"{key}: " + ", ".join(f"{k} {n:,} ({hits.get(k, 0) / n:.1%} matched)" for k, n in kinds.items()))
    return "Threat-intel mixes: " + "; ".join(parts) + "."


def render_markdown(rep: FilterReport) -> str:
    """The ``filter`` section of docs/benchmarks.md."""
    out = header_lines(TITLE, "python -m lab bench --suite filter", SOURCE, rep.date, rep.duration, rep.machine,
                       rep.command, rep.noise)
    out += ["## Category database (all of ../shared/data/ut1)", ""]
    if rep.categories is None:
        out += [f"**{rep.categories_error}**", ""]
    else:
        out += [*md_table(line_cells(category_lines(rep.categories))), ""]
    out += ["## Threat intel (URLhaus list of ../shared/data/urlhaus)", ""]
    if rep.intel is None:
        out += [f"**{rep.intel_error}**", ""]
    else:
        out += [*md_table(line_cells(intel_lines(rep.intel))), ""]
    out += ["## In the lab: the agent against the bare bridge", "", f"Agent: {rep.agent_config}", "",
            *md_table(table_cells(rep.lab)), ""]
    errors = [f"- {r.metric.label}: {e}" for r in rep.lab for e in r.errors]
    if rep.categories_error and rep.categories is None:
        errors.append(f"- Category database: {rep.categories_error}")
    if rep.intel_error and rep.intel is None:
        errors.append(f"- Threat intel: {rep.intel_error}")
    samples = md_table(samples_cells(LAB_METRICS, rep.samples, COLUMNS))
    return markdown(out + closing_lines(errors, rep.notes, samples, rep.method, rep.diagnostics))


def render_terminal(rep: FilterReport) -> str:
    """The three parts' tables, for the terminal."""
    out = ["Category database (UT1)"]
    out.append(aligned(line_cells(category_lines(rep.categories))) if rep.categories else f"  {rep.categories_error}")
    out += ["", "Threat intel (URLhaus)"]
    out.append(aligned(line_cells(intel_lines(rep.intel))) if rep.intel else f"  {rep.intel_error}")
    out += ["", "In the lab: agent vs bare bridge", aligned(table_cells(rep.lab))]
    return "\n".join(out)


# ----------------------------------------------------------------------------- child processes
def _timed_passes(fn: Callable[[], Any], passes: int) -> list[list[float]]:
    """[wall, cpu] seconds of each of ``passes`` calls."""
    out = []
    for _ in range(passes):
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        out.append([time.perf_counter() - w0, time.process_time() - c0])
    return out


def _rss_mib(proc: Any) -> float:
    return proc.memory_info().rss / (1 << 20)


def shipped_policy_section() -> dict[str, Any]:
    """blocked/allow/deny of the shipped config's web filter."""
    import yaml

    from lab.agentrun import EXAMPLE_CONFIG

    data = yaml.safe_load(EXAMPLE_CONFIG.read_text(encoding="utf-8")) or {}
    section = (data.get("engines") or {}).get("webfilter") or {}
    return {k: section[k] for k in ("blocked", "allow", "deny") if k in section}


def categories_child(ut1: Path, size: int, seed: int, loads: int, passes: int) -> dict[str, Any]:
    """Load time and memory of the UT1 lists, and ``decide()`` rates over the name mix (run in a fresh process)."""
    import gc

    import psutil

    from filters.webfilter.categories import CategoryDB
    from filters.webfilter.policy import decide, parse_policy

    proc = psutil.Process()
    gc.collect()
    rss0 = _rss_mib(proc)
    samples = []
    w0, c0 = time.perf_counter(), time.process_time()
    db = CategoryDB.load(ut1)
    samples.append([time.perf_counter() - w0, time.process_time() - c0])
    gc.collect()
    rss1 = _rss_mib(proc)
    for _ in range(loads - 1):
        w0, c0 = time.perf_counter(), time.process_time()
        again = CategoryDB.load(ut1)
        samples.append([time.perf_counter() - w0, time.process_time() - c0])
        del again
        gc.collect()
    policy = parse_policy(shipped_policy_section(), known_categories=db.categories)
    names, urls = read_ut1(ut1)
    items = name_mix(names, urls, size, random.Random(seed))
    pairs = [(host, path) for _, host, path in items]
    hosts = [(h, p) for h, p in pairs if not p]
    with_path = [(h, p) for h, p in pairs if p]
    kinds = Counter(k for k, _, _ in items)
    matched = Counter(k for k, h, p in items if db.lookup(h, p))
    blocked = Counter(k for k, h, p in items if decide(db, policy, h, p).blocks)

    def run_decide(xs: list[tuple[str, str]]) -> Callable[[], None]:
        def go() -> None:
            for host, path in xs:
                decide(db, policy, host, path)
        return go

    def run_lookup() -> None:
        lookup = db.lookup
        for host, path in pairs:
            lookup(host, path)

    allowed = [(h, p) for h, p in hosts if not decide(db, policy, h, p).blocks]
    refused = [(h, p) for h, p in hosts if decide(db, policy, h, p).blocks]
    run_decide(pairs[:WARMUP])()
    timings = {
        "decide_mix": _timed_passes(run_decide(pairs), passes),
        "decide_hosts": _timed_passes(run_decide(hosts), passes),
        "decide_urls": _timed_passes(run_decide(with_path), passes),
        "decide_allowed": _timed_passes(run_decide(allowed), passes),
        "decide_blocked": _timed_passes(run_decide(refused), passes),
        "lookup_mix": _timed_passes(run_lookup, passes),
    }
    stats = db.stats()
    entries = stats.get("entries", {})
    return {
        "load_samples": samples, "rss_before_mib": rss0, "rss_after_mib": rss1,
        "db": {"domain_keys": stats["domain_keys"], "ip_keys": stats["ip_keys"], "url_hosts": stats["url_hosts"],
               "url_entries": sum(c.get("urls", 0) for c in entries.values()), "categories": stats["categories"],
               "skipped": stats.get("skipped", {}), "version": stats.get("version", "")},
        "blocked_categories": sorted(policy.blocked),
        "sizes": {"mix": len(pairs), "hosts": len(hosts), "urls": len(with_path), "allowed": len(allowed),
                  "blocked": len(refused)},
        "kinds": dict(kinds), "matched": dict(matched), "blocked": dict(blocked),
        "sampled_from": {"names": len(names), "urls": len(urls)},
        "tls_name": decide(db, policy, TLS_NAME).verdict.value,
        "timings": timings, "python": platform.python_version(),
    }


def feed_files(folder: Path) -> list[Path]:
    """The data files of a feed folder: every regular file but its README and LICENSE texts."""
    return sorted(p for p in Path(folder).iterdir()
                  if p.is_file() and not p.name.startswith(".") and not p.name.upper().startswith(("README", "LICENSE")))


def intel_child(files: Sequence[Path], size: int, seed: int, loads: int, passes: int) -> dict[str, Any]:
    """Load time and memory of the feeds, and the match rates (run in a fresh process)."""
    import gc

    import psutil

    from filters.threatintel import IndicatorKind, ThreatIntel, detect_format, load_feed

    proc = psutil.Process()
    gc.collect()
    rss0 = _rss_mib(proc)
    samples, intel = [], None
    for i in range(loads):
        w0, c0 = time.perf_counter(), time.process_time()
        built = ThreatIntel.build([load_feed(f) for f in files])
        samples.append([time.perf_counter() - w0, time.process_time() - c0])
        if i == 0:
            intel = built
            gc.collect()
            rss1 = _rss_mib(proc)
        del built
    assert intel is not None
    formats = []
    for f in files:
        with open(f, encoding="utf-8", errors="replace") as fh:
            formats.append((str(f), detect_format(str(f), fh.read(16384))))
    by = {kind: [i.value for i in intel.indicators if i.kind is kind] for kind in IndicatorKind}
    rng = random.Random(seed)
    mixes: dict[str, list[tuple[str, ...]]] = {}
    if by[IndicatorKind.DOMAIN]:
        mixes["match_domain"] = [(k, h) for k, h, _ in name_mix(by[IndicatorKind.DOMAIN], [], size, rng, url_share=0)]
    if by[IndicatorKind.URL]:
        mixes["match_url"] = url_mix(by[IndicatorKind.URL], size, rng)
    if by[IndicatorKind.IP]:
        mixes["match_ip"] = ip_mix(by[IndicatorKind.IP], size, rng)
    calls: dict[str, Callable[..., Any]] = {"match_domain": intel.match_domain, "match_url": intel.match_url,
                                            "match_ip": intel.match_ip}
    timings, kinds, hits = {}, {}, {}
    for key, items in mixes.items():
        fn = calls[key]
        args = [item[1:] for item in items]
        kinds[key] = dict(Counter(item[0] for item in items))
        hits[key] = dict(Counter(item[0] for item, a in zip(items, args) if fn(*a) is not None))

        def go(fn: Callable[..., Any] = fn, args: list[tuple[str, ...]] = args) -> None:
            for a in args:
                fn(*a)

        for a in args[:WARMUP]:
            fn(*a)
        timings[key] = _timed_passes(go, passes)
    stats = intel.stats()
    return {
        "load_samples": samples, "rss_before_mib": rss0, "rss_after_mib": rss1, "formats": formats,
        "indicators": stats.indicators, "by_kind": dict(stats.by_kind), "lines": stats.lines,
        "skipped": dict(stats.skipped), "sizes": {k: len(v) for k, v in mixes.items()},
        "kinds": kinds, "hits": hits, "timings": timings,
    }


def run_child(role: str, *args: str) -> tuple[dict[str, Any] | None, str]:
    """Run a measuring child process (``python -m lab.bench.filter ROLE``); (its JSON result, "") or (None, why not)."""
    try:
        res = subprocess.run(helper_argv("lab.bench.filter", role, *args), env=helper_env(), capture_output=True,
                             text=True, timeout=CHILD_TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        return None, f"error: {role} did not finish in {CHILD_TIMEOUT} s"
    try:
        return last_json(res.stdout), ""
    except (ValueError, IndexError):
        return None, f"error: {role} failed: {res.stderr.strip()[-400:]}"


# ----------------------------------------------------------------------------- lab helpers
def make_cert(folder: Path, name: str) -> str:
    """A self-signed ECDSA P-256 certificate for ``name`` (cert.pem, key.pem in ``folder``); its description."""
    folder.mkdir(parents=True, exist_ok=True)
    argv = ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", str(folder / "key.pem"), "-out", str(folder / "cert.pem"), "-days", "2",
            "-subj", f"/CN={name}", "-addext", f"subjectAltName=DNS:{name}"]
    res = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=60)
    if res.returncode != 0:
        raise BenchError(f"openssl req failed: {res.stderr.strip()[-300:]}")
    return f"self-signed ECDSA P-256 certificate for {name} (`{' '.join(argv[:8])} ...`)"


# ----------------------------------------------------------------------------- the lab run
@dataclass
class BlockInfo:
    mode: str
    run: int
    lines: list[str] = field(default_factory=list)


class FilterLab:
    """DNS round trips and new HTTPS connections, bare bridge against the agent, in alternating blocks."""

    def __init__(self, lab: Any, runs: int, seconds: float, workdir: Path, overrides: dict[str, Any]) -> None:
        self.lab = lab
        self.runs = runs
        self.seconds = seconds
        self.workdir = workdir
        self.overrides = overrides
        self.web = lab.hosts["web"].ipv4
        self.samples: dict[str, dict[str, list[float]]] = {"bare": {}, "agent": {}}
        self.errors: dict[str, dict[str, list[str]]] = {"bare": {}, "agent": {}}
        self.notes: list[str] = []
        self.blocks: list[BlockInfo] = []
        self.loads: list[str] = []
        self.starts: list[str] = []
        self.agent: Any = None
        self.agent_counters: dict[str, Any] = {}
        self.names: dict[tuple[int, str], list[str]] = {}
        self.warmup: dict[tuple[int, str], list[str]] = {}
        self.dns_problems: Counter[str] = Counter()
        self.https_problems: Counter[str] = Counter()
        self.versions: Counter[str] = Counter()
        self.block = BlockInfo("", 0)
        self.count = 0  # queries or connections of the scenario that just ran (agent CPU per item)

    # -- set-up ----------------------------------------------------------------------------
    def start_servers(self) -> None:
        lab, web = self.lab, self.lab.hosts["web"]
        rng = random.Random(MIX_SEED + 53)
        taken: set[str] = {TLS_NAME}
        for run in range(self.runs):
            for mode in ("bare", "agent"):
                self.warmup[(run, mode)] = dns_names(rng, DNS_WARMUP, taken)
                self.names[(run, mode)] = dns_names(rng, DNS_QUERIES, taken)
        records = self.workdir / "dns-records.txt"
        records.write_text("".join(f"{n}={web.ipv4},{web.ipv6}\n" for n in sorted(taken)), encoding="utf-8")
        lab.popen(DNS_HOST, helper_argv(LOAD, "dns-server", "--port", str(DNS_PORT), "--records", str(records)),
                  name="dns", env=helper_env())
        lab.exec("pc1", ["sysctl", "-q", "-w", f"net.ipv4.ip_local_port_range={CLIENT_PORTS}"])
        nginx, note = ensure_nginx()
        if nginx is None:
            raise BenchError(f"no nginx: {note}")
        ngdir = self.workdir / "nginx"
        cert = make_cert(ngdir, TLS_NAME)
        version = start_nginx(lab, "web", nginx, ngdir, NGINX_TLS_CONF, HTTPS_PORT)
        self.notes.append(f"HTTPS server: {version} ({note}), {os.cpu_count()} worker processes, TLS 1.2/1.3, "
                          f"session cache and tickets off, {cert}; `keepalive_timeout 0`, `return 200`.")
        if not listening(lab, "web", HTTPS_PORT):
            raise BenchError(f"nginx does not listen on {HTTPS_PORT}: {lab.log_tail('web', 'nginx')}")
        if not listening(lab, DNS_HOST, DNS_PORT, "udp"):
            raise BenchError(f"the lab DNS server does not listen: {lab.log_tail(DNS_HOST, 'dns')}")

    # -- modes -----------------------------------------------------------------------------
    @contextlib.contextmanager
    def mode(self, mode: str, run: int) -> Iterator[None]:
        """The UTM as a bare bridge or with the agent running, for one block of measurements."""
        self.lab.exec("utm", ["conntrack", "-F"])
        if mode == "bare":
            with bare_bridge(self.lab):
                self._wait_path()
                yield
            return
        with agent_mode(self, self.workdir / f"agent-{run}", self.overrides, AGENT_START_TIMEOUT, self.starts):
            yield

    def _wait_path(self) -> None:
        if not self.lab.wait_tcp("pc1", self.web, HTTPS_PORT, 15):
            raise BenchError("pc1 cannot reach web:443 through the UTM")

    def _nfqueue(self) -> dict[int, Any]:
        return parse_nfqueue(self.lab.exec("utm", ["cat", NFQUEUE_PROC]).stdout) if self.agent else {}

    # -- scenarios -------------------------------------------------------------------------
    def dns(self, mode: str, run: int) -> dict[str, float]:
        port = DNS_FIRST_PORT
        names_file = self.workdir / f"names-{run}-{mode}.txt"
        warm = self.warmup[(run, mode)]
        names = self.names[(run, mode)]
        names_file.write_text("\n".join(warm + names) + "\n", encoding="utf-8")
        res = self.lab.exec("pc1", helper_argv(LOAD, "dns-client", "--server", DNS_IP, "--port", str(DNS_PORT),
                                               "--names", str(names_file), "--first-port", str(port),
                                               "--expect", self.web, "--warmup", str(len(warm))),
                            env=helper_env(), timeout=DNS_QUERIES * DNS_TIMEOUT + 60)
        try:
            data = last_json(res.stdout)
        except (ValueError, IndexError):
            raise BenchError(f"dns-client failed: {res.stderr.strip()[-300:]}") from None
        rtts = data["rtt_ms"]
        self.count = len(warm) + len(names)
        self.dns_problems.update(data["problems"])
        if data["problems"]:
            self.block.lines.append(f"DNS problems: {data['problems']}")
        if len(rtts) < DNS_QUERIES * 0.9:
            raise BenchError(f"only {len(rtts)} of {DNS_QUERIES} DNS queries answered correctly: {data['problems']}")
        stats = rtt_stats(rtts)
        self.block.lines.append(f"DNS: {len(rtts):,} answers, p50 {stats['dns_p50']:.3f} / p90 {stats['dns_p90']:.3f} / "
                                f"p99 {stats['dns_p99']:.3f} / max {max(rtts):.3f} ms")
        return stats

    def https(self, mode: str) -> dict[str, float]:
        argv = helper_argv(LOAD, "https-load", "--ip", self.web, "--port", str(HTTPS_PORT), "--name", TLS_NAME,
                           "--seconds", f"{self.seconds:g}")
        procs = [self.lab.popen("pc1", argv, name=f"https-load-{i}", env=helper_env(), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE) for i in range(HTTPS_PROCS)]
        rate, errors, p50s, done = 0.0, 0, [], 0
        for result in helper_results(procs, self.seconds + 60, "https-load"):
            rate += result["done"] / max(result["elapsed"], 1e-6)
            errors += result["errors"]
            done += result["done"]
            self.https_problems.update(result["problems"])
            self.versions.update(result["versions"])
            if result["conn_ms_p50"] is not None:
                p50s.append(result["conn_ms_p50"])
        self.block.lines.append(f"HTTPS: {rate:,.0f} conn/s from {HTTPS_PROCS} clients, {errors} failed, connection "
                                f"time p50 {median(p50s) or 0:.2f} ms (median over the clients)")
        self.count = done + errors
        if rate <= 0:
            raise BenchError(f"no HTTPS connection completed ({errors} failed)")
        return {"https_rate": rate}

    def run_block(self, mode: str, run: int) -> None:
        self.block = BlockInfo(mode, run)
        self.blocks.append(self.block)
        with block_noise(run, self.runs, mode, self.loads):
            self._block(mode, run)

    def _block(self, mode: str, run: int) -> None:
        try:
            with self.mode(mode, run):
                for name, fn, keys in (("dns", lambda: self.dns(mode, run), ("dns_p50", "dns_p90", "dns_p99")),
                                       ("https", lambda: self.https(mode), ("https_rate",))):
                    q0 = self._nfqueue()
                    self.count = 0
                    cpu0 = agent_cpu_seconds(self.agent.proc.pid) if self.agent else 0.0
                    if measure(name, fn, keys, mode, run, self.samples, self.errors, whole_from=float("inf")) is None:
                        continue
                    if self.agent:
                        self._queue_use(name, q0, agent_cpu_seconds(self.agent.proc.pid) - cpu0)
                if self.agent:
                    time.sleep(2.5)  # status.json is written every 2 s
                    self._agent_counters()
        except Exception as exc:  # noqa: BLE001
            log.exception("%s block, run %d failed", mode, run + 1)
            print(f"  {mode}: ERROR {exc}", flush=True)
            self._error(mode, [m.key for m in LAB_METRICS], f"{mode}, run {run + 1}: {exc}")

    def _error(self, mode: str, keys: Sequence[str], message: str) -> None:
        record_error(self.errors, mode, keys, message)

    def _queue_use(self, name: str, before: dict[int, Any], cpu: float) -> None:
        after = self._nfqueue()
        queued = sum(s.id_sequence - (before[q].id_sequence if q in before else 0) for q, s in after.items())
        drops = sum(s.dropped + s.user_dropped for s in after.values()) - sum(
            s.dropped + s.user_dropped for s in before.values())
        per = f" ({cpu / self.count * 1e3:.2f} ms per {'query' if name == 'dns' else 'connection'})" if self.count else ""
        self.block.lines.append(f"{name}: {queued:,} packets through NFQUEUE, {drops:,} NFQUEUE drops, "
                                f"agent CPU {cpu:.2f} s{per}")

    def _agent_counters(self) -> None:
        agent = self.agent
        status = agent.status() or {}
        counters = status.get("counters", {})
        keep = {k: counters[k] for k in ("webfilter", "atp", "firewall", "pipeline", "worker") if k in counters}
        alerts, top = eve_alerts(agent.eve_path) if agent.eve_path.is_file() else (0, [])
        self.agent_counters = {"counters": keep, "alerts": alerts, "top": top,
                               "engines": sorted(set(counters) - {"pipeline", "flows", "worker"}),
                               "summaries": status.get("engines", {})}
        self.block.lines.append(f"agent: {alerts} alerts in eve.json" + (f" ({top})" if top else ""))

    def run(self) -> None:
        for run in range(self.runs):
            for mode in rotated(["bare", "agent"], run):
                self.run_block(mode, run)

    # -- report parts ----------------------------------------------------------------------
    def run_notes(self) -> list[str]:
        notes = list(self.notes)
        for m in LAB_METRICS:
            note = noise_note(m, self.samples["bare"].get(m.key, []), self.samples["agent"].get(m.key, []))
            if note:
                notes.append(note)
        if self.starts:
            notes.append("Agent start to all workers ready (UT1 and the feed loaded once, before the workers fork), and "
                         "its RSS/PSS then, agent + workers: " + "; ".join(self.starts) + ".")
        if self.agent_counters.get("engines"):
            notes.append("Engines with counters in the agent (status.json): " + ", ".join(self.agent_counters["engines"])
                         + f"; alerts in the last agent block's eve.json: {self.agent_counters.get('alerts', 0)} "
                         "(the bench's names are allowed: 0 expected).")
        if self.dns_problems:
            notes.append(f"DNS answers that were not the expected record (not counted in the percentiles): "
                         f"{dict(self.dns_problems)}.")
        if self.https_problems:
            notes.append(f"HTTPS connections that failed (not counted): {dict(self.https_problems)}.")
        if self.versions:
            notes.append("TLS versions negotiated: " + ", ".join(f"{v} {n:,}" for v, n in self.versions.most_common()) + ".")
        notes.append("Noise per block: the 1-minute load average at its start and the share of all CPU time during the "
                     "block used by processes outside the bench (user processes only), with the biggest: "
                     + "; ".join(self.loads) + ".")
        return notes

    def diagnostics(self) -> list[str]:
        out = ["### Per block", "", "In run order:", ""]
        for b in self.blocks:
            out.append(f"- run {b.run + 1} {b.mode}: " + "; ".join(b.lines or ["no measurement"]))
        if self.agent_counters.get("counters"):
            out += ["", "### Agent counters (last agent block, `status.json`)", "", "```json",
                    json.dumps(self.agent_counters["counters"], indent=1, sort_keys=True), "```"]
        return out


# ----------------------------------------------------------------------------- the driver
def agent_overrides(feeds: Sequence[Path]) -> dict[str, Any]:
    """The shipped config with the IPS off and ATP given the URLhaus feed files (the web filter gets
    the real UT1 lists from ``lab_config``)."""
    return {"engines.ips.enabled": False, "engines.atp.enabled": True, "engines.atp.feeds": [str(f) for f in feeds],
            "engines.webfilter.enabled": True}


def agent_description(overrides: dict[str, Any]) -> str:
    feeds = ", ".join(f"`{f}`" for f in overrides["engines.atp.feeds"]) or "none"
    return ("`vcr-agent bridge up` + `vcr-agent run` (LabAgent) with the shipped config/vcr-agent.yaml, the web filter "
            f"on the real UT1 lists (`engines.webfilter.database` = {UT1}, shipped policy) and "
            f"`engines.atp` = {{enabled: true, feeds: [{feeds}]}}, `engines.ips.enabled: false` (to isolate the filter); "
            "the firewall as shipped.")


def method_lines(runs: int, seconds: float) -> list[str]:
    return [
        f"Category database: a fresh child process (`python -m lab.bench.filter categories`) loads all of {UT1} with "
        f"`CategoryDB.load` {LOADS} times (wall-clock time; median reported). Memory: the process's RSS (psutil) after "
        "its imports and a `gc.collect()`, and again after the first load and a `gc.collect()`.",
        f"Look-up mix (seed {MIX_SEED}): {MIX_SIZE:,} look-ups. {URL_SHARE:.0%} are host + path: half a line of a UT1 "
        "`urls` file (host, 30% under `www.`, its path plus a tail such as `?id=N` or `/index.html`), half a random "
        "path on a listed or a made-up host. The rest are host names: half a line of a UT1 `domains` file, sampled "
        "with the lists' own weights (every category), as itself (30%), under `www.` (30%), under one (25%) or two "
        "(15%) random labels; a quarter near misses of listed names (random letters added before or after the first "
        "label: `notevil.example` for `evil.example`, never a subdomain of it); a quarter made-up names (one or two "
        "random labels under a common suffix). The notes give how many of each kind are in a category and blocked.",
        f"Look-up rate: `decide(db, policy, host, path)` (filters/webfilter/policy.py) with the shipped policy "
        f"(config/vcr-agent.yaml: blocked malware, phishing, cryptojacking, ddos; empty allow/deny lists) in a plain "
        f"loop on one thread, after {WARMUP:,} warm-up look-ups; {PASSES} passes, median. The figure judged is "
        "look-ups per CPU second of that thread (`time.process_time`), which is what one core does when the thread "
        "has it; the wall-clock rate is shown beside it (lower when other work on the shared machine takes the CPU). "
        "Even the CPU-time rate moves by some 20% with the other load (shared caches, the sibling hardware thread), "
        "so compare runs of the bench with their noise lines. "
        "The host-only and host+path parts are timed alone too, and `CategoryDB.lookup` (categories only, no "
        "policy) over the whole mix.",
        f"Threat intel: a fresh child (`python -m lab.bench.filter intel`) loads the data files of {URLHAUS} (every "
        f"file but README and LICENSE texts) with `load_feed` (format detected) and `ThreatIntel.build`, {LOADS} "
        f"times; RSS as above. Mixes of {MIX_SIZE:,} look-ups each: `match_domain` over half listed domain "
        "indicators (subdomain shapes as above), a quarter near misses, a quarter made-up names; `match_url` over half "
        "listed URLs (30% under `www.`, maybe followed by a query), a quarter other paths on listed hosts, a quarter "
        "made-up URLs; `match_ip` over half listed addresses, half random global IPv4 addresses.",
        "Lab: lab/netns.py (pc1 -- LAN switch -- UTM lan0|wan0 -- router -- internet hosts), each a network namespace "
        "on this machine; every client, server, the bridge and the agent share its CPUs. Baseline: `Lab.bridge_bare()` "
        "(br0 = lan0 + wan0, bridge-nf-call-iptables off: no netfilter). Agent: see above; it is started afresh for "
        f"each agent block and conntrack is flushed before every block. {runs} run{'s' if runs != 1 else ''}, each a bare and an agent block, "
        "the order alternating from run to run (bare first in odd runs); results are medians over the runs, "
        "percentiles are taken per block.",
        f"DNS: lab.dns (the lab DNS server) in an internet host at {DNS_IP} answers A records for "
        f"{runs * 2 * (DNS_QUERIES + DNS_WARMUP):,} made-up names (one or two random labels of {DNS_LABEL[0]}-"
        f"{DNS_LABEL[1]} characters under a common suffix, so that no list should hold them; every answer is checked, "
        "and one that is not the lab's record, e.g. the agent's sinkhole, is counted in the notes and not timed). A client in pc1 (`python -m "
        f"lab.bench.load dns-client`) sends {DNS_WARMUP} warm-up queries, then {DNS_QUERIES:,} sequential UDP "
        "queries, each for a different name (no block reuses a name: nothing can be served from a cache) and each "
        f"from a new socket bound to the next source port from {DNS_FIRST_PORT} on (a new flow per query, as stub "
        "resolvers do, so every query is inspected: the agent's firewall, web filter and ATP see the query and the "
        "answer); the round trip is `time.perf_counter()` from `send` to `recv`. p50/p90/p99 in ms; the goal is "
        f"on the agent's p50 minus the bare bridge's (≤ {DNS_GOAL_MS} ms, issue 4).",
        f"HTTPS: nginx in web (198.51.100.10:{HTTPS_PORT}, TLS, see the notes). `openssl s_time` cannot send SNI "
        f"(no `-servername` in OpenSSL 3.0), so the client is Python's ssl: {HTTPS_PROCS} processes in pc1 "
        f"(`python -m lab.bench.load https-load`), each opening one connection at a time for {seconds:g} s: "
        f"TCP connect, a full TLS handshake with SNI `{TLS_NAME}` (allowed; no session resumption), `GET /`, the "
        "response, then close with an RST (SO_LINGER 0, so no TIME_WAIT). conn/s = completed responses summed over "
        "the processes. Issue 4 sets no goal here; the data-path bench's goal for new connections "
        f"(agent ≥ {CONN_GOAL_RATIO:g}× bare) is applied. With the agent the SYN and the packets up to the "
        "ClientHello go through NFQUEUE (the firewall decides the flow, the web filter and ATP read the SNI); the rest "
        "of the connection takes the connmark fast path.",
        "Noise: the machine is shared; the CPU use of other processes is sampled before and after the bench "
        "(lab.bench.host `machine_noise`) and for every lab block (see the notes).",
    ]


def run_filter_bench(args: argparse.Namespace) -> int:
    """``python -m lab bench --suite filter``: measure, print the tables, write the ``filter`` section of args.out."""
    from lab.netns import Lab

    if args.runs < 1 or args.seconds <= 0:
        print("bench: --runs must be >= 1 and --seconds > 0", file=sys.stderr)
        return 2
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="vcr-benchfilter-"))
    print(f"bench filter: lab {args.prefix}, {args.runs} run(s), {args.seconds:g} s per HTTPS measurement; "
          f"work dir {workdir}", flush=True)
    noise = [machine_noise("Before the bench")]
    print(f"bench filter: {noise[0]}", flush=True)
    cats, cats_error = (None, f"skipped: {UT1} not found") if not UT1.is_dir() else (None, "")
    if not cats_error:
        print(f"bench filter: category database: {UT1}", flush=True)
        cats, cats_error = run_child("categories", "--ut1", str(UT1), "--size", str(MIX_SIZE), "--seed", str(MIX_SEED))
    feeds = feed_files(URLHAUS) if URLHAUS.is_dir() else []
    intel, intel_error = None, (f"skipped: no feed in {URLHAUS}" if not feeds else "")
    if feeds:
        print(f"bench filter: threat intel: {', '.join(str(f) for f in feeds)}", flush=True)
        intel, intel_error = run_child("intel", *(a for f in feeds for a in ("--feed", str(f))),
                                       "--size", str(MIX_SIZE), "--seed", str(MIX_SEED))
    overrides = agent_overrides(feeds)
    lab = Lab(args.prefix, log_dir=workdir / "lab")
    lab.add_internet_host(DNS_HOST, DNS_IP)
    with lab:
        bench = FilterLab(lab, args.runs, args.seconds, workdir, overrides)
        try:
            bench.start_servers()
            bench.run()
        except BenchError as exc:
            print(f"bench filter: lab: ERROR {exc}", flush=True)
            bench._error("bare", [m.key for m in LAB_METRICS], str(exc))
    noise.append(machine_noise("After the bench"))
    took = time.monotonic() - started
    notes = []
    if cats:
        notes.append(_mix_note(cats))
        skipped = cats["db"]["skipped"]
        if skipped:
            notes.append("Lines the loader skipped: " + ", ".join(f"{n:,} {why}" for why, n in skipped.items())
                         + " (see the loader's log).")
        notes.append("Load samples, wall / CPU: "
                     + "; ".join(f"{w:.2f} / {c:.2f} s" for w, c in cats["load_samples"])
                     + ". `CategoryDB.lookup()` passes over the mix, wall / CPU: "
                     + "; ".join(f"{w:.2f} / {c:.2f} s" for w, c in cats["timings"]["lookup_mix"])
                     + f". The bench's TLS name {TLS_NAME} is `{cats['tls_name']}` under the shipped policy.")
        mix = rates(cats["sizes"]["mix"], cats["timings"]["lookup_mix"])
        if (mix["wall"] >= LOOKUP_GOAL) != (mix["cpu"] >= LOOKUP_GOAL):
            notes.append(f"Look-ups: the wall-clock rate ({mix['wall']:,.0f}/s) and the per-CPU-second rate "
                         f"({mix['cpu']:,.0f}/s) fall on different sides of the goal: other work took the CPU.")
    if intel:
        notes.append(_intel_note(intel))
        if intel["skipped"]:
            notes.append(f"Feed lines skipped: {intel['skipped']}.")
    notes += bench.run_notes()
    report = FilterReport(
        date=dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        machine=machine(),
        command=command_line(args.runs, args.seconds), noise=noise, categories=cats, categories_error=cats_error,
        intel=intel, intel_error=intel_error, lab=lab_rows(bench.samples, bench.errors), samples=bench.samples,
        agent_config=agent_description(overrides), notes=notes, method=method_lines(args.runs, args.seconds),
        diagnostics=bench.diagnostics(), duration=f"the bench took {took / 60:.1f} min")
    out = Path(args.out)
    write_section(out, SECTION, render_markdown(report))
    print()
    print(render_terminal(report))
    print(f"\nbench filter: {took:.0f} s; section `{SECTION}` of {out} written")
    if any(r.verdict == "error" for r in report.lab) or cats_error.startswith("error") or intel_error.startswith("error"):
        print(f"bench filter: logs kept in {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0 if report.ok() else 1


# ----------------------------------------------------------------------------- the children's entry point
def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lab.bench.filter", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="role", required=True)
    p = sub.add_parser("categories", help="UT1 load time, memory and decide() rates (fresh process)")
    p.add_argument("--ut1", type=Path, default=UT1)
    p.add_argument("--size", type=int, default=MIX_SIZE)
    p.add_argument("--seed", type=int, default=MIX_SEED)
    p = sub.add_parser("intel", help="feed load time, memory and match rates (fresh process)")
    p.add_argument("--feed", type=Path, action="append", required=True)
    p.add_argument("--size", type=int, default=MIX_SIZE)
    p.add_argument("--seed", type=int, default=MIX_SEED)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """The measuring children: ``python -m lab.bench.filter categories|intel ...``."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    if args.role == "categories":
        print(json.dumps(categories_child(args.ut1, args.size, args.seed, LOADS, PASSES)))
    else:
        print(json.dumps(intel_child(args.feed, args.size, args.seed, LOADS, PASSES)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
