"""The data-path benchmark (``python -m lab bench``): the bare bridge against two agent configurations.

Every lab scenario is measured on the bare bridge (``Lab.bridge_bare``, the baseline) and through the
running agent (``vcr-agent bridge up`` + ``vcr-agent run``) in two configurations, firewall only and
the IPS with ET Open, in the same invocation, ``--runs`` times each, rotating the order of the modes;
bulk TCP also through br_netfilter alone and the kernel floor. The report (lab/bench/dataplane_report.py)
gives medians, each configuration's ratio to (or, for latency, its difference from) the baseline, and
the goals. Without the lab, the offline IPS throughput (lab/bench/offline.py) is measured first.
Everything goes to the ``dataplane`` section of docs/benchmarks.md.

The clients and servers inside the namespaces are the roles of lab/bench/load.py.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from agent.dataplane.ruleset import MARK_ACCEPT, MARK_MASK
from lab.agentrun import LabAgent
from lab.bench.blocks import agent_mode, bare_bridge, block_noise, measure, record_error, rotated
from lab.bench.capture import (
    BULK_PORTS,
    CAPTURE_DNS_QUERIES,
    CAPTURE_HTTP_FLOWS,
    CAPTURE_SEED,
    CAPTURE_TLS_FLOWS,
    HTTP_BODY_RANGE,
    HTTP_GZIP_SHARE,
    MSS,
)
from lab.bench.dataplane_report import (
    BULK_OMIT,
    CONFIDENCE,
    FLOOR_GOAL,
    FLOOR_PAIRED,
    FW_METRICS,
    IPS_METRICS,
    METRICS,
    Report,
    Section,
    command_line,
    paired_row,
    render_markdown,
    render_terminal,
)
from lab.bench.doc import write_section
from lab.bench.host import (
    NFQUEUE_PROC,
    NGINX_HEAD,
    BenchError,
    QueueStats,
    agent_cpu_seconds,
    agent_memory,
    busy_share,
    cpu_ticks,
    ensure_nginx,
    eve_alerts,
    helper_argv,
    helper_env,
    helper_results,
    listening,
    machine,
    machine_noise,
    parse_nfqueue,
    process_tree,
    read_text,
    start_nginx,
)
from lab.bench.offline import ET_OPEN, ET_OPEN_MISSING, OfflineResult, et_open_files, offline_throughput
from lab.bench.report import (Metric, Row, compare_rows, median, median_interval, noise_note, paired, percentile, summarize,
                              verdict_ok)
from lab.netns import Lab

log = logging.getLogger(__name__)

LOAD = "lab.bench.load"  # the module of the load generators (python -m lab.bench.load ROLE)
IPERF_PORT = 5201
BULK_REPEATS = 3  # iperf3 runs per bulk measurement; the median is the run's figure
FLOOR_PAIRS = 12  # paired runs of the firewall-only agent and the kernel floor (the goal's figure)
PAIR_SECONDS = 3  # each paired iperf3 run, after the omitted start: short, so that a pair sees the same machine
HTTP_PORT = 8080
ECHO_PORT = 7007
SINK_PORT = 9  # UDP discard: the flow-table packets are dropped by web's own INPUT chain
HTTP_CONCURRENCY = 128
CLIENT_PORTS = "1024 65535"
PING_COUNT = 200
PING_INTERVAL = "0.01"
PING_SLOW_MS = 5.0  # a reply this slow was held up (the bare bridge answers in about 0.1 ms)
RR_COUNT = 2000
RR_SIZE = 64
UDP_PAYLOAD = 64
UDP_PROBE_SECONDS = 2
UDP_START_PPS = 20_000
UDP_SENDERS = ("pc1", "pc2")
UDP_PORTS = (IPERF_PORT, IPERF_PORT + 1)
UDP_MAX_PROBES = 5
UDP_SOCKET_BUFFER = "2M"
SATURATED = 0.9  # a probe that sent less than this share of its target rate is generator-limited
FLOW_TARGET = 100_000
FLOW_HOSTS = range(100, 200)  # secondary addresses 192.0.2.100-.199 on pc1
FLOW_PORT_BASE = 20_000
FLOW_RATE = 10_000
IPS_FLOW_RATE = 4_000  # the IPS inspects every flow's packet: about 5k pkt/s over two workers
FLOW_PASSES = 3
CONNTRACK_MAX = "/proc/sys/net/netfilter/nf_conntrack_max"
IPS_START_TIMEOUT = 120.0  # the agent compiles ET Open (about 8 s alone) before its workers bind
SETTLE_TIMEOUT = 15.0  # seconds a scenario waits for the queues the one before it filled to drain
# The data path's nginx: a plain HTTP server block after the benches' common head (lab/bench/host.py).
NGINX_CONF = NGINX_HEAD + """  server {{ listen {port} reuseport backlog=4096; location / {{ return 200 "ok\\n"; }} }}
}}
"""


KERNEL = "kernel"  # the mode of the kernel floor: the fast path's kernel work, no agent
BRNF = "brnf"  # br_netfilter alone: the bridge hands IP packets to empty netfilter hooks, no rules, no conntrack
BULK_ONLY = (BRNF, KERNEL)  # modes that only answer the bulk-throughput question
KERNEL_TITLE = "Kernel floor (the fast path without the agent)"
KERNEL_CHAIN = "VCR-FLOOR"
ACCT_SYSCTL = "net.netfilter.nf_conntrack_acct"


def pair_order(pairs: int) -> list[tuple[str, str]]:
    """The modes of each pair, in run order: (fw, kernel), (kernel, fw), ... (ABBA): each mode goes first in
    half the pairs, so a drift within a pair favours neither, and the second run of a pair and the first of
    the next are in the same mode (one set-up for both)."""
    return [("fw", KERNEL) if i % 2 == 0 else (KERNEL, "fw") for i in range(pairs)]


def floor_ruleset(bridge: str) -> str:
    """iptables-restore text of the kernel floor: what a decided flow costs the kernel in the agent's design.

    The same FORWARD jump as the agent's and the same first rule (the connmark compare of the fast
    path); the first packet of a connection sets the accept mark instead of going to NFQUEUE."""
    m = f"0x{MARK_MASK:x}"
    return "\n".join([
        "*filter",
        f":{KERNEL_CHAIN} - [0:0]",
        f"-A FORWARD -i {bridge} -o {bridge} -j {KERNEL_CHAIN}",
        f"-A {KERNEL_CHAIN} -m connmark --mark 0x{MARK_ACCEPT:x}/{m} -j ACCEPT",
        f"-A {KERNEL_CHAIN} -j CONNMARK --set-xmark 0x{MARK_ACCEPT:x}/{m}",
        "COMMIT",
        "",
    ])


KERNEL_HEADERS = ("Baseline (median)", "Measured (median)", "Ratio")
KERNEL_DESCRIPTION = (
    "no agent. The bridge with br_netfilter on, conntrack with byte counters (as `bridge up` sets it) and, in "
    "both families, the agent's FORWARD jump (`-i br0 -o br0`) to one chain whose first rule is the fast path's "
    "connmark compare; a connection's first packet sets the accept mark there instead of going to NFQUEUE. This is "
    "the kernel work every packet of a decided flow costs in the agent's design (connmark offload through "
    "iptables), whatever the agent does: the firewall-only agent cannot be faster than this floor beyond run-to-run "
    "noise. The first row takes one step less: br_netfilter on with no rule at all, which any NFQUEUE on bridged "
    "traffic needs.")


@dataclass(frozen=True)
class Setup:
    """An agent configuration measured against the bare bridge: the shipped config plus ``overrides``."""

    mode: str  # its key in the samples: "fw" | "ips"
    title: str
    overrides: dict[str, Any]
    metrics: tuple[Metric, ...]
    description: str
    start_timeout: float = 30.0
    memory: bool = False  # run the 100k-flow memory scenario with it
    flow_rate: int = FLOW_RATE  # pkt/s of the memory scenario's sender (as fast as the workers keep up)
    skipped: str = ""  # why it is not measured (rows are marked, the bench goes on)


def shipped_engines() -> list[str]:
    """The engine sections of the shipped config/vcr-agent.yaml (the agent's configurations start from it)."""
    import yaml

    from lab.agentrun import EXAMPLE_CONFIG

    data = yaml.safe_load(EXAMPLE_CONFIG.read_text(encoding="utf-8")) or {}
    return sorted(data.get("engines") or {})


def engines_off(engines: Sequence[str], keep: set[str]) -> dict[str, Any]:
    """Overrides switching off every engine of ``engines`` but those in ``keep``."""
    return {f"engines.{name}.enabled": False for name in engines if name not in keep}


def _overrides_text(overrides: dict[str, Any]) -> str:
    return ", ".join(f"`{k}: false`" for k, v in overrides.items() if v is False)


def agent_setups(et_open: Path = ET_OPEN, engines: Sequence[str] | None = None) -> list[Setup]:
    """The two agent configurations: firewall only, and the firewall with the IPS loaded with ET Open
    (skipped without it). Each switches off the other engines of the shipped config (``engines``)."""
    engines = shipped_engines() if engines is None else engines
    off = engines_off(engines, {"firewall"})
    fw = Setup("fw", "Agent, firewall only", off, FW_METRICS,
               f"the shipped config/vcr-agent.yaml with {_overrides_text(off) or 'no change'}: the firewall engine "
               "and the connmark fast path. Goals of the foundation issue.", memory=True)
    rules, classification = et_open_files(et_open)
    off = engines_off(engines, {"firewall", "ips"})
    desc = (f"the shipped config with {_overrides_text(off) + ', ' if off else ''}`engines.ips.rule_files` = the "
            f"{len(rules)} `*.rules` files of {et_open} (sorted) and `engines.ips.classification` = its "
            "classification.config: the firewall as shipped and the IPS with ET Open. Goal: bulk ≥ 0.8× bare; the "
            "rest is reported.")
    if classification is None:
        return [fw, Setup("ips", "Agent, IPS with ET Open", {}, IPS_METRICS, desc,
                          skipped=f"{ET_OPEN_MISSING} (no *.rules and classification.config in {et_open})")]
    overrides = {**off, "engines.ips.rule_files": [str(f) for f in rules],
                 "engines.ips.classification": str(classification)}
    return [fw, Setup("ips", "Agent, IPS with ET Open", overrides, IPS_METRICS, desc, start_timeout=IPS_START_TIMEOUT,
                      memory=True, flow_rate=IPS_FLOW_RATE)]


def skipped_rows(setup: Setup) -> list[Row]:
    """Rows of a configuration that was not measured, each saying why."""
    reason = setup.skipped.split(" (")[0]
    return [Row(m, None, None, "—", reason) for m in setup.metrics]


# ----------------------------------------------------------------------------- parsing
def parse_ping(text: str) -> list[float]:
    """Round-trip times in ms from ``ping`` output (one ``time=X ms`` per reply)."""
    return [float(m) for m in re.findall(r"time[=<]([0-9.]+) ms", text)]


def ping_tail(rtts: Sequence[float], slow_ms: float = PING_SLOW_MS) -> str:
    """The shape of ping's tail: the slowest reply, and how many replies were slow in how many runs of
    consecutive ones (one long stall delays a run of pings queued behind it, each a little less)."""
    slow = [rtt > slow_ms for rtt in rtts]
    runs = sum(1 for i, s in enumerate(slow) if s and (i == 0 or not slow[i - 1]))
    return (f"slowest {max(rtts, default=0):.1f} ms; {sum(slow)} of {len(rtts)} replies over {slow_ms:g} ms"
            + (f", in {runs} run(s) of consecutive replies" if runs else ""))


def parse_iperf(text: str) -> dict[str, Any]:
    """iperf3 -J output; BenchError when it is not JSON or reports an error."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise BenchError(f"iperf3 printed no JSON: {text[-300:]!r}") from exc
    if data.get("error"):
        raise BenchError(f"iperf3: {data['error']}")
    return data


def iperf_tcp_gbps(data: dict[str, Any]) -> float:
    """Received Gbit/s of an iperf3 TCP test (without the omitted start, when -O was given)."""
    return float(data["end"]["sum_received"]["bits_per_second"]) / 1e9


def iperf_omitted_gbps(data: dict[str, Any]) -> float | None:
    """Sent Gbit/s over the omitted start of an iperf3 TCP test (-O), or None when nothing was omitted."""
    omitted = [i["sum"] for i in data.get("intervals", []) if i.get("sum", {}).get("omitted")]
    secs = sum(float(i["seconds"]) for i in omitted)
    if not omitted or secs <= 0:
        return None
    return sum(float(i["bytes"]) for i in omitted) * 8 / secs / 1e9


def iperf_udp(data: dict[str, Any]) -> tuple[float, int]:
    """(packets per second sent, packets lost) of an iperf3 UDP test."""
    total = data["end"]["sum"]
    seconds = float(total.get("seconds") or 0) or 1.0
    return int(total.get("packets", 0)) / seconds, int(total.get("lost_packets", 0))


def search_rate(probe: Callable[[int], tuple[float, bool]], start: int, max_probes: int) -> tuple[float, bool, list[tuple[int, float, bool]]]:
    """Highest zero-loss rate: double from ``start`` until a probe fails, then bisect.

    ``probe(target)`` returns (achieved rate, ok). A passing probe that fell short of its target
    means the generator is the limit: the search stops there. Returns (best achieved rate,
    generator-limited, [(target, achieved, ok), ...]).
    """
    best, limited = 0.0, False
    good, bad = 0, None
    target = start
    history: list[tuple[int, float, bool]] = []
    for _ in range(max_probes):
        achieved, ok = probe(target)
        history.append((target, achieved, ok))
        saturated = achieved < SATURATED * target
        if ok:
            if achieved > best:
                best, limited = achieved, saturated
            good = max(good, target)
            if saturated:
                break
        else:
            bad = target if bad is None else min(bad, target)
        if bad is None:
            target *= 2
        else:
            nxt = (good + bad) // 2
            if bad - good <= max(good, 1) * 0.1 or nxt in (good, bad):
                break
            target = nxt
    return best, limited, history


# ----------------------------------------------------------------------------- the method (docs/benchmarks.md)
def _interval_text(n: int) -> str:
    """Which order statistics the interval of ``n`` pairs' median is, and its coverage."""
    interval = median_interval([float(i) for i in range(1, n + 1)], CONFIDENCE)
    if interval is None:
        return f"{n} pairs are too few for one"
    k = int(interval[0])
    nth = f"{k}{ {1: 'st', 2: 'nd', 3: 'rd'}.get(k, 'th') }"
    return f"with {n} pairs, from the {nth} smallest to the {nth} largest ratio, {interval[2]:.1%} coverage"


METHOD = [
    "Topology: the lab of lab/netns.py: pc1/pc2 -- LAN switch -- UTM (lan0|wan0) -- router -- web "
    "(198.51.100.10), each a network namespace joined by veth pairs on one machine. Every client, server, "
    "the bridge and the agent share the same CPUs, so the agent's CPU time is taken from the load "
    "generators: the ratios are pessimistic for a box whose agent has cores of its own.",
    "Baseline: `Lab.bridge_bare()`, a plain Linux bridge br0 = lan0 + wan0 with bridge-nf-call-iptables off "
    "(no netfilter at all). Agent: `vcr-agent bridge up` + `vcr-agent run` (LabAgent) with the shipped "
    "config/vcr-agent.yaml plus the overrides of each configuration, i.e. br_netfilter, conntrack, the VCR-* "
    "chains, NFQUEUE with one worker per CPU, and the connmark fast path for decided flows. With ET Open the "
    f"agent is given {IPS_START_TIMEOUT:g} s to compile the rules and bind its queues.",
    "Kernel floor (`Bench.kernel_floor`): the bare bridge with br_netfilter on, conntrack byte counters on and "
    "`floor_ruleset`: the agent's FORWARD jump and fast-path compare, with the first packet of each connection "
    "marked accept in the kernel instead of queued. br_netfilter alone: the bare bridge with br_netfilter on and no "
    "rule at all (no conntrack either): the part of the floor that any NFQUEUE on bridged traffic brings. Only bulk "
    "TCP is measured in these two modes. They separate what the kernel mechanism of the design costs from what the "
    "agent adds.",
    f"Bulk TCP, the firewall-only agent against the kernel floor, paired (the goal's row; `--scenarios floor`, "
    f"with `--modes fw,kernel` or all): the medians of the blocks cannot resolve a few percent, because the bulk "
    f"rate swings by a quarter from run to run, whatever the mode. So, after the runs, {FLOOR_PAIRS} pairs "
    f"of one `iperf3 -P 4 -t {PAIR_SECONDS} -O {BULK_OMIT}` run each, one through the firewall-only agent and one "
    "through the kernel floor, back to back, in the order fw, kernel | kernel, fw | fw, kernel ... (`pair_order`: "
    "each mode goes first in half the pairs; the second run of a pair and the first of the next share one set-up). "
    "Each side is exactly the mode of its block above (`Bench.mode`): the agent is `bridge up` + a fresh `vcr-agent "
    "run` and its bridge taken down afterwards; the floor is the bare bridge with `floor_ruleset`; conntrack is "
    "flushed at each switch. So the pairs compare the same two set-ups as the goal, with every cost of the agent in "
    "(its bridge, its ruleset, the first packets it decides, its process), only seconds apart, so that what drifts "
    "over minutes (other load on the machine) cancels within a pair. Swapping only the FORWARD jump under a running "
    "agent would be quicker but measure nothing: an established flow meets the same first rule in both chains. The "
    f"figure is the median of the {FLOOR_PAIRS} per-pair ratios agent/floor; the interval is the distribution-free "
    f"{CONFIDENCE:.0%} interval of that median (the sign test inverted, `median_interval`: "
    f"{_interval_text(FLOOR_PAIRS)}; it assumes nothing about the shape of the noise, only that the pairs are "
    f"independent). Verdict: pass when the whole interval is at or above {FLOOR_GOAL:g}×, FAIL when it is wholly "
    f"below, \"within noise\" when it spans {FLOOR_GOAL:g}× (the bench cannot tell at this many pairs; it does not "
    "fail the bench then). Each paired run's rate, the agent's CPU during it and how busy the machine was are listed "
    "under Diagnostics.",
    "Each run measures every scenario in every mode (bare, br_netfilter alone, kernel floor, then each agent "
    "configuration); the order rotates from run to run (bare, brnf, kernel, fw, ips; brnf, kernel, fw, ips, bare; ...) "
    "so slow drift hits all of them. The agent is "
    "started afresh for each block and conntrack is flushed between blocks. With the agent, each scenario starts once "
    "no packet waits in its queues (/proc/net/netfilter/nfnetlink_queue), so a backlog the new-connection load left "
    "does not count as latency. Results are medians over the runs; "
    "latency percentiles are taken per run, then the median over runs.",
    f"Bulk TCP: `iperf3 -c web -P 4 -t SECONDS -O {BULK_OMIT} -J` from pc1, received Gbit/s over SECONDS after the "
    f"first {BULK_OMIT} s (iperf3's omit: TCP slow start, and with the IPS the inspection of each stream's first MiB "
    "in Python, are left out of the bulk rate and shown in a row of their own, sent Gbit/s over that first second), "
    f"{BULK_REPEATS} times back to back in each block; the block's figure is their median (each iperf3 run is listed under Diagnostics). Over veth this is CPU-bound: the "
    "figure follows the CPU share iperf3 and the bridge's softirq work get, which other load on the machine "
    "changes from run to run (see the CPU shares under Diagnostics).",
    "New connections: an HTTP/1.1 server in web that closes after each response; load generators in pc1 and pc2 "
    f"(one process each, {HTTP_CONCURRENCY} connections in flight each, epoll) open a new TCP connection per "
    "`GET /` with `Connection: close` for SECONDS and count completed responses (ephemeral ports "
    f"{CLIENT_PORTS.replace(' ', '-')}). The client closes with "
    "SO_LINGER 0 (RST) after reading the response, so neither side piles up TIME_WAIT sockets and a reused "
    "port never meets an old connection. With the agent every SYN goes to NFQUEUE and the firewall engine "
    "in Python decides the flow; the rest of the connection takes the connmark fast path unless an engine (the "
    "IPS) still wants to see it.",
    f"Latency: `ping -c {PING_COUNT} -i {PING_INTERVAL}` pc1 -> web, and {RR_COUNT} round trips of a "
    f"{RR_SIZE}-byte message on one TCP connection to an echo server in web (TCP_NODELAY); p50/p99 in ms. "
    "The goal is on agent minus bare.",
    f"Small packets: `iperf3 -u -l {UDP_PAYLOAD} -b RATE/2 -t {UDP_PROBE_SECONDS} -w {UDP_SOCKET_BUFFER}` from pc1 "
    "and from pc2 at the same time, each to its own iperf3 server in web; the total target rate starts at "
    f"{UDP_START_PPS:,} pkt/s and doubles until a probe loses a packet (iperf3's "
    "lost_packets), NFQUEUE drops one (queue_dropped + user_dropped in the UTM's "
    f"{NFQUEUE_PROC}) or a full queue lets one pass uninspected (fail-open: the packets the NFQUEUE rules of "
    f"VCR-FWD counted minus the queues' id sequences, less queue_dropped), then bisects; at most {UDP_MAX_PROBES} probes. The figure is the achieved rate of the "
    "best loss-free probe. Each iperf3 3.x client sends from one thread; when they cannot reach their target the figure is "
    "marked generator-limited (a lower bound for the bridge). On this machine a sender's own CPU also runs the "
    "forwarding path of its packets (veth, bridge, router), so the generator limit is largely the cost of that path.",
    "Memory, for each agent configuration after the runs: "
    f"a fresh agent; pc1 gets secondary addresses 192.0.2.{FLOW_HOSTS[0]}-.{FLOW_HOSTS[-1]} and a raw "
    f"socket sends one UDP packet per (address, source port) pair to web port {SINK_PORT} (dropped by web's "
    f"INPUT chain), {len(FLOW_HOSTS) * (FLOW_TARGET // len(FLOW_HOSTS)):,} distinct flows paced at "
    f"{FLOW_RATE:,} pkt/s ({IPS_FLOW_RATE:,} pkt/s with ET Open, where every one goes through the IPS), "
    f"repeated (up to {FLOW_PASSES} passes) until the agent's "
    "`counters.flows.active` reaches the target. The flows spread over the "
    "workers by a symmetric 5-tuple hash (HMARK). RSS is summed over the agent process and its "
    "workers with psutil (forked workers share pages, so the RSS sum overstates; PSS is given in the notes). "
    "Every agent block also records the RSS right after start (idle, rules loaded): see the notes.",
    "Offline IPS throughput: no lab. A synthetic capture is written once to a temporary directory (lab/bench/capture.py "
    f"`write_capture`, seed {CAPTURE_SEED}): {CAPTURE_HTTP_FLOWS} HTTP/1.1 flows (handshake, 1-3 GETs with browser "
    f"headers, HTML responses of {HTTP_BODY_RANGE[0] // 1000}-{HTTP_BODY_RANGE[1] // 1000} KB, log-uniform, "
    f"{HTTP_GZIP_SHARE:.0%} gzip, FIN close), {CAPTURE_DNS_QUERIES} DNS queries and answers, {CAPTURE_TLS_FLOWS} TLS "
    "flows (browser-like ClientHello, TLS 1.2 ServerHello, ciphertext), and TCP bulk of random bytes to ports "
    f"{', '.join(map(str, BULK_PORTS))}; clients in 192.168.10.0/24 (Suricata's default HOME_NET), servers in "
    f"198.51.100.0/24; {MSS}-byte segments, ACK every second segment. A child process (`python -m lab.bench.offline`) "
    "loads ET Open as `vcr-agent pcap -r FILE -S RULES` does (`offline_config(None, [], rule_files)`, "
    "`build_engines`), timed and with RSS before/after, then runs `agent.offline.replay.run_pcap` over the capture with "
    "those engines (EVE to a file), timed alone. The limit: one hyperscan block-mode database of every fast "
    "pattern of the loaded detector (same flags as its prefilters: single-match, caseless where nocase) scans "
    "the L4 payload of every packet, timed without and with a Python match callback. The ratio compares both "
    "on the same payload bytes.",
]


# ----------------------------------------------------------------------------- the benchmark run
FLOOR_SCENARIO = "bulk TCP, paired against the floor"
SCENARIOS = {"bulk": "bulk TCP", "connections": "new connections", "latency": "latency", "udp": "small packets",
             "floor": FLOOR_SCENARIO, "memory": "memory", "offline": "offline"}  # --scenarios names -> the scenarios' own


@dataclass(frozen=True)
class Selection:
    """A partial bench (``--scenarios``, ``--modes``): some scenarios in some modes (the bare bridge
    always, as the baseline), e.g. the small packets with the IPS alone while working on them."""

    scenarios: frozenset[str]  # the scenarios' own names (SCENARIOS' values)
    modes: frozenset[str] | None = None  # None: every mode

    @classmethod
    def parse(cls, scenarios: str | None, modes: str | None) -> "Selection | None":
        if not scenarios and not modes:
            return None
        names = [n.strip() for n in (scenarios or ",".join(SCENARIOS)).split(",") if n.strip()]
        unknown = [n for n in names if n not in SCENARIOS]
        if unknown:
            raise BenchError(f"unknown scenario {', '.join(unknown)} (known: {', '.join(SCENARIOS)})")
        chosen = frozenset(m.strip() for m in modes.split(",") if m.strip()) | {"bare"} if modes else None
        return cls(frozenset(SCENARIOS[n] for n in names), chosen)

    def has_scenario(self, name: str) -> bool:
        return name in self.scenarios

    def has_mode(self, mode: str) -> bool:
        return self.modes is None or mode in self.modes


class Bench:
    """One ``python -m lab bench``: servers in web, every mode per run, samples, notes and diagnostics."""

    def __init__(self, lab: Lab, runs: int, seconds: float, workdir: Path, setups: Sequence[Setup],
                 only: Selection | None = None) -> None:
        self.lab = lab
        self.only = only  # a partial run (--scenarios, --modes): these scenarios and modes alone
        setups = [s for s in setups if only is None or only.has_mode(s.mode)]
        self.runs = runs
        self.seconds = seconds
        self.workdir = workdir
        self.setups = {s.mode: s for s in setups}
        self.modes = ["bare", *BULK_ONLY, *(s.mode for s in setups if not s.skipped)]
        if only is not None:
            self.modes = [m for m in self.modes if only.has_mode(m) and self.scenarios(m)]
        self.web = lab.hosts["web"].ipv4
        every = ["bare", *BULK_ONLY, *self.setups]
        self.samples: dict[str, dict[str, list[float]]] = {m: {} for m in every}
        self.errors: dict[str, dict[str, list[str]]] = {m: {} for m in every}
        self.notes: list[str] = []
        self.diagnostics: dict[str, list[str]] = {}
        self.agent: LabAgent | None = None
        self.queued: dict[str, dict[str, list[str]]] = {m: {} for m in every}
        self.conn_errors = dict.fromkeys(every, 0)
        self.udp_limited = dict.fromkeys(every, 0)
        self.starts: dict[str, list[str]] = {m: [] for m in every}
        self.loads: list[str] = []
        self.bulk_cpu: list[str] = []
        self.engines: dict[str, list[str]] = {}
        self.iperf: dict[int, subprocess.Popen] = {}
        self.udp_errors: list[str] = []
        self.flow_addresses = False  # pc1 has the memory scenario's source addresses
        self.ping_tails: list[str] = []
        self.settles: list[str] = []  # scenarios that waited for a queue backlog to drain first
        self.pairs: list[tuple[float, float]] = []  # (kernel floor, fw agent) Gbit/s of each complete pair
        self.pair_errors: list[str] = []
        self.pair_lines: list[str] = []  # each paired run, for the diagnostics
        self.pair_starts: list[str] = []  # the paired runs' agent starts (kept apart from the blocks')

    # -- set-up ----------------------------------------------------------------------------
    def start_servers(self) -> None:
        lab = self.lab
        for port in {IPERF_PORT, *UDP_PORTS}:
            self.start_iperf(port)
        lab.start_tcp_listener("web", ECHO_PORT)
        lab.exec("web", ["iptables", "-A", "INPUT", "-p", "udp", "--dport", str(SINK_PORT), "-j", "DROP"])
        for pc in ("pc1", "pc2"):  # more ephemeral ports: fewer 4-tuples reused within a measurement
            lab.exec(pc, ["sysctl", "-q", "-w", f"net.ipv4.ip_local_port_range={CLIENT_PORTS}"])
        self._start_http()
        for port in {IPERF_PORT, HTTP_PORT, *UDP_PORTS}:
            self._wait_listening("web", port)

    def _wait_listening(self, host: str, port: int) -> None:
        if not listening(self.lab, host, port):
            raise BenchError(f"nothing listens on TCP port {port} in {host}")

    def _start_http(self) -> None:
        nginx, note = ensure_nginx()
        if nginx is not None:
            version = start_nginx(self.lab, "web", nginx, self.workdir / "nginx", NGINX_CONF, HTTP_PORT)
            self.notes.append(f"HTTP server: {version} ({note}), {os.cpu_count()} worker processes, access log off.")
            return
        procs = str(os.cpu_count() or 1)
        self.lab.popen("web", helper_argv(LOAD, "serve-close", "--port", str(HTTP_PORT), "--procs", procs),
                       name="serve-close", env=helper_env())
        self.notes.append(f"HTTP server: the pre-fork Python server of lab/bench/load.py ({procs} processes); {note}.")

    # -- modes -----------------------------------------------------------------------------
    @contextlib.contextmanager
    def mode(self, mode: str, run: int | str, starts: list[str] | None = None) -> Iterator[None]:
        """The UTM as a bare bridge or with the agent running, for one block of measurements (the agent's
        start goes to ``starts``, by default its configuration's)."""
        self.lab.exec("utm", ["conntrack", "-F"])
        if mode in ("bare", BRNF):  # a plain bridge; br_netfilter on (with no rule) in BRNF
            with bare_bridge(self.lab, netfilter=mode == BRNF):
                self._wait_path()
                yield
            return
        if mode == KERNEL:
            with self.kernel_floor():
                self._wait_path()
                yield
            return
        setup = self.setups[mode]
        with agent_mode(self, self.workdir / f"agent-{mode}-{run}", setup.overrides, setup.start_timeout,
                        self.starts[mode] if starts is None else starts):
            yield

    @contextlib.contextmanager
    def kernel_floor(self) -> Iterator[None]:
        """The bridge with br_netfilter, conntrack (with byte counters, as the agent sets it) and
        ``floor_ruleset`` in both families; everything is undone afterwards."""
        lab = self.lab
        acct = lab.exec("utm", ["sysctl", "-n", ACCT_SYSCTL]).stdout.strip() or "0"
        with bare_bridge(lab, netfilter=True):
            try:
                lab.exec("utm", ["sysctl", "-q", f"{ACCT_SYSCTL}=1"], check=True)
                for restore in ("iptables-restore", "ip6tables-restore"):
                    lab.exec("utm", [restore, "--noflush", "-w"], input=floor_ruleset("br0"), check=True)
                yield
            finally:
                for tool in ("iptables", "ip6tables"):
                    lab.exec("utm", [tool, "-w", "-D", "FORWARD", "-i", "br0", "-o", "br0", "-j", KERNEL_CHAIN])
                    lab.exec("utm", [tool, "-w", "-F", KERNEL_CHAIN])
                    lab.exec("utm", [tool, "-w", "-X", KERNEL_CHAIN])
                lab.exec("utm", ["sysctl", "-q", f"{ACCT_SYSCTL}={acct}"])

    def _wait_path(self) -> None:
        if not self.lab.wait_tcp("pc1", self.web, ECHO_PORT, 10):
            raise BenchError("pc1 cannot reach web through the UTM")

    def nfqueue(self) -> dict[int, QueueStats]:
        return parse_nfqueue(self.lab.exec("utm", ["cat", NFQUEUE_PROC]).stdout)

    def nfq_drops(self) -> int:
        return sum(q.dropped + q.user_dropped for q in self.nfqueue().values())

    # -- scenarios -------------------------------------------------------------------------
    def iperf_bulk(self, seconds: float) -> tuple[dict[str, Any], float]:
        """One ``iperf3 -P 4`` run from pc1 to web of ``seconds`` after the omitted start: (its JSON, the
        share of the machine's CPU time that was busy meanwhile)."""
        before = cpu_ticks(read_text("/proc/stat"))
        res = self.lab.exec("pc1", ["iperf3", "-c", self.web, "-p", str(IPERF_PORT), "-P", "4", "-t",
                                    str(max(1, round(seconds))), "-O", str(BULK_OMIT), "-J"],
                            timeout=seconds + BULK_OMIT + 60)
        busy = busy_share(before, cpu_ticks(read_text("/proc/stat")))
        return parse_iperf(res.stdout), busy

    def bulk(self, mode: str) -> dict[str, float]:
        """BULK_REPEATS iperf3 runs back to back; the run's figure is their median (over veth the
        rate swings by a quarter from one run to the next, whatever the mode)."""
        rates, starts = [], []
        for _ in range(BULK_REPEATS):
            data, busy = self.iperf_bulk(self.seconds)
            gbps = iperf_tcp_gbps(data)
            rates.append(gbps)
            start = iperf_omitted_gbps(data)
            if start is not None:
                starts.append(start)
            cpu = data["end"].get("cpu_utilization_percent", {})
            self.bulk_cpu.append(f"{mode} {gbps:.2f} Gbit/s: iperf3 sender {cpu.get('host_total', 0):.0f}% + receiver "
                                 f"{cpu.get('remote_total', 0):.0f}% of a CPU, machine {busy * 100:.0f}% busy")
        mid, first = median(rates), median(starts)
        assert mid is not None
        return {"bulk_gbps": mid} | ({"bulk_start_gbps": first} if first is not None else {})

    def floor_pairs(self, pairs: int = FLOOR_PAIRS) -> None:
        """The goal's figure: ``pairs`` pairs of one short bulk run through the firewall-only agent and one
        through the kernel floor, back to back in ``pair_order``; each side in its own ``mode`` (the agent
        started afresh, the floor installed), one set-up for the runs of the same mode in a row. A pair
        one of whose runs failed is left out (the error is reported)."""
        runs = [(i, mode) for i, pair in enumerate(pair_order(pairs)) for mode in pair]
        rates: dict[int, dict[str, float]] = {}
        k = 0
        while k < len(runs):
            mode = runs[k][1]
            group = [i for i, m in runs[k:k + 2] if m == mode]
            k += len(group)
            print(f"floor pairs {', '.join(str(i + 1) for i in group)}/{pairs}: {mode} "
                  f"(load average {os.getloadavg()[0]:.2f})", flush=True)
            try:
                with self.mode(mode, f"pair{group[0] + 1}", self.pair_starts):
                    for i in group:
                        try:
                            rates.setdefault(i, {})[mode] = self.pair_run(mode, i)
                        except Exception as exc:  # noqa: BLE001 - the other pairs go on
                            log.exception("paired run %d (%s) failed", i + 1, mode)
                            self.pair_errors.append(f"pair {i + 1}, {mode}: {exc}")
            except Exception as exc:  # noqa: BLE001
                log.exception("paired runs %s (%s): set-up failed", group, mode)
                self.pair_errors.append(f"pair {group[0] + 1}, {mode}: {exc}")
        self.pairs = [(r[KERNEL], r["fw"]) for _, r in sorted(rates.items()) if KERNEL in r and "fw" in r]

    def pair_run(self, mode: str, i: int) -> float:
        """One paired bulk run: its Gbit/s, with the agent's CPU and how busy the machine was (diagnostics)."""
        pid = self.agent.proc.pid if self.agent and self.agent.proc else None
        cpu0 = agent_cpu_seconds(pid) if pid else 0.0
        data, busy = self.iperf_bulk(PAIR_SECONDS)
        gbps = iperf_tcp_gbps(data)
        cpu = f", agent CPU {agent_cpu_seconds(pid) - cpu0:.2f} s" if pid else ""
        self.pair_lines.append(f"pair {i + 1} {mode}: {gbps:.2f} Gbit/s{cpu}, machine {busy * 100:.0f}% busy")
        print(f"  {mode:5s} pair {i + 1}: {gbps:.2f} Gbit/s{cpu}", flush=True)
        return gbps

    def wants_pairs(self) -> bool:
        """Whether this run measures the paired goal: a full run, or a partial one with the floor scenario
        and both of its modes (the firewall-only agent must be set up)."""
        fw = self.setups.get("fw")
        if fw is None or fw.skipped:
            return False
        return self.only is None or self.only.has_scenario(FLOOR_SCENARIO) and self.only.has_mode(KERNEL)

    def connections(self, mode: str) -> dict[str, float]:
        argv = helper_argv(LOAD, "http-load", "--ip", self.web, "--port", str(HTTP_PORT), "--seconds", f"{self.seconds:g}",
                            "--concurrency", str(HTTP_CONCURRENCY))
        procs = [self.lab.popen(pc, argv, name=f"http-load-{pc}", env=helper_env(),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE) for pc in ("pc1", "pc2")]
        rate, errors = 0.0, 0
        for result in helper_results(procs, self.seconds + 60, "http load generator"):
            rate += result["done"] / max(result["elapsed"], 1e-6)
            errors += result["errors"]
        self.conn_errors[mode] += errors
        return {"conn_rate": rate}

    def latency(self, mode: str) -> dict[str, float]:
        res = self.lab.exec("pc1", ["ping", "-n", "-c", str(PING_COUNT), "-i", PING_INTERVAL, "-W", "1", self.web],
                            timeout=60)
        rtts = parse_ping(res.stdout)
        if len(rtts) < PING_COUNT * 0.9:
            raise BenchError(f"ping: only {len(rtts)} of {PING_COUNT} replies")
        self.ping_tails.append(f"{mode}: {ping_tail(rtts)}")
        rr = self.lab.exec("pc1", helper_argv(LOAD, "tcp-rr", "--ip", self.web, "--port", str(ECHO_PORT),
                                               "--count", str(RR_COUNT), "--size", str(RR_SIZE)),
                           env=helper_env(), timeout=120)
        try:
            rr_ms = json.loads(rr.stdout)["rtt_ms"]
        except (ValueError, KeyError):
            raise BenchError(f"tcp-rr failed: {rr.stderr[-300:]}") from None
        return {"ping_p50": percentile(rtts, 50), "ping_p99": percentile(rtts, 99),
                "rr_p50": percentile(rr_ms, 50), "rr_p99": percentile(rr_ms, 99)}

    def queue_bypassed(self) -> int:
        """Packets the NFQUEUE rules handed to a queue minus those the queues took (their id
        sequence): what a full queue let through uninspected (fail-open, NFQA_CFG_F_FAIL_OPEN; the
        kernel does not count these) or dropped (queue_dropped)."""
        if self.agent is None:
            return 0
        out = self.lab.exec("utm", ["iptables", "-w", "-L", "VCR-FWD", "-v", "-n", "-x"]).stdout
        ruled = sum(int(f[0]) for f in (line.split() for line in out.splitlines()[2:]) if len(f) > 2 and f[2] == "NFQUEUE")
        return ruled - sum(q.id_sequence for q in self.nfqueue().values())

    def udp_probe(self, mode: str, pps: int) -> tuple[float, bool]:
        """pc1 and pc2 each send half of ``pps`` to their own iperf3 server; (achieved pkt/s, loss-free).

        Loss-free means no packet lost, none dropped by a queue and none passed uninspected by a
        full queue (fail-open)."""
        before = self.nfq_drops()
        bypass0 = self.queue_bypassed() + sum(q.dropped for q in self.nfqueue().values())
        procs = []
        for pc, port in zip(UDP_SENDERS, UDP_PORTS):
            argv = ["iperf3", "-c", self.web, "-p", str(port), "-u", "-l", str(UDP_PAYLOAD),
                    "-b", str(pps * UDP_PAYLOAD * 8 // len(UDP_SENDERS)), "-t", str(UDP_PROBE_SECONDS),
                    "-w", UDP_SOCKET_BUFFER, "-J"]
            procs.append(self.lab.popen(pc, argv, name=f"iperf3-udp-{pc}", stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT))
        achieved, lost, failed = 0.0, 0, []
        for proc in procs:
            try:
                out, _ = proc.communicate(timeout=UDP_PROBE_SECONDS + 60)
                rate, n_lost = iperf_udp(parse_iperf(out.decode(errors="replace")))
            except (subprocess.TimeoutExpired, BenchError) as exc:
                proc.kill()
                failed.append(str(exc) or "iperf3 -u did not finish")
                continue
            achieved += rate
            lost += n_lost
        drops = self.nfq_drops() - before
        # a full queue's drops (queue_dropped) are in the rule count too: what is left passed uninspected
        bypassed = max(0, self.queue_bypassed() + sum(q.dropped for q in self.nfqueue().values()) - bypass0)
        log.info("udp probe %s %d pkt/s: sent %.0f pkt/s, lost %d, nfqueue drops %d, passed uninspected %d, errors %s",
                 mode, pps, achieved, lost, drops, bypassed, failed)
        if failed:  # counts as a lossy probe; a test that broke can leave iperf3's server "busy"
            self.udp_errors.append(f"{mode} at {pps:,} pkt/s: {'; '.join(failed)}")
            self.restart_udp_servers()
        return achieved, lost == 0 and drops == 0 and bypassed == 0 and not failed

    def restart_udp_servers(self) -> None:
        for port in UDP_PORTS:
            proc = self.iperf.pop(port, None)
            if proc is not None and proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
            self.start_iperf(port)
        for port in UDP_PORTS:
            self._wait_listening("web", port)

    def start_iperf(self, port: int) -> None:
        self.iperf[port] = self.lab.popen("web", ["iperf3", "-s", "-p", str(port)], name=f"iperf3-{port}")

    def small_packets(self, mode: str) -> dict[str, float]:
        def probe(pps: int) -> tuple[float, bool]:
            return self.udp_probe(mode, pps)

        best, limited, history = search_rate(probe, UDP_START_PPS, UDP_MAX_PROBES)
        if best <= 0:
            raise BenchError(f"no loss-free rate: {history}")
        self.udp_limited[mode] += int(limited)
        return {"udp_pps": best}

    def scenarios(self, mode: str) -> list[tuple[str, Callable[[], dict[str, float]], tuple[str, ...]]]:
        bulk = ("bulk TCP", lambda: self.bulk(mode), ("bulk_gbps", "bulk_start_gbps"))
        if mode in BULK_ONLY:
            every = [bulk]  # the floors are a bulk-throughput question
        else:
            every = [
                bulk,
                ("new connections", lambda: self.connections(mode), ("conn_rate",)),
                ("latency", lambda: self.latency(mode), ("ping_p50", "ping_p99", "rr_p50", "rr_p99")),
                ("small packets", lambda: self.small_packets(mode), ("udp_pps",)),
            ]
        return every if self.only is None else [sc for sc in every if self.only.has_scenario(sc[0])]

    def settle(self, mode: str, name: str) -> None:
        """Wait until no packet waits in the agent's queues (a scenario that saturated the workers
        leaves a backlog; the next one, latency above all, must start on an idle path)."""
        t0, empty = time.monotonic(), 0
        while empty < 2:
            queued = sum(q.waiting for q in self.nfqueue().values())
            empty = empty + 1 if queued == 0 else 0
            if time.monotonic() - t0 > SETTLE_TIMEOUT:
                self.settles.append(f"{mode} before {name}: {queued} packets still queued after {SETTLE_TIMEOUT:g} s")
                return
            time.sleep(0.02)
        took = time.monotonic() - t0
        if took > 0.1:
            self.settles.append(f"{mode} before {name}: {took:.1f} s")

    def run_scenarios(self, mode: str, run: int) -> None:
        for name, fn, keys in self.scenarios(mode):
            if self.agent:
                self.settle(mode, name)
            q0 = self.nfqueue() if self.agent else {}
            cpu0 = agent_cpu_seconds(self.agent.proc.pid) if self.agent and self.agent.proc else 0.0
            if measure(name, fn, keys, mode, run, self.samples, self.errors) is None:
                continue
            if self.agent and self.agent.proc:
                self._record_queue_use(mode, name, q0, agent_cpu_seconds(self.agent.proc.pid) - cpu0)

    def record_error(self, mode: str, keys: Sequence[str], message: str) -> None:
        record_error(self.errors, mode, keys, message)

    def _record_queue_use(self, mode: str, name: str, before: dict[int, QueueStats], cpu: float) -> None:
        after = self.nfqueue()
        split = {q: s.id_sequence - before.get(q, QueueStats(q, 0, 0, 0, 0)).id_sequence for q, s in after.items()}
        drops = sum(s.dropped + s.user_dropped for s in after.values()) - sum(
            s.dropped + s.user_dropped for s in before.values())
        text = " / ".join(f"q{q}: {n:,}" for q, n in sorted(split.items()))
        self.queued[mode].setdefault(name, []).append(
            f"{sum(split.values()):,} packets queued ({text}), {drops:,} NFQUEUE drops, agent CPU {cpu:.2f} s")

    # -- memory ----------------------------------------------------------------------------
    def memory(self, mode: str) -> None:
        """Scenario 5, once, with a fresh agent: RSS after 100k distinct flows."""
        agent = self.agent
        assert agent is not None and agent.proc is not None
        self._check_conntrack_max()
        if not self.flow_addresses:
            batch = "".join(f"addr add 192.0.2.{h}/24 dev eth0\n" for h in FLOW_HOSTS)
            self.lab.exec("pc1", ["ip", "-batch", "-"], input=batch)
            self.flow_addresses = True
        time.sleep(2.5)
        idle_rss, idle_pss = agent_memory(agent.proc.pid)
        rate = self.setups[mode].flow_rate
        ports = FLOW_TARGET // len(FLOW_HOSTS)
        argv = helper_argv(LOAD, "udp-flows", "--dst", self.web, "--dport", str(SINK_PORT), "--first", str(FLOW_HOSTS[0]),
                            "--last", str(FLOW_HOSTS[-1]), "--ports", str(ports), "--base-port", str(FLOW_PORT_BASE),
                            "--rate", str(rate))
        active, drops0 = 0, self.nfq_drops()
        for n in range(1, FLOW_PASSES + 1):
            res = self.lab.exec("pc1", argv, env=helper_env(), timeout=FLOW_TARGET / rate * 3 + 60)
            if res.returncode != 0:
                raise BenchError(f"udp-flows failed: {res.stderr[-300:]}")
            active = self._wait_flows(agent, FLOW_TARGET)
            print(f"  agent memory: pass {n}: {active:,} active flows", flush=True)
            if active >= FLOW_TARGET:
                break
        rss, pss = agent_memory(agent.proc.pid)
        self.samples[mode].setdefault("rss_mib", []).append(rss)
        ct = self.lab.exec("utm", ["conntrack", "-C"]).stdout.strip()
        self.notes.append(
            f"Memory ({mode}): {active:,} active flows in the agent's flow table after {n} pass(es) (target "
            f"{FLOW_TARGET:,}); RSS {idle_rss:.1f} MiB idle -> {rss:.1f} MiB, PSS {idle_pss:.1f} -> {pss:.1f} MiB "
            f"(agent + {len(process_tree(agent.proc.pid)) - 1} child processes); {ct or '?'} conntrack entries.")
        drops = self.nfq_drops() - drops0
        if drops or active < FLOW_TARGET:
            self.notes.append(f"Memory ({mode}): {drops:,} of the flow packets were dropped by full NFQUEUE queues (the "
                              "workers fell behind the sender); the next pass re-sent them.")

    def _wait_flows(self, agent: LabAgent, target: int, timeout: float = 12.0) -> int:
        """Poll the status file until the active-flow count reaches ``target`` or stops growing."""
        deadline = time.monotonic() + timeout
        last, still = -1, 0
        while time.monotonic() < deadline:
            active = agent.counter("flows", "active")
            if active >= target:
                return active
            still = still + 1 if active == last else 0
            if still >= 6 and not any(q.waiting for q in self.nfqueue().values()):
                return active
            last = active
            time.sleep(0.5)
        return max(last, 0)

    def _check_conntrack_max(self) -> None:
        need = int(FLOW_TARGET * 1.2)
        text = self.lab.exec("utm", ["cat", CONNTRACK_MAX]).stdout.strip()
        current = int(text) if text.isdigit() else 0
        if current >= need:
            note = (f"Memory: net.netfilter.nf_conntrack_max is {current:,} in the UTM namespace "
                    f"(enough for {FLOW_TARGET:,} flows; not changed).")
        else:
            raised = self.lab.exec("utm", ["sysctl", "-q", "-w", f"net.netfilter.nf_conntrack_max={need}"])
            state = "raised" if raised.returncode == 0 else "could not be raised (it is global, read-only in a netns)"
            note = f"Memory: net.netfilter.nf_conntrack_max was {current:,}; {state} to {need:,}."
        if note not in self.notes:
            self.notes.append(note)

    # -- diagnostics -----------------------------------------------------------------------
    def capture_diagnostics(self, mode: str) -> None:
        """iptables counters of the agent's chains, the agent's counters and its alerts, from this block."""
        agent = self.agent
        if agent is None:
            return
        fwd = self.lab.exec("utm", ["iptables", "-L", "VCR-FWD", "-v", "-n", "-x"]).stdout.strip()
        status = agent.status() or {}
        counters = status.get("counters", {})
        self.engines[mode] = sorted(set(counters) - {"pipeline", "flows", "worker"})
        keep = {k: counters[k] for k in ("pipeline", "worker", "firewall", "ips") if k in counters}
        keep["flows"] = {k: v for k, v in counters.get("flows", {}).items() if v}
        alerts, top = eve_alerts(agent.eve_path) if agent.eve_path.is_file() else (0, [])
        shown = "; ".join(f"{n:,}× {sig}" for sig, n in top)
        self.diagnostics[mode] = [
            "Counters of the last block of this configuration (all scenarios of that run together).",
            "",
            f"Alerts in its eve.json: {alerts:,}" + (f" (most frequent: {shown})." if top else "."),
            "",
            "`iptables -L VCR-FWD -v -n -x` in the UTM namespace:",
            "",
            "```",
            fwd,
            "```",
            "",
            "Agent counters (`status.json`, written every 2 s):",
            "",
            "```json",
            json.dumps(keep, indent=1, sort_keys=True),
            "```",
        ]

    def queue_notes(self, mode: str) -> list[str]:
        queued = self.queued.get(mode, {})
        out = ["NFQUEUE use and agent CPU per scenario (one entry per run):", ""] if queued else []
        out += [f"- {name}: " + "; ".join(lines) for name, lines in queued.items()]
        return out + [""] if queued else out

    def diagnostics_md(self) -> list[str]:
        out = []
        for mode, setup in self.setups.items():
            if mode in self.diagnostics or self.queued.get(mode):
                out += [f"### {setup.title}", "", *self.queue_notes(mode), *self.diagnostics.get(mode, []), ""]
        if self.ping_tails:
            out += ["### Ping, the tail", "", "Per block, in run order:", ""]
            out += [f"- {line}" for line in self.ping_tails] + [""]
        if self.bulk_cpu:
            out += ["### Bulk TCP, CPU", "", "CPU share the iperf3 processes got (iperf3's own accounting; the "
                    "bridge's softirq work is not all in it) and how busy the whole machine was (/proc/stat):", ""]
            out += [f"- {line}" for line in self.bulk_cpu] + [""]
        if self.pair_lines:
            out += ["### Bulk TCP, paired runs against the kernel floor", "", "Each paired run in run order (the "
                    "agent's CPU over the run: user and system time of the agent and its workers):", ""]
            out += [f"- {line}" for line in self.pair_lines] + [""]
        return out

    # -- driver ----------------------------------------------------------------------------
    def run(self) -> None:
        for run in range(self.runs):
            for mode in rotated(self.modes, run):
                if self.scenarios(mode):  # a mode without a chosen scenario (--scenarios) is not set up
                    self.block(mode, run)
        if self.wants_pairs():
            self.floor_pairs()
        for setup in self.setups.values():
            if setup.memory and not setup.skipped and (self.only is None or self.only.has_scenario("memory")
                                                       and self.only.has_mode(setup.mode)):
                self.memory_block(setup.mode)

    def block(self, mode: str, run: int) -> None:
        """Every scenario in one mode, for one run."""
        with block_noise(run, self.runs, mode, self.loads):
            self._block(mode, run)

    def _block(self, mode: str, run: int) -> None:
        try:
            with self.mode(mode, run):
                self.run_scenarios(mode, run)
                if mode != "bare":
                    self.capture_diagnostics(mode)
        except Exception as exc:  # noqa: BLE001
            log.exception("%s mode, run %d failed", mode, run + 1)
            print(f"  {mode}: ERROR {exc}", flush=True)
            self.record_error(mode, [k for _, _, keys in self.scenarios(mode) for k in keys], f"{mode}, run {run + 1}: {exc}")

    def memory_block(self, mode: str) -> None:
        print(f"memory: {mode} agent with 100k flows", flush=True)
        try:
            with self.mode(mode, self.runs):
                self.memory(mode)
        except Exception as exc:  # noqa: BLE001
            log.exception("memory scenario failed")
            print(f"  memory: ERROR {exc}", flush=True)
            self.record_error(mode, ["rss_mib"], f"{mode}: {exc}")

    def sections(self) -> list[Section]:
        out = []
        for setup in self.setups.values():
            if setup.skipped:
                out.append(Section(setup.title, setup.description, skipped_rows(setup), setup.skipped))
                continue
            metrics = setup.metrics
            if self.only is not None:  # a partial run: the rows of the scenarios it measured
                measured = {k for _, _, keys in self.scenarios(setup.mode) for k in keys}
                metrics = [m for m in metrics if m.key in measured]
            rows = compare_rows(metrics, self.samples, self.errors, "bare", setup.mode)
            if rows or self.only is None:  # a partial run of the paired goal alone has no row here
                out.append(Section(setup.title, setup.description, rows))
            if setup.mode == "fw" and (self.only is None or self.only.has_scenario("bulk TCP") or self.wants_pairs()):
                out.append(self.kernel_section())
        return out

    def kernel_section(self) -> Section:
        """Bulk through the kernel floor against the bare bridge, the firewall-only agent against the floor,
        and the paired measurement of the same (the goal's row)."""
        paired_rows = [paired_row(FLOOR_PAIRED, self.pairs, self.pair_errors)] if self.wants_pairs() else []
        if self.only is not None and not self.only.has_scenario("bulk TCP"):
            return Section(KERNEL_TITLE, KERNEL_DESCRIPTION, paired_rows, headers=KERNEL_HEADERS)
        bulk = next(m for m in METRICS if m.key == "bulk_gbps")
        samples = {mode: self.samples[mode].get(bulk.key, []) for mode in ("bare", BRNF, KERNEL, "fw")}
        errors = {mode: self.errors[mode].get(bulk.key, []) for mode in ("bare", BRNF, KERNEL, "fw")}
        compared = [  # (label, baseline mode, measured mode)
            ("br_netfilter alone (no rules, no conntrack) against the bare bridge", "bare", BRNF),
            ("kernel floor against the bare bridge", "bare", KERNEL),
            ("agent, firewall only, against the kernel floor", KERNEL, "fw"),
        ]
        rows = [summarize(dataclasses.replace(bulk, label=f"{bulk.label}: {label}", goal=None),
                          samples[base], samples[mode], errors[base] + errors[mode])
                for label, base, mode in compared
                if self.only is None or base in self.modes and mode in self.modes]  # what a partial run measured
        return Section(KERNEL_TITLE, KERNEL_DESCRIPTION, rows + paired_rows, headers=KERNEL_HEADERS)

    def run_notes(self) -> list[str]:
        notes = list(self.notes)
        for setup in self.setups.values():
            if setup.skipped:
                notes.append(f"{setup.title}: {setup.skipped}.")
                continue
            notes += self._setup_notes(setup)
        floor = self.samples[KERNEL].get("bulk_gbps", [])
        if floor:
            bare, fw = self.samples["bare"].get("bulk_gbps", []), self.samples["fw"].get("bulk_gbps", [])
            brnf = self.samples[BRNF].get("bulk_gbps", [])
            notes.append(f"{KERNEL_TITLE}: bulk per run against the bare bridge, br_netfilter alone "
                         + ", ".join(f"{v:.2f}×" for v in paired(bare, brnf, False))
                         + "; the floor "
                         + ", ".join(f"{v:.2f}×" for v in paired(bare, floor, False))
                         + "; the firewall-only agent against the floor per run "
                         + ", ".join(f"{v:.2f}×" for v in paired(floor, fw, False)) + ".")
        if self.pairs:
            notes.append(f"{KERNEL_TITLE}, paired runs (the goal): per pair in run order, floor -> agent Gbit/s (ratio): "
                         + "; ".join(f"{b:.2f} -> {a:.2f} ({a / b:.2f}×)" for b, a in self.pairs)
                         + (f". Agent starts: {'; '.join(self.pair_starts)}" if self.pair_starts else "") + ".")
        if self.settles:
            notes.append("Queue backlog left by the scenario before (each scenario with the agent starts once no packet "
                          "waits in its queues): " + "; ".join(self.settles) + ".")
        if any(self.conn_errors.values()):
            notes.append("New connections: failed connections counted by the load generators: "
                         + ", ".join(f"{m} {n}" for m, n in self.conn_errors.items()) + ".")
        if self.udp_errors:
            notes.append("Small packets: iperf3 tests that broke (counted as lossy probes): "
                         + "; ".join(self.udp_errors) + ".")
        for mode in self.modes:
            if self.udp_limited[mode]:
                notes.append(f"Small packets ({mode}): in {self.udp_limited[mode]} of {self.runs} runs the best "
                             "loss-free probe was generator-limited (iperf3 could not send its target rate): "
                             "the figure is a lower bound.")
        notes.append("Noise per block: the 1-minute load average at its start, and the share of all CPU time during "
                     "the block that processes outside the bench used (user processes only; softirq work is not in it), "
                     "with the biggest in CPU seconds: " + "; ".join(self.loads) + ". The load generators, the bridge "
                     "and the agent account for up to about 2 of the load average while a block runs; anything else on "
                     "the machine competes with them for the same 2 CPUs, so compare the per-run samples.")
        return notes

    def _setup_notes(self, setup: Setup) -> list[str]:
        mode, notes = setup.mode, []
        for m in setup.metrics:
            note = noise_note(m, self.samples["bare"].get(m.key, []), self.samples[mode].get(m.key, []))
            if note:
                notes.append(f"{setup.title}: {note}")
        if self.engines.get(mode):
            notes.append(f"{setup.title}: engines enabled (as the agent's counters show): "
                         + ", ".join(self.engines[mode]) + ". Only what they inspect reaches Python; decided flows "
                         "are offloaded to the kernel.")
        if self.starts[mode]:
            notes.append(f"{setup.title}: agent start to all workers ready, and its RSS/PSS then (idle): "
                         + "; ".join(self.starts[mode]) + ".")
        return notes


def build_report(bench: Bench, runs: int, seconds: float, offline: tuple[OfflineResult | None, str],
                 noise: list[str], duration: str) -> Report:
    notes = bench.run_notes()
    res = offline[0]
    if res is not None:
        top = "; ".join(f"{n:,}× {sig}" for sig, n in res.top_alerts)
        counters = ", ".join(f"{k} {v:,}" for k, v in sorted(res.pipeline_counters.items()))
        notes.append(f"Offline: {res.alerts:,} alerts over the capture" + (f" (most frequent: {top})" if top else "")
                     + f"; pipeline counters: {counters}; hyperscan reported {res.matches:,} pattern matches "
                     "(single-match: at most one per pattern and payload).")
    return Report(
        date=dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        machine=machine(),
        command=command_line(runs, seconds),
        sections=bench.sections(),
        samples=bench.samples,
        columns=[("bare", "Bare bridge"), (BRNF, "br_netfilter alone"), (KERNEL, "Kernel floor"),
                 *((s.mode, s.title) for s in bench.setups.values())],
        notes=notes,
        method=METHOD,
        diagnostics=bench.diagnostics_md(),
        noise=noise,
        offline=res,
        offline_error=offline[1],
        duration=duration,
    )


def run_bench(args: argparse.Namespace) -> int:
    """``python -m lab bench``: measure, print the tables, write args.out; 1 when a goal is missed or a row failed."""
    if args.runs < 1 or args.seconds <= 0:
        print("bench: --runs must be >= 1 and --seconds > 0", file=sys.stderr)
        return 2
    try:
        only = Selection.parse(getattr(args, "scenarios", None), getattr(args, "modes", None))
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    if only is not None and args.out is None:
        print("bench: a partial run (--scenarios/--modes) needs --out: it does not replace the section of "
              "docs/benchmarks.md", file=sys.stderr)
        return 2
    args.out = args.out or "docs/benchmarks.md"
    workdir = Path(tempfile.mkdtemp(prefix="vcr-bench-"))
    started = time.monotonic()
    setups = agent_setups()
    for s in setups:
        if s.skipped:
            print(f"bench: WARNING: {s.title}: {s.skipped}; its rows are marked skipped", file=sys.stderr, flush=True)
    print(f"bench: lab {args.prefix}, {args.runs} run(s) of {args.seconds:g} s per scenario; work dir {workdir}", flush=True)
    noise = [machine_noise("Before the bench")]
    print(f"bench: {noise[0]}", flush=True)
    if only is None or only.has_scenario("offline"):
        offline = offline_throughput(workdir)
    else:
        offline = None, "offline IPS throughput: not in this partial run (--scenarios)"
    with Lab(args.prefix, log_dir=workdir / "lab") as lab:
        bench = Bench(lab, args.runs, args.seconds, workdir, setups, only)
        bench.start_servers()
        bench.run()
    noise.append(machine_noise("After the bench"))
    took = time.monotonic() - started
    report = build_report(bench, args.runs, args.seconds, offline, noise, f"the bench took {took / 60:.1f} min")
    if only is not None:  # say what the partial run left out
        extra = "".join(f" --{k} {v}" for k, v in (("scenarios", args.scenarios), ("modes", args.modes)) if v)
        report = dataclasses.replace(report, command=f"`python -m lab bench --runs {args.runs} --seconds {args.seconds:g}{extra}`")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_section(out, "dataplane", render_markdown(report))
    print()
    print(render_terminal(report))
    print(f"\nbench: {took:.0f} s; report written to {out}")
    failed = any(r.verdict == "error" for r in report.rows) or report.offline_error.startswith("error")
    if failed:
        print(f"bench: logs of the failed measurements are kept in {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0 if all(verdict_ok(r.verdict) for r in report.rows) and not failed else 1
