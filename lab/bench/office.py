"""The office benchmark (``python -m lab bench --suite office``): 50 simulated users loading web pages
through the bare bridge and through the agent with every engine on, with downloads, mail and a video
stream alongside; page-load time, the highest page rate the box sustains, and how it scales with the
agent's workers. Written to the ``office`` section of docs/benchmarks.md.

The model (what a page is, the statistics, the rate search) is lab/bench/office_model.py; the
servers and clients in the lab namespaces are the roles of lab/bench/office_load.py.

Modes, in this order, each one ladder of offered page rates (``office_model.LADDER``) from the lowest
up: the bare bridge (the reference), the agent with every engine on and ``dataplane.workers: 2``, the
same with 1 worker, the firewall alone and the firewall with the IPS (where the time goes), and the bare
bridge again (the agent is judged against both bare ladders pooled, at the same rate). Each mode also
measures new HTTP connections per second (lab/bench/load.py ``http-load``, as the data-path bench does).
"""
from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

from lab.bench.blocks import running_agent
from lab.bench.doc import write_section
from lab.bench.filter import URLHAUS, feed_files
from lab.bench.host import (
    BenchError,
    agent_cpu_seconds,
    foreign_cpu,
    foreign_use,
    helper_argv,
    helper_env,
    helper_results,
    listening,
    machine,
    machine_noise,
)
from lab.bench.office_model import (
    BARE_KNEE,
    BROWSER_PARALLEL,
    BUSY_PAGE_INTERVAL,
    BUSY_RATE,
    CONNECTIONS,
    GOAL_RATIO,
    HTTPS_SHARE,
    LADDER,
    LAG_LIMIT_MS,
    MAX_FAILED,
    MIN_COMPLETED,
    OBJECT_SIZES,
    P95_RATIO,
    SITES,
    USERS,
    StepResult,
    bare_ceiling,
    bare_problem,
    highest_sustained,
    margin,
    mean_object_size,
    p95_ratio,
    reference,
    site_name,
    step_verdict,
)
from lab.bench.office_load import PAGE_TIMEOUT
from lab.bench.offline import ET_OPEN, et_open_files
from lab.bench.report import closing_lines, fmt, header_lines, markdown, md_table, median

log = logging.getLogger(__name__)

SECTION = "office"
TITLE = "Benchmarks: the office (50 users, every engine on)"
SOURCE = "lab/bench/office.py"
LOAD = "lab.bench.office_load"
PCS = 10  # lab PCs; USERS / PCS users on each, one client process per PC
DNS_HOST, DNS_IP = "dns", "198.51.100.53"
MAIL_HOST, MAIL_IP = "mail", "198.51.100.25"
CONN_PORT = 8080  # lab/bench/load.py serve-close, for the new-connections measure
CONN_SECONDS = 5.0
CONN_CONCURRENCY = 64
WARMUP_RATE, WARMUP_SECONDS = 5.0, 4.0
DRAIN = PAGE_TIMEOUT + 10  # seconds a step's clients get after their last page starts
VIDEO_RATE = 625_000  # bytes/s: 5 Mbit/s, an HD stream
DOWNLOAD = 8_000_000  # bytes per file download
DOWNLOAD_EVERY = 5.0
MAIL_EVERY = 3.0
AGENT_START_TIMEOUT = 240.0  # ET Open, UT1 and the feed load before the workers bind their queues
CLIENT_PORTS = "1024 65535"
MODES = ("bare", "agent-w2", "agent-w1", "agent-fw", "agent-ips")  # the default run
# modes with some engines off, for finding where the time goes: 2 workers
EXTRA_MODES: dict[str, dict[str, Any]] = {
    "agent-fw": {"engines.ips.enabled": False, "engines.atp.enabled": False, "engines.webfilter.enabled": False,
                 "engines.av": {"enabled": False}},
    "agent-ips": {"engines.atp.enabled": False, "engines.webfilter.enabled": False, "engines.av": {"enabled": False}},
    "agent-noav": {"engines.av": {"enabled": False}},
    "agent-noips": {"engines.ips.enabled": False},
    # every file scanned by clamd, none passed from the verdict cache: what unique files cost
    "agent-nocache": {"engines.av.verdict_cache": 0},
    # every engine, one queue per worker: downloads' segments and new connections wait in one FIFO
    "agent-onequeue": {"dataplane.bulk_queue_kib": 0},
}
ALL_MODES = ("bare", "agent-w2", "agent-w1", *EXTRA_MODES)
MODE_LABEL = {"bare": "Bare bridge", "bare-end": "Bare bridge, again after the agents", "agent-w2": "Agent, 2 workers", "agent-w1": "Agent, 1 worker",
              "agent-fw": "Agent, firewall only", "agent-ips": "Agent, firewall + IPS (ET Open)",
              "agent-noav": "Agent, all but AV", "agent-noips": "Agent, all but the IPS",
              "agent-onequeue": "Agent, one queue per worker (no bulk queue)",
              "agent-nocache": "Agent, AV without its verdict cache"}


@dataclass
class ModeResult:
    mode: str
    steps: dict[float, StepResult] = field(default_factory=dict)
    background: dict[float, dict[str, Any]] = field(default_factory=dict)
    agent_cpu: dict[float, float] = field(default_factory=dict)  # CPU seconds of agent + workers in the step
    conn_rate: float | None = None
    conn_errors: int = 0
    started: str = ""
    stopped: str = ""  # why the ladder stopped
    error: str = ""
    eve: str = ""  # what the agent wrote to eve.json in this mode
    noise: dict[float, str] = field(default_factory=dict)  # what other processes used during each step


# ----------------------------------------------------------------------------- the lab run
class OfficeBench:
    def __init__(self, lab: Any, workdir: Path, seconds: float, ladder: Sequence[float], overrides: dict[str, Any]):
        self.lab = lab
        self.workdir = workdir
        self.seconds = seconds
        self.ladder = list(ladder)
        self.overrides = overrides
        self.web = lab.hosts["web"].ipv4
        self.cafile = workdir / "tls" / "cert.pem"
        self.results: dict[str, ModeResult] = {}
        self.notes: list[str] = []
        self.agent: Any = None

    def start_servers(self) -> None:
        lab, web = self.lab, self.lab.hosts["web"]
        tls = self.workdir / "tls"
        make_wildcard_cert(tls)
        names = [site_name(n) for n in range(SITES)] + ["video.office.example", "files.office.example"]
        records = self.workdir / "dns-records.txt"
        records.write_text("".join(f"{n}={web.ipv4},{web.ipv6}\n" for n in names), encoding="utf-8")
        lab.popen(DNS_HOST, helper_argv("lab.bench.load", "dns-server", "--port", "53", "--records", str(records)),
                  name="dns", env=helper_env())
        procs = str(os.cpu_count() or 1)
        lab.popen("web", helper_argv(LOAD, "web", "--cert", str(tls / "cert.pem"), "--key", str(tls / "key.pem"),
                                     "--procs", procs), name="office-web", env=helper_env())
        lab.popen("web", helper_argv("lab.bench.load", "serve-close", "--port", str(CONN_PORT), "--procs", procs),
                  name="serve-close", env=helper_env())
        lab.popen(MAIL_HOST, helper_argv(LOAD, "pop3", "--port", "110"), name="pop3", env=helper_env())
        for n in range(1, PCS + 1):
            lab.exec(f"pc{n}", ["sysctl", "-q", "-w", f"net.ipv4.ip_local_port_range={CLIENT_PORTS}"])
        for host, port, proto in (("web", 443, "tcp"), ("web", 80, "tcp"), ("web", CONN_PORT, "tcp"),
                                  (MAIL_HOST, 110, "tcp"), (DNS_HOST, 53, "udp")):
            if not listening(lab, host, port, proto):
                raise BenchError(f"nothing listens on {proto} {port} in {host}")
        self.notes.append(f"Servers: the web server of lab/bench/office_load.py (`web`: Python asyncio + ssl, {procs} "
                          "pre-forked processes with SO_REUSEPORT, HTTPS on 443 and HTTP on 80, TLS 1.2/1.3 full "
                          "handshakes: no session tickets, clients never resume; ECDSA P-256 certificate for "
                          "`*.office.example`), the lab DNS server (lab.dns, A/AAAA records of the "
                          f"{SITES} sites), a plain POP3 server (`pop3` of lab/bench/office_load.py: a simple one, not "
                          "Dovecot, one mailbox of 3 messages, 20, 80 and 300 KB) and the pre-fork HTTP server of "
                          "lab/bench/load.py for the new-connections measure. nginx is not installed on this machine.")

    # -- modes -------------------------------------------------------------------------------
    @contextlib.contextmanager
    def mode(self, mode: str, result: ModeResult) -> Iterator[None]:
        self.lab.exec("utm", ["conntrack", "-F"])
        if mode.startswith("bare"):
            self.lab.bridge_bare()
            try:
                self._wait_path()
                yield
            finally:
                self.lab.unbridge_bare()
            return
        if mode in EXTRA_MODES:
            # copies of the nested sections: a dotted key of the mode (engines.av.verdict_cache) is set inside
            # the section it names (lab.agentrun.lab_config), which must not change the other modes' overrides
            overrides = {**{k: dict(v) if isinstance(v, dict) else v for k, v in self.overrides.items()},
                         **EXTRA_MODES[mode], "dataplane.workers": 2}
        else:
            overrides = {**self.overrides, "dataplane.workers": int(mode.rsplit("w", 1)[1])}
        with running_agent(self.lab, self.workdir / f"agent-{mode}", overrides, AGENT_START_TIMEOUT) as (agent, started):
            result.started = started
            self.agent = agent
            try:
                self._wait_path()
                yield
            finally:
                result.eve = eve_summary(agent.eve_path)
                self.agent = None

    def _wait_path(self) -> None:
        if not self.lab.wait_tcp("pc1", self.web, 443, 30):
            raise BenchError("pc1 cannot reach web:443 through the UTM")

    # -- measurements ------------------------------------------------------------------------
    def step(self, rate: float, seconds: float, background: bool = True) -> tuple[StepResult, dict[str, Any] | None]:
        """One step: PCS client processes (rate / PCS pages/s each) and the background, started together."""
        start_at = time.time() + 1.5
        per_pc = USERS // PCS
        procs = []
        for i in range(PCS):
            users = ",".join(str(i * per_pc + u + 1) for u in range(per_pc))
            seed = int(rate * 1000) * 100 + i  # the same pages at the same rate in every mode
            argv = helper_argv(LOAD, "users", "--web", self.web, "--dns", DNS_IP, "--cafile", str(self.cafile),
                               "--rate", f"{rate / PCS:g}", "--seconds", f"{seconds:g}", "--seed", str(seed),
                               "--users", users, "--start-at", f"{start_at:.3f}")
            procs.append(self.lab.popen(f"pc{i + 1}", argv, name=f"users-{i + 1}", env=helper_env(),
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE))
        bg = None
        if background:
            argv = helper_argv(LOAD, "background", "--web", self.web, "--dns", DNS_IP, "--mail", MAIL_IP,
                               "--cafile", str(self.cafile), "--seconds", f"{seconds + 1.5:g}",
                               "--video-rate", str(VIDEO_RATE), "--download", str(DOWNLOAD),
                               "--download-every", f"{DOWNLOAD_EVERY:g}", "--mail-every", f"{MAIL_EVERY:g}")
            bg = self.lab.popen(f"pc{PCS}", argv, name="background", env=helper_env(), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        res = StepResult(rate, seconds)
        for part in helper_results(procs, seconds + DRAIN + 30, "office users"):
            res.add(part)
        bg_result = helper_results([bg], 90, "office background")[0] if bg is not None else None
        return res, bg_result

    def connections(self) -> tuple[float, int]:
        argv = helper_argv("lab.bench.load", "http-load", "--ip", self.web, "--port", str(CONN_PORT),
                           "--seconds", f"{CONN_SECONDS:g}", "--concurrency", str(CONN_CONCURRENCY // 2))
        procs = [self.lab.popen(pc, argv, name=f"http-load-{pc}", env=helper_env(), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE) for pc in ("pc1", "pc2")]
        rate, errors = 0.0, 0
        for r in helper_results(procs, CONN_SECONDS + 60, "http-load"):
            rate += r["done"] / max(r["elapsed"], 1e-6)
            errors += r["errors"]
        return rate, errors

    def run_mode(self, mode: str) -> ModeResult:
        """One mode's ladder. The first bare bridge climbs until the lab saturates (``bare_problem``); the second
        (``bare-end``) repeats the first one's rates; an agent mode climbs up to the first bare bridge's ceiling
        and stops at its first step whose pages do not complete (its p95 against the bare bridge is judged
        afterwards, against both bare ladders pooled). The busy rate is always measured."""
        result = ModeResult(mode)
        self.results[mode] = result
        bare = self.results.get("bare")
        ladder = sorted(bare.steps) if mode == "bare-end" and bare is not None else self.ladder
        print(f"office: {MODE_LABEL[mode]} (load average {os.getloadavg()[0]:.2f})", flush=True)
        try:
            with self.mode(mode, result):
                if result.started:
                    print(f"  agent {result.started}", flush=True)
                self.step(WARMUP_RATE, WARMUP_SECONDS, background=False)  # ARP, first flows, caches: not counted
                result.conn_rate, result.conn_errors = self.connections()
                print(f"  new connections: {result.conn_rate:,.0f}/s ({result.conn_errors} failed)", flush=True)
                self.lab.exec("utm", ["conntrack", "-F"])
                agent = not mode.startswith("bare")
                ceiling = bare_ceiling(bare.steps)[0] if bare is not None and agent else None
                for rate in ladder:
                    ref = bare.steps.get(rate) if bare is not None and agent else None
                    beyond = ref is None or ceiling is None or rate > ceiling
                    if agent and beyond and not (ref is not None and rate <= BUSY_RATE):
                        result.stopped = result.stopped or f"{rate:g} pages/s: above the bare bridge's ceiling"
                        break
                    cpu0, others, t0 = self._agent_cpu(), foreign_cpu(), time.monotonic()
                    step, bg = self.step(rate, self.seconds)
                    share, top = foreign_use(others, foreign_cpu(), (time.monotonic() - t0) * (os.cpu_count() or 1))
                    result.noise[rate] = f"other processes {share:.0%} of the CPUs" + (
                        " (" + ", ".join(f"{name} {sec:.1f} s" for sec, name in top) + ")" if top else "")
                    result.steps[rate] = step
                    if bg is not None:
                        result.background[rate] = bg
                    if self.agent is not None:
                        result.agent_cpu[rate] = self._agent_cpu() - cpu0
                    print("  " + step_line(step, ref), flush=True)
                    first = result.steps[min(result.steps)]
                    why = step.own_problem() if agent else ("" if mode == "bare-end" else bare_problem(step, first))
                    if why and not result.stopped:
                        result.stopped = f"{rate:g} pages/s: {why}"
                    if result.stopped and rate >= BUSY_RATE:  # the busy rate is always measured: the goal's step
                        break
        except Exception as exc:  # noqa: BLE001 - one failed mode must not stop the others
            log.exception("office mode %s failed", mode)
            result.error = str(exc)
            print(f"  {mode}: ERROR {exc}", flush=True)
        return result

    def _agent_cpu(self) -> float:
        if self.agent is None or self.agent.proc is None:
            return 0.0
        return agent_cpu_seconds(self.agent.proc.pid)

    def run(self, modes: Sequence[str]) -> None:
        for mode in modes:
            self.run_mode(mode)
        if len(modes) > 1 and self.results.get("bare") is not None and self.results["bare"].steps:
            self.run_mode("bare-end")  # the reference again, after the agents: the machine's load drifts


def eve_summary(path: Path, top: int = 5) -> str:
    """The agent's eve.json records by event type, and its most frequent alert signatures."""
    kinds: Counter[str] = Counter()
    sigs: Counter[str] = Counter()
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return "no eve.json"
    for line in lines:
        try:
            rec = json.loads(line)
        except ValueError:
            kinds["unreadable"] += 1
            continue
        kinds[rec.get("event_type", "?")] += 1
        if rec.get("event_type") == "alert":
            sigs[rec.get("alert", {}).get("signature", "?")] += 1
    out = ", ".join(f"{k} {n:,}" for k, n in kinds.most_common()) or "no record"
    if sigs:
        out += "; alerts: " + ", ".join(f"{s} ({n:,})" for s, n in sigs.most_common(top))
    return out


def step_line(step: StepResult, ref: StepResult | None) -> str:
    """One step on the terminal."""
    p50, p95 = step.p(50), step.p(95)
    r = p95_ratio(step, ref) if ref else None
    return (f"{step.offered_rate:g} pages/s: {step.completed}/{step.offered} pages, {step.failed} failed, "
            f"p50 {fmt(p50, 0)} ms, p95 {fmt(p95, 0)} ms" + (f" ({r:.2f}× bare)" if r else "")
            + f", start lag p95 {fmt(step.lag_p95, 0)} ms, clients {step.client_cpu_s:.1f} CPU s"
            + (f", problems {step.problems}" if step.problems else ""))


def make_wildcard_cert(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    argv = ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", str(folder / "key.pem"), "-out", str(folder / "cert.pem"), "-days", "2",
            "-subj", "/CN=office.example", "-addext", "subjectAltName=DNS:*.office.example,DNS:office.example"]
    res = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=60)
    if res.returncode != 0:
        raise BenchError(f"openssl req failed: {res.stderr.strip()[-300:]}")


# ----------------------------------------------------------------------------- configuration
def agent_overrides(clamd: Any | None) -> tuple[dict[str, Any], list[str]]:
    """Every engine on: the firewall as shipped, ATP on the URLhaus feed, the web filter on UT1 (lab_config),
    the IPS on ET Open, AV on the private clamd when there is one; and what is missing."""
    missing = []
    rules, classification = et_open_files(ET_OPEN)
    overrides: dict[str, Any] = {"engines.webfilter.enabled": True, "engines.atp.enabled": True,
                                 "engines.ips.enabled": True}
    if classification is not None:
        overrides["engines.ips.rule_files"] = [str(f) for f in rules]
        overrides["engines.ips.classification"] = str(classification)
    else:
        missing.append(f"ET Open not found in {ET_OPEN}: the IPS runs the shipped local rules only")
    feeds = feed_files(URLHAUS) if URLHAUS.is_dir() else []
    if feeds:
        overrides["engines.atp.feeds"] = [str(f) for f in feeds]
    else:
        missing.append(f"no URLhaus feed in {URLHAUS}: ATP has no indicators")
    if clamd is not None:
        overrides["engines.av"] = {"enabled": True, "clamd_socket": clamd.socket, "database": str(clamd.database)}
    return overrides, missing


def agent_description(overrides: dict[str, Any], av_note: str) -> str:
    ips = overrides.get("engines.ips.rule_files")
    return ("`vcr-agent bridge up` + `vcr-agent run` (lab.agentrun.LabAgent) with the shipped config/vcr-agent.yaml "
            "and every engine on: the firewall as shipped; the IPS with "
            + (f"the {len(ips)} `*.rules` files of {ET_OPEN} (ET Open) and its classification.config" if ips
               else "the shipped local rules (ET Open missing)")
            + "; ATP on " + (", ".join(f"`{f}`" for f in overrides.get("engines.atp.feeds", [])) or "no feed")
            + "; the web filter on the real UT1 lists (shipped policy); "
            + av_note + ". `dataplane.workers` is 2 or 1 as the mode says (the shipped `auto` is 2 here).")


# ----------------------------------------------------------------------------- report
def ms(v: float | None) -> str:
    return "—" if v is None else f"{v:,.0f} ms"


def ladder_cells(results: dict[str, ModeResult]) -> list[list[str]]:
    """One line per offered rate: every mode's completed pages, p50, p95 (and agent p95 / bare p95)."""
    bare = results.get("bare")
    rates = sorted({r for m in results.values() for r in m.steps})
    head = ["Offered pages/s"]
    for mode in results:
        head += [f"{MODE_LABEL[mode]}: done", "p50", "p95"] + (["p95 vs bare", "verdict"] if mode != "bare" else [])
    cells = [head]
    for rate in rates:
        line = [f"{rate:g}"]
        for mode, res in results.items():
            s = res.steps.get(rate)
            n = 3 if mode == "bare" else 5
            if s is None:
                line += ["—"] * n
                continue
            line += [f"{s.completed}/{s.offered}" + (f" ({s.failed} failed)" if s.failed else ""), ms(s.p(50)), ms(s.p(95))]
            if mode != "bare":
                ref = bare.steps.get(rate) if bare else None
                r = p95_ratio(s, ref) if ref else None
                why = step_verdict(s, ref)
                line += ["—" if r is None else f"{r:.2f}×", "sustained" if not why else why]
        cells.append(line)
    return cells


def summary_cells(results: dict[str, ModeResult]) -> tuple[list[list[str]], bool]:
    """The headline rows, from the 2-worker agent (the shipped `auto` here) against the bare bridge; and
    whether every goal passed."""
    bare, agent = results.get("bare"), results.get("agent-w2")
    cells = [["Measure", "Bare bridge", "Agent (2 workers)", "Agent vs bare", "Goal", "Result"]]
    ok = True
    b = bare.steps.get(BUSY_RATE) if bare else None
    a = agent.steps.get(BUSY_RATE) if agent else None
    for pct in (50, 95):
        bv, av = (b.p(pct) if b else None), (a.p(pct) if a else None)
        r = None if bv is None or av is None or bv <= 0 else av / bv
        goal, verdict = "reported", "reported"
        if pct == 95:
            goal = f"agent ≤ {GOAL_RATIO:g}× bare"
            verdict = "error" if r is None else ("pass" if r <= GOAL_RATIO and not (a and a.own_problem()) else "FAIL")
            ok &= verdict == "pass"
        cells.append([f"Page-load time p{pct} at {BUSY_RATE:g} pages/s (50 busy users)", ms(bv), ms(av),
                      "—" if r is None else f"{r:.2f}×", goal, verdict])
    bare_best, bare_why = bare_ceiling(bare.steps) if bare else (None, "")
    best, why = highest_sustained(agent.steps, bare.steps) if agent and bare else (None, "")
    capped = best is not None and bare_best is not None and best >= bare_best
    verdict = "error" if best is None and not agent else ("pass" if best is not None and best >= BUSY_RATE else "FAIL")
    ok &= verdict == "pass"
    cells.append([f"Highest page rate with p95 ≤ {P95_RATIO:g}× bare (ladder step)",
                  f"{fmt(bare_best, 0)} pages/s (the bare bridge's own ceiling)" if bare_best is not None else "—",
                  (f"{'≥ ' if capped else ''}{fmt(best, 0)} pages/s" if best is not None else "none"),
                  f"margin over {BUSY_RATE:g} pages/s: {margin(best, BUSY_RATE)}",
                  f"≥ {BUSY_RATE:g} pages/s", verdict])
    if bare and agent:
        r = None if not bare.conn_rate or agent.conn_rate is None else agent.conn_rate / bare.conn_rate
        cells.append(["New connections, HTTP `Connection: close`", f"{fmt(bare.conn_rate, 0)} conn/s",
                      f"{fmt(agent.conn_rate, 0)} conn/s", "—" if r is None else f"{r:.2f}×", "reported", "reported"])
    del why, bare_why
    return cells, ok


def cpu_per_page(res: ModeResult, rate: float) -> float | None:
    """CPU seconds of the agent (daemon + workers) per completed page in the step at ``rate``."""
    cpu, step = res.agent_cpu.get(rate), res.steps.get(rate)
    return cpu / step.completed if cpu and step and step.completed else None


def modes_cells(results: dict[str, ModeResult]) -> list[list[str]]:
    """One line per agent mode: workers and engines, p95 at the busy rate against the bare bridge, the highest
    sustained rate, the agent's CPU per page, new connections/s, start and memory."""
    bare = results.get("bare")
    cells = [["Agent mode", "Workers", f"p95 at {BUSY_RATE:g} pages/s vs bare", "Highest page rate, p95 ≤ "
              f"{P95_RATIO:g}× bare", "Agent CPU per page (at the lowest rate; at the busy rate)",
              "New connections/s (vs bare)", "Agent start"]]
    for mode, res in results.items():
        if mode.startswith("bare"):
            continue
        best, why = highest_sustained(res.steps, bare.steps) if bare else (None, "")
        r = res.conn_rate / bare.conn_rate if bare and bare.conn_rate and res.conn_rate else None
        busy = res.steps.get(BUSY_RATE)
        ref = bare.steps.get(BUSY_RATE) if bare else None
        pr = p95_ratio(busy, ref) if busy and ref else None
        low = cpu_per_page(res, min(res.steps)) if res.steps else None
        at_busy = cpu_per_page(res, BUSY_RATE)
        cells.append([MODE_LABEL[mode], "1" if mode == "agent-w1" else "2", "—" if pr is None else f"{pr:.2f}×",
                      (f"{fmt(best, 0)} pages/s" if best is not None else "none") + (f" (next: {why})" if why else ""),
                      f"{fmt(low and low * 1e3, 0)} ms; {fmt(at_busy and at_busy * 1e3, 0)} ms",
                      f"{fmt(res.conn_rate, 0)}" + (f" ({r:.2f}×)" if r else ""), res.started or res.error or "—"])
    return cells


def background_cells(results: dict[str, ModeResult]) -> list[list[str]]:
    cells = [["Mode", "Video delivered (goal 5.0 Mbit/s)", "Video longest gap", "Download 8 MB, median",
              "POP3 session (400 KB), median", "Problems"]]
    for mode, res in results.items():
        bgs = list(res.background.values())
        if not bgs:
            continue
        rates = [b["video_bytes"] * 8 / 1e6 / b["seconds"] for b in bgs]
        gaps = [max(b["video_gaps_ms"]) for b in bgs if b["video_gaps_ms"]]
        dls = [x for b in bgs for x in b["downloads_s"]]
        mails = [x for b in bgs for x in b["mail_s"]]
        probs: dict[str, int] = {}
        for b in bgs:
            for k, v in b["problems"].items():
                probs[k] = probs.get(k, 0) + v
        cells.append([MODE_LABEL[mode], f"{min(rates):.1f}–{max(rates):.1f} Mbit/s",
                      f"{max(gaps):,.0f} ms" if gaps else "—",
                      f"{median(dls):.2f} s ({len(dls)})" if dls else "—",
                      f"{median(mails) * 1e3:,.0f} ms ({len(mails)})" if mails else "—",
                      ", ".join(f"{k} {v}" for k, v in probs.items()) or "none"])
    return cells


def client_note(results: dict[str, ModeResult]) -> str:
    bare = results.get("bare")
    if not bare or not bare.steps:
        return "Client check: no bare-bridge step."
    parts = []
    for rate, s in sorted(bare.steps.items()):
        parts.append(f"{rate:g} pages/s: start lag p95 {fmt(s.lag_p95, 0)} ms, clients "
                     f"{s.client_cpu_s / s.seconds:.2f} CPU s/s")
    best, why = bare_ceiling(bare.steps)
    return ("Client check (bare bridge): how late the clients started their pages (p95) and the CPU the 10 client "
            "processes used per second of the step: " + "; ".join(parts) + f". The bare bridge with these clients "
            f"sustained up to {fmt(best, 0)} pages/s" + (f" (then {why})" if why else " (the top of the ladder)")
            + f"; a start lag p95 above {LAG_LIMIT_MS:g} ms would mean the clients, not the path, were the limit.")


SCALING_TEXT = [
    "How the agent spreads work (agent/dataplane/ruleset.py `_queue_lines`): with 2 or more workers, `bridge up` "
    "puts an `HMARK --hmark-tuple src,dst,sport,dport,proto --hmark-mod N` rule before one NFQUEUE rule per "
    "worker, so the kernel picks the worker by a symmetric hash of the 5-tuple: both directions of a flow reach "
    "the same worker, and the flows between one PC and one server spread over the workers (plain "
    "`--queue-balance` hashes the addresses only: one PC talking to one CDN would load one worker). Each worker "
    "is its own process (agent/dataplane/worker.py) with its own flow table, reassembly, app-layer state, holds "
    "and engines (databases built once before the fork, shared copy-on-write), so no lock is taken on the packet "
    "path; a decided flow is offloaded to the kernel by connmark and never reaches a worker again.",
    "Measured here: the scaling table. On this 2-core machine the workers share the CPUs with the clients, the "
    "servers, the bridge and whatever else runs on the machine, so a second worker can only use what is left; "
    "where the table shows 2 workers no better or worse than 1, the CPUs were full and a second process "
    "only added contention (each worker also pays its own cache misses over the shared ET Open databases).",
    "Beyond two cores, in the order they would stop it: (1) the daemon: every EVE record of every worker goes "
    "through one multiprocessing queue to the daemon's single loop (agent/dataplane/daemon.py `_handle`), "
    "which writes eve.json and hands each record to the center link's spool; the records per page (the eve.json "
    "counts in the notes: alerts, and a fileinfo record for every file AV scanned) are therefore serialized in "
    "one process whatever the worker count, at pickling + JSON + write cost each; with N workers producing "
    "records N times as fast, this loop is the first shared limit. (2) The spool (agent/link/spool.py): one "
    "SQLite writer thread commits the alarms, fed from that same loop; an alarm storm (a scan through the "
    "box, an IPS rule matching office traffic) serializes there, not on the workers. (3) clamd: one daemon for "
    "all workers (`MaxThreads`, `engines.av.max_concurrent` per worker); scans beyond its threads queue, and "
    "a file's last packet waits up to `scan_timeout`. (4) The queue hash balances flows, not work: with "
    "50 users the flows are many and even, but one heavy flow (a download inside `stream_depth`) stays on one "
    "worker. (5) Kernel work (br_netfilter, conntrack, the connmark compare, NFQUEUE copies) runs in the "
    "softirq of the CPU receiving the packets: on the box's NIC with RSS or RPS it spreads over cores; on one "
    "queue it does not, and it grows with every first packet the workers see. (6) Memory: each worker holds its "
    "own flow table and the copy-on-write pages it writes to; PSS per worker (see the agent start lines) decides "
    "how many fit in the box's RAM.",
]


def method_lines(seconds: float, ladder: Sequence[float]) -> list[str]:
    sizes = ", ".join(f"{s / 1000:g} KB ({w}%)" if s < 1_000_000 else f"{s / 1e6:g} MB ({w}%)" for s, w in OBJECT_SIZES)
    return [
        f"Users: {USERS} simulated users on {PCS} lab PCs ({USERS // PCS} each, one asyncio client process per PC: "
        "`python -m lab.bench.office_load users`). Pages start at Poisson arrivals of the offered rate, spread over "
        "the users (open loop: a slow box makes pages overlap, it does not slow the users). A page: one DNS look-up "
        f"of its site's name (one of {SITES}, lab DNS server, a new UDP socket each), then {CONNECTIONS[0]} to "
        f"{CONNECTIONS[1]} connections (uniform), at most {BROWSER_PARALLEL} at a time, each fetching one object: "
        f"HTTPS with a full TLS handshake and SNI ({HTTPS_SHARE:.0%}) or plain HTTP; object sizes {sizes} "
        f"(mean {mean_object_size() / 1000:.0f} KB). Page-load time: from the page's scheduled start to its last "
        "object's last byte (a wrong DNS answer, a failed connection, a short body or more than "
        f"{PAGE_TIMEOUT:g} s make the page failed).",
        f"Busy rate: a user browsing without pause loads a page every {BUSY_PAGE_INTERVAL:g} s (reading a page "
        "takes longer: measured think times between page views are 10-30 s and more, so this is an upper bound "
        f"for office work); {USERS} such users make {BUSY_RATE:g} pages/s, about {BUSY_RATE * 13:.0f} new "
        "connections/s.",
        f"Alongside, in every step: a video-like stream (HTTPS, {VIDEO_RATE * 8 / 1e6:g} Mbit/s in 25 chunks a "
        f"second), a {DOWNLOAD / 1e6:g} MB download every {DOWNLOAD_EVERY:g} s (alternately HTTP and HTTPS) and a "
        f"POP3 retrieval of the whole mailbox every {MAIL_EVERY:g} s (`office_load background` in pc{PCS}).",
        f"Steps: offered rates {', '.join(f'{r:g}' for r in ladder)} pages/s, {seconds:g} s of arrivals each (the "
        "same pages at the same rate in every mode: seeded by the rate), then the clients wait for their last "
        f"pages (at most {PAGE_TIMEOUT:g} s). A step is sustained when at least {MIN_COMPLETED:.0%} of its pages "
        f"completed and at most {MAX_FAILED:.0%} failed; the agent's step also needs p95 within {P95_RATIO:g}× the "
        "bare bridge's at the same rate. The bare bridge climbs the ladder from the lowest rate until the lab "
        "saturates (below); each agent mode climbs up to that rate and stops early only when its pages do not "
        "complete; then the bare bridge runs the same rates again. The agent's steps are judged against both "
        "bare ladders pooled (each rate's pages of both together); its highest rate is the last step before its "
        "first step not sustained (the ladder's resolution). Before the "
        f"ladder: {WARMUP_SECONDS:g} s at {WARMUP_RATE:g} pages/s (not counted) and the new-connections measure "
        f"(`lab.bench.load http-load` from pc1 and pc2, {CONN_CONCURRENCY} connections in flight, "
        f"{CONN_SECONDS:g} s, to the pre-fork server on port {CONN_PORT}).",
        "Modes, in this order: bare bridge (`Lab.bridge_bare()`: no netfilter), the agent with every engine on "
        "and 2 workers, the same with 1 worker, then two modes that show where the time goes (2 workers): the "
        "firewall alone (IPS, ATP, web filter and AV off) and the firewall with the IPS on ET Open (ATP, web "
        "filter and AV off), and the bare bridge again; `--modes` also knows `agent-noav`, `agent-noips`, `agent-nocache` (AV scans every file: no verdict cache) and `agent-onequeue` (no bulk queue). Each "
        "agent mode starts afresh; conntrack is flushed before each mode. The bare bridge's ladder ends where the lab itself saturates (its "
        f"p95 more than {BARE_KNEE:g}× its p95 at the lowest rate): the agent is judged only up to there; every mode measures "
        f"the busy rate ({BUSY_RATE:g} pages/s) even when a lower step already failed. One ladder per mode, no "
        "repeat; what other processes used during each step is in the samples.",
        "Agent CPU: user + system seconds of the agent's process tree (daemon and workers, psutil) over the step, "
        "divided by the pages completed.",
        "Everything (clients, servers, bridge, agent) shares this machine's CPUs, so the figures are ratios "
        "against the bare bridge in the same run; on the box, the clients and servers are elsewhere.",
    ]


def judged(results: dict[str, ModeResult]) -> dict[str, ModeResult]:
    """The modes as the verdicts see them: "bare" is both bare ladders pooled (``office_model.reference``), with
    the median of their new-connections rates; the agents as measured."""
    bare, again = results.get("bare"), results.get("bare-end")
    out = {m: r for m, r in results.items() if m != "bare-end"}
    if bare is not None and again is not None and again.steps:
        ref = ModeResult("bare", steps=reference(bare.steps, again.steps))
        rates = [r for r in (bare.conn_rate, again.conn_rate) if r]
        ref.conn_rate = median(rates) if rates else None
        out["bare"] = ref
    return out


def drift_cells(results: dict[str, ModeResult]) -> list[list[str]]:
    """The bare bridge's p50/p95 per rate before and after the agents (how much the shared machine drifted)."""
    bare, again = results.get("bare"), results.get("bare-end")
    cells = [["Offered pages/s", "Before: p50 / p95", "After: p50 / p95", "Pooled: p50 / p95"]]
    if bare is None or again is None:
        return cells
    ref = reference(bare.steps, again.steps)
    for rate in sorted(ref):
        cells.append([f"{rate:g}", *(f"{ms(s.p(50))} / {ms(s.p(95))}" if s else "—"
                                     for s in (bare.steps.get(rate), again.steps.get(rate), ref[rate]))])
    cells.append(["New connections/s", fmt(bare.conn_rate, 0), fmt(again.conn_rate, 0), "median of both"])
    return cells


def render(results: dict[str, ModeResult], bench: OfficeBench, date: str, duration: str, noise: list[str],
           command: str, agent_desc: str, extra_notes: list[str]) -> tuple[str, str, bool]:
    raw, results = results, judged(results)
    summary, ok = summary_cells(results)
    lines = header_lines(TITLE, "python -m lab bench --suite office", SOURCE, date, duration, machine(), command,
                         noise)
    lines += ["The noise lines above and per mode below say how busy the machine was (other work on it takes CPU "
              "from the agent first). Judge the ratios against the bare bridge in the same run, not the absolute figures.", "",
              f"Agent: {agent_desc}", "", "## Office, 50 users", ""]
    lines += md_table(summary) + [""]
    lines += ["## Page rate ladder", "", *md_table(ladder_cells(results)), ""]
    stops = [f"- {MODE_LABEL[m]}: " + (f"ERROR {r.error}" if r.error else (f"stopped at {r.stopped}" if r.stopped
                                                                          else "went to its last step"))
             for m, r in raw.items()]
    lines += ["The bare bridge's columns are its two ladders pooled (before and after the agents: the table below). "
              "Where each ladder stopped:", "", *stops, ""]
    if "bare-end" in raw:
        lines += ["The bare bridge before and after the agents:", "", *md_table(drift_cells(raw)), ""]
    lines += ["## Downloads, mail and video alongside", "", *md_table(background_cells(raw)), ""]
    lines += ["## Agent modes: workers and engines", "", *md_table(modes_cells(results)), "",
              "The agent's CPU per page is the figure least moved by the shared machine: the cores the box has, "
              "divided by it, bound the page rate the agent could inspect if it had them to itself.", "",
              "## Scaling with workers (issue 15, item 5)", "", *(f"- {t}" for t in SCALING_TEXT), ""]
    notes = [*bench.notes, client_note(raw), *extra_notes]
    samples = []
    for mode, res in raw.items():
        for rate, s in sorted(res.steps.items()):
            cpu = res.agent_cpu.get(rate)
            samples.append(f"- {MODE_LABEL[mode]}, {rate:g} pages/s: {s.completed}/{s.offered} pages, {s.failed} "
                           f"failed{(' ' + str(s.problems)) if s.problems else ''}; p50/p90/p95/p99 "
                           + " / ".join(fmt(s.p(p), 0) for p in (50, 90, 95, 99)) + " ms; "
                           f"{s.connections:,} connections, {s.bytes / 1e6:,.0f} MB; start lag p95 {fmt(s.lag_p95, 0)} ms; "
                           f"clients {s.client_cpu_s:.1f} CPU s" + (f"; agent {cpu:.1f} CPU s" if cpu else "")
                           + (f"; noise: {res.noise[rate]}" if rate in res.noise else ""))
    lines += closing_lines([], notes, samples or ["none"], method_lines(bench.seconds, bench.ladder), [])
    terminal = "\n".join(" | ".join(line) for line in summary)
    return markdown(lines), terminal, ok


# ----------------------------------------------------------------------------- driver
def command_line(seconds: float, ladder: Sequence[float], modes: Sequence[str]) -> str:
    cmd = "python -m lab bench --suite office"
    if seconds != DEFAULT_SECONDS:
        cmd += f" --seconds {seconds:g}"
    if list(ladder) != list(LADDER):
        cmd += " --ladder " + ",".join(f"{r:g}" for r in ladder)
    if list(modes) != list(MODES):
        cmd += " --modes " + ",".join(modes)
    return f"`{cmd}` (`make bench-office`)"


DEFAULT_SECONDS = 10.0


def run_office_bench(args: argparse.Namespace) -> int:
    from lab import clamd as labclamd
    from lab.netns import Lab

    seconds = args.seconds or DEFAULT_SECONDS
    ladder = [float(x) for x in args.ladder.split(",")] if getattr(args, "ladder", None) else list(LADDER)
    modes = args.modes.split(",") if getattr(args, "modes", None) else list(MODES)
    if "bare" not in modes or any(m not in ALL_MODES for m in modes):
        print(f"bench office: --modes must include bare and be among {', '.join(ALL_MODES)}", file=sys.stderr)
        return 2
    modes = [m for m in ALL_MODES if m in modes]
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="vcr-benchoffice-"))
    prefix = args.prefix or "vbo"
    print(f"bench office: lab {prefix}, ladder {ladder} pages/s, {seconds:g} s per step; work dir {workdir}", flush=True)
    noise = [machine_noise("Before the bench")]
    print(f"bench office: {noise[0]}", flush=True)
    why_no_av = labclamd.missing()
    clamd = None
    if why_no_av is None:
        try:
            clamd = labclamd.PrivateClamd(workdir / "clamd").start()
        except (RuntimeError, OSError, subprocess.CalledProcessError) as exc:
            why_no_av = f"the private clamd did not start: {exc}"
    av_note = ("AV on the private clamd of lab/clamd.py (starter database, shipped size limits)" if clamd
               else f"AV off ({why_no_av})")
    overrides, missing = agent_overrides(clamd)
    lab = Lab(prefix, lan_pcs=PCS, log_dir=workdir / "lab")
    lab.add_internet_host(DNS_HOST, DNS_IP)
    lab.add_internet_host(MAIL_HOST, MAIL_IP)
    try:
        with lab:
            bench = OfficeBench(lab, workdir, seconds, ladder, overrides)
            bench.start_servers()
            bench.run(modes)
    except BenchError as exc:
        print(f"bench office: ERROR {exc}", flush=True)
        print(f"bench office: logs kept in {workdir}")
        return 1
    finally:
        if clamd is not None:
            clamd.stop()
    noise.append(machine_noise("After the bench"))
    took = time.monotonic() - started
    extra = [f"Missing: {m}." for m in missing]
    per_mode = [f"{MODE_LABEL[m]}: {r.started}" for m, r in bench.results.items() if r.started]
    if per_mode:
        extra.append("Agent start to all workers ready, and its RSS/PSS then: " + "; ".join(per_mode) + ".")
    extra += [f"eve.json of {MODE_LABEL[m]} (the whole mode): {r.eve}." for m, r in bench.results.items() if r.eve]
    text, terminal, ok = render(bench.results, bench, dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                                f"the bench took {took / 60:.1f} min", noise, command_line(seconds, ladder, modes),
                                agent_description(overrides, av_note), extra)
    out = Path(args.out)
    write_section(out, SECTION, text)
    print()
    print(terminal)
    print(f"\nbench office: {took:.0f} s; section `{SECTION}` of {out} written")
    if any(r.error for r in bench.results.values()) or getattr(args, "keep", False):
        print(f"bench office: logs kept in {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0 if ok else 1

