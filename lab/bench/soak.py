"""The soak (``python -m lab soak``, ``make soak``): the real agent in the lab for a long time under
mixed office traffic while it is reloaded, updated, cut off from its center and has workers killed.

Set-up: the office lab (lab/netns.py) with a DNS server, a C&C host, the web server (HTTP, HTTPS
with any SNI, echo listeners), the real center (lab/center.py) with its TUF repository, and the
agent with every engine on (firewall, IPS, web filter on the UT1 lists, ATP), activated at the center
and taking signed updates from it. Then, for ``--minutes``:

* traffic (lab/bench/soak_roles.py): everyday requests from pc1 (HTTP, HTTPS with SNI, DNS, a bulk
  download every 20 s); the alarm schedule from pc2 (one action a second or two, cycling through
  firewall, IPS, web filter and ATP hits, each on a fresh socket) and inbound attacks from the
  internet; a prober through the bridge every 100 ms;
* events (``plan_events``): SIGHUP reloads with a changed local config, remote configuration
  revisions from the center, signed IPS and threat-intel bundles published at the center and
  fetched on an ``update_check`` task, the center stopped or its route cut for minutes, and
  SIGKILL of a worker (the daemon restarts it);
* every few seconds: RSS, PSS, open descriptors and threads of the daemon and each worker.

At the end every alarm the schedule raised is looked up in eve.json and at the center, and the
checks of lab/bench/soak_report.py decide; the report goes to the ``soak`` section of
docs/benchmarks.md. ``tests/e2e/test_soak.py`` runs the same for two minutes.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from lab.agentrun import CENTER_NAME, REPO, LabAgent, center_overrides, start_lab_center, utm_resolv_conf
from lab.bench.doc import write_section
from lab.bench.host import helper_argv, helper_env, listening, machine, machine_noise
from lab.bench.soak_report import (
    SOAK_SID,
    EventRow,
    Sample,
    SoakResult,
    Tolerance,
    build_checks,
    classify,
    match_alarms,
    parse_probes,
    probe_stats,
    render_markdown,
    phase_note,
    render_terminal,
    rtt_by_phase,
    slot_rows,
    timeline,
)
from lab.demo import CNC_DOMAIN, CNC_IP, CNC_PORT, DEMO_FEEDS, DEMO_OVERRIDES, phishing_example
from lab.netns import Lab, LabError

log = logging.getLogger(__name__)

ROLES = "lab.bench.soak_roles"
DNS_IP = "198.51.100.53"
WEB_NAME = "www.example.org"
BENIGN_NAMES = (WEB_NAME, "intranet.example.com", "cdn.example.net", "mail.example.org", "news.example.com")
ECHO_PORT = 7007  # TCP echo on web: the new-connection probe and the held connection
UDP_ECHO_PORT = 7008
TELNET_PORT = 23
PROBE_INTERVAL = 0.1
QUIET_GRACE = 3.0  # seconds after a reload or restart before memory samples count as settled
PAUSE_LEAD = 1.5  # seconds between holding back worker-path alarm actions and killing a worker
SERIAL = "VCR116W-SOAK0001"
SOAK_RULE = ('alert http $HOME_NET any -> any any (msg:"VCR SOAK canary"; flow:established,to_server; http.uri; '
             f'content:"/soak-canary/"; classtype:policy-violation; sid:{SOAK_SID}; rev:1;)\n')
BUNDLE_SID = 9410000  # + the bundle's number: each IPS bundle's canary rule
ALARM_KINDS_PC = ("telnet", "ips-dns", "wf-dns", "cnc-ip", "ips-http", "wf-http", "atp-dns", "smb", "wf-sni",
                  "deny-latest", "bundle-latest", "ti-latest")
MIB = 1 << 20


# ----------------------------------------------------------------------------- the plan
@dataclass(frozen=True)
class Event:
    t: float  # seconds after the traffic started
    kind: str  # sighup | remote-config | bundle-ips | bundle-ti | outage-begin | outage-end | kill
    arg: Any = None  # outage: "stop" or "cut"; kill: the how-manieth kill (the worker is that modulo the workers)

    def label(self) -> str:
        return f"{self.kind} ({self.arg})" if self.arg is not None and self.kind.startswith("outage") else self.kind


def warmup_for(duration: float) -> float:
    """The warm-up: a fifth of the run, at least 30 s and at most 5 min (it holds a reload and a kill)."""
    return min(300.0, max(30.0, duration * 0.2))


def plan_events(duration: float) -> tuple[float, list[Event]]:
    """(warm-up seconds, the events in time order).

    The warm-up holds a worker kill and a reload, so every worker runs engines it built itself (not
    the pages it shared with the daemon at fork) before the memory baseline is taken. Short runs
    (under 15 min, the CI test) place one event of each kind at fixed fractions of the run; long
    runs repeat them: a reload every 4 min (remote revisions and SIGHUP alternating, a remote one
    never inside an outage), a bundle every 6 min (threat intel and IPS alternating), a worker kill
    every 5 min (the workers in turn), and two outages of the center of 3 min (stopped, then its
    route cut)."""
    w = warmup_for(duration)
    if duration < 900:
        # Kill worker 0, then reload: both workers run engines they built themselves. The first and
        # the last third then see the same things at the same places (a bundle reload at the start,
        # a kill of worker 1 in the middle), so their medians compare like with like: a restarted
        # worker's fresh engines take less memory than a reloaded one's. The middle third holds
        # the outage, a kill of worker 0 during it, and a remote revision once the center is back.
        t = (duration - w) / 3
        ev = [Event(0.1 * w, "kill", 0), Event(0.4 * w, "sighup"),
              Event(w + 0.05 * t, "bundle-ips"), Event(w + 0.5 * t, "kill", 1),
              Event(w + 1.05 * t, "outage-begin", "stop" if duration < 300 else "cut"), Event(w + 1.3 * t, "kill", 2),
              Event(w + 1.6 * t, "outage-end", "stop" if duration < 300 else "cut"), Event(w + 1.7 * t, "remote-config"),
              Event(w + 2.05 * t, "bundle-ti"), Event(w + 2.5 * t, "kill", 3)]
    else:
        ev = [Event(0.2 * w, "sighup"), Event(0.55 * w, "kill", 0)]
        outages = [(0.35 * duration, "stop"), (0.70 * duration, "cut")]
        length = 180.0

        def center_free(t: float, lead: float) -> float | None:
            """When an event needing the center planned at ``t`` (taking about ``lead`` s) would meet an
            outage: the time after it; else None."""
            return next((b + length + 20 for b, _ in outages if b - lead <= t <= b + length), None)

        ev.append(Event(w - 60, "bundle-ips"))
        for t0, mode in outages:
            ev += [Event(t0, "outage-begin", mode), Event(t0 + length, "outage-end", mode)]
        t, i = w + 30, 0
        while t < duration - 60:
            kind = ("remote-config", "sighup")[i % 2]
            moved = center_free(t, 90) if kind == "remote-config" else None
            if moved:  # a SIGHUP now (the center is away), the remote revision after the outage
                ev += [Event(t, "sighup"), Event(moved, kind)]
            else:
                ev.append(Event(t, kind))
            t += 240
            i += 1
        t, i = w + 120, 0
        while t < duration - 60:
            ev.append(Event(center_free(t, 60) or t, "bundle-ti" if i % 2 == 0 else "bundle-ips"))
            t += 360
            i += 1
        t, k = w + 200, 1
        while t < duration - 30:
            ev.append(Event(t, "kill", k))
            t += 300
            k += 1
    return w, sorted(ev, key=lambda e: e.t)


# ----------------------------------------------------------------------------- options
@dataclass
class SoakOptions:
    duration: float = 1800.0
    prefix: str = "vsk"
    workdir: Path | None = None  # default: a temporary folder (kept when the soak fails or --keep)
    ips: str = "et-open"  # "et-open" (ET Open + local rules) or "local" (config/rules/local.rules only)
    out: Path | None = REPO / "docs" / "benchmarks.md"  # None: no doc
    sample_every: float = 5.0
    alarm_every: float = 2.0  # seconds between the alarm actions from pc2
    attack_every: float = 10.0  # seconds between inbound attacks
    noise: bool = True
    keep: bool = False
    tol: Tolerance = field(default_factory=Tolerance)
    command: str = "`python -m lab soak`"  # Markdown

    @classmethod
    def for_duration(cls, duration: float, **kw: Any) -> "SoakOptions":
        """Short runs (under 15 min) sample and raise alarms twice as often, and allow more memory noise
        (their thirds are a few reloads long at most)."""
        if duration < 900:
            kw = {"sample_every": 1.0, "alarm_every": 1.0, "attack_every": 5.0,
                  "tol": Tolerance(mem_pct=0.25, mem_mib=32.0), **kw}
        return cls(duration=duration, **kw)

    @classmethod
    def for_ci(cls, duration: float, prefix: str, workdir: Path) -> "SoakOptions":
        """The CI test's soak: the local IPS rules (ET Open takes minutes per reload on two shared CPUs), no doc."""
        return cls.for_duration(duration, prefix=prefix, workdir=workdir, ips="local", out=None, noise=False,
                                command=f"`pytest tests/e2e/test_soak.py` ({duration:.0f} s of traffic)")


# ----------------------------------------------------------------------------- /proc helpers
def bound_queues(pid: int) -> dict[int, int]:
    """{queue number: netlink port id of the socket bound to it} in the network namespace of ``pid``."""
    try:
        return parse_bound_queues(Path(f"/proc/{pid}/net/netfilter/nfnetlink_queue").read_text())
    except OSError:
        return {}


def parse_bound_queues(text: str) -> dict[int, int]:
    """/proc/net/netfilter/nfnetlink_queue lines (queue_num portid queue_total ...) -> {queue: portid}."""
    out = {}
    for line in text.splitlines():
        cols = line.split()
        if len(cols) >= 2 and cols[0].isdigit() and cols[1].isdigit():
            out[int(cols[0])] = int(cols[1])
    return out


def proc_sample(pid: int) -> tuple[float, float, int, int] | None:
    """(RSS MiB, PSS MiB, open fds, threads) of a live process, None when it is gone (or a zombie)."""
    import psutil

    try:
        p = psutil.Process(pid)
        if p.status() == psutil.STATUS_ZOMBIE:
            return None
        m = p.memory_full_info()
        return m.rss / MIB, getattr(m, "pss", m.rss) / MIB, p.num_fds(), p.num_threads()
    except psutil.Error:
        return None


def rules_loaded(summary: dict[str, Any]) -> str:
    """The IPS engine's rule count from its status summary (the key moved between versions)."""
    n = summary.get("rules_loaded", (summary.get("summary") or {}).get("rules_loaded"))
    return f"{n:,}" if isinstance(n, int) else "?"


def is_child(pid: int, parent: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).ppid() == parent
    except psutil.Error:
        return False


# ----------------------------------------------------------------------------- the soak
class Soak:
    def __init__(self, opts: SoakOptions) -> None:
        self.o = opts
        self.workdir = Path(opts.workdir or tempfile.mkdtemp(prefix="vcr-soak-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.control = self.workdir / "control"
        self.warmup, self.plan = plan_events(opts.duration)
        self.samples: list[Sample] = []
        self.link: list[dict[str, Any]] = []
        self.events: list[EventRow] = []
        self.restarts: list[float] = []
        self.state: dict[str, Any] = {}
        self.notes: list[str] = []
        self.config_lines: list[str] = []
        self.abort = threading.Event()
        self.t0 = 0.0
        self.lab: Lab | None = None
        self.agent: LabAgent | None = None
        self.center: Any = None
        self.device = ""
        self.counter = {"sighup": 0, "remote-config": 0, "bundle-ips": 0, "bundle-ti": 0}
        self.reload_timeout = 300.0 if opts.ips == "et-open" else 90.0
        if opts.ips == "et-open":  # a restarted worker compiles ET Open before it binds its queue
            opts.tol = dataclasses.replace(opts.tol, restart_s=max(opts.tol.restart_s, 180.0))
        self.start_seconds = 0.0
        self.busy: set[str] = set()  # slots a reload ("*": all) or a worker restart is under way in
        self.quiet_after: dict[str, float] = {}  # slot -> epoch: samples before this are still "busy" (the tail)
        self.phish = ""
        self.wall = 0.0

    # -- helpers -------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        assert self.agent is not None
        return self.agent.status() or {}

    def wait(self, pred: Callable[[], Any], timeout: float, interval: float = 0.2) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            v = pred()
            if v or time.monotonic() > deadline:
                return v
            time.sleep(interval)

    def write_state(self) -> None:
        tmp = self.control / "state.tmp"
        tmp.write_text(json.dumps(self.state))
        os.replace(tmp, self.control / "state.json")

    def config(self) -> dict[str, Any]:
        assert self.agent is not None
        return yaml.safe_load(self.agent.config_path.read_text(encoding="utf-8"))

    def workers_reloaded(self) -> int:
        return int((self.status().get("reloads") or {}).get("workers_reloaded", 0))

    def nworkers(self) -> int:
        return len(self.status().get("workers") or {}) or 1

    def wait_reloaded(self, before: int, failed_before: int) -> tuple[bool, str]:
        n = self.nworkers()

        def done() -> str | None:
            r = self.status().get("reloads") or {}
            if int(r.get("failed", 0)) > failed_before:
                return f"reload failed: {r.get('last_error')}"
            return "ok" if int(r.get("workers_reloaded", 0)) >= before + n else None

        res = self.wait(done, self.reload_timeout, 0.3)
        return res == "ok", res or f"workers did not confirm the reload in {self.reload_timeout:.0f} s"

    # -- set-up ----------------------------------------------------------------------------------
    def agent_overrides(self, lib: Path, feeds: Path, rules: Path, phish_deny: list[str]) -> dict[str, Any]:
        from lab.bench.offline import et_open_files

        rule_files = [str(REPO / "config" / "rules" / "local.rules"), str(rules)]
        ips: dict[str, Any] = {"engines.ips.rule_files": rule_files}
        if self.o.ips == "et-open":
            et, classification = et_open_files()
            if not et:
                raise LabError("ET Open is not beside the repository ($VCR_SHARED/peer/et-open/rules): use --ips local")
            ips = {"engines.ips.rule_files": [*map(str, et), *rule_files]}
            if classification is not None:
                ips["engines.ips.classification"] = str(classification)
        assert self.center is not None and self.lab is not None
        return {
            **center_overrides(self.center, self.workdir / "agent", url=f"https://{CENTER_NAME}",
                               portcheck={"enabled": False}, ntp_servers=[]),
            "bridge.resolv_conf": str(utm_resolv_conf(self.lab)),
            "updates": {"enabled": True, "trusted_root": str(lib / "tuf" / "root.json"),
                        "metadata_dir": str(lib / "tuf" / "metadata"), "download_dir": str(lib / "tuf" / "downloads"),
                        "bundles_dir": str(lib / "bundles"), "ntp_servers": [], "timeout": 10, "check_interval": 3600},
            "engines.atp": {"enabled": True, "feeds": [str(feeds)], "allow_documentation_addresses": True},
            "engines.webfilter.deny": phish_deny,
            **DEMO_OVERRIDES,  # pc1's web server published to the internet (the inbound attacks' target)
            **ips,
            "logging.eve_rotate_bytes": 1 << 30,  # one file for the whole soak
            "remote_config": {"confirm_window": 60},
        }

    def setup(self, lab: Lab) -> None:
        from lab.bench.filter import make_cert
        from opscenter.tufrepo import TufRepo

        self.lab = lab
        env = helper_env()
        web, ops = lab.hosts["web"], lab.hosts["ops"]
        names = [f"{CENTER_NAME}={ops.ipv4},{ops.ipv6}", *(f"{n}={web.ipv4},{web.ipv6}" for n in BENIGN_NAMES),
                 f"{CNC_DOMAIN}={CNC_IP},{lab.hosts['cnc'].ipv6}"]
        lab.popen("dns", [sys.executable, "-m", "lab.dns", "53", *names], name="dns", env=env)
        lab.start_http_server("web", 80)
        lab.start_tcp_listener("web", ECHO_PORT)
        lab.start_tcp_listener("web", TELNET_PORT)  # open: only the box's reject makes telnet fail
        lab.start_http_server("pc1", 80)  # the office's published web server
        cert = make_cert(self.workdir / "tls", WEB_NAME)
        lab.popen("web", helper_argv(ROLES, "serve-tls", "--port", "443", "--cert", str(self.workdir / "tls" / "cert.pem"),
                                     "--key", str(self.workdir / "tls" / "key.pem")), name="tls", env=env)
        lab.popen("web", helper_argv(ROLES, "serve-udp-echo", "--port", str(UDP_ECHO_PORT)), name="udpecho", env=env)
        for port, proto in ((443, "tcp"), (UDP_ECHO_PORT, "udp")):
            if not listening(lab, "web", port, proto):
                raise LabError(f"web does not listen on {proto}/{port}: {lab.log_tail('web', 'tls')}")
        # the center and its signed-update repository
        cdir = self.workdir / "center"
        repo = TufRepo(cdir / "tuf", cdir / "tuf-keys")
        repo.init()
        self.center = start_lab_center(lab, cdir, heartbeat_interval=2,
                                       settings={"checkin_rate": 0, "alarm_rate": 0, "tuf_repo": str(repo.dir)})
        self.center.tuf = repo
        # the agent
        adir = self.workdir / "agent"
        lib = adir / "lib"
        feeds = self.workdir / "threatintel"
        feeds.mkdir(parents=True, exist_ok=True)
        for name, text in DEMO_FEEDS.items():
            (feeds / name).write_text(text)
        rules = self.workdir / "soak.rules"
        rules.write_text(SOAK_RULE)
        self.phish = phishing_example()
        deny = []
        if self.phish is None:
            self.phish = "blocked.soak-category.example"
            deny = [self.phish]
            self.notes.append("The UT1 lists were not found: the web filter's 'blocked category' actions use a deny-list entry instead.")
        self.agent = LabAgent(lab, adir, overrides=self.agent_overrides(lib, feeds, rules, deny))
        self.agent.bridge_up()
        res = self.agent.cli("activate", self.center.issue_code("C-SOAK", serial=SERIAL), "--serial", SERIAL)
        if res.returncode != 0:
            raise LabError(f"activation failed: {res.stderr or res.stdout}")
        t = time.monotonic()
        self.agent.start(timeout=self.reload_timeout)
        self.start_seconds = time.monotonic() - t
        self.device = self.wait(lambda: next((d["device_id"] for d in self.center.devices() if d.get("serial") == SERIAL), None), 60)
        if not self.device or not self.wait(lambda: (self.status().get("center") or {}).get("checkins_ok", 0) >= 1, 60):
            raise LabError("the box did not check in at the center")
        self.describe_config(cert)

    def describe_config(self, cert: str) -> None:
        st = self.status()
        eng = st.get("engines") or {}
        ips = (eng.get("ips") or {})
        cfg = self.config()
        self.config_lines = [
            f"Agent: the shipped config/vcr-agent.yaml with every engine on: {', '.join(sorted(eng)) or '?'}; "
            f"{len(st.get('workers') or {})} NFQUEUE workers (one per CPU), fail-open; ready {self.start_seconds:.1f} s after start.",
            f"IPS: {'ET Open (the *.rules of $VCR_SHARED/peer/et-open/rules), ' if self.o.ips == 'et-open' else ''}"
            f"config/rules/local.rules and the soak's canary rule (sid {SOAK_SID}); {rules_loaded(ips)} rules loaded at start; "
            "each signed IPS bundle adds one canary rule.",
            f"Web filter: {'the UT1 lists beside the repository' if not cfg['engines']['webfilter'].get('deny') else 'no UT1 lists: a deny-list entry'}, "
            f"blocked categories {', '.join(cfg['engines']['webfilter'].get('blocked') or [])}; the blocked name of the schedule is "
            f"`*.{self.phish}`.",
            f"ATP: the demo's feeds (QakBot C&C {CNC_IP}:{CNC_PORT}, domain evil-c2.example) plus each threat-intel bundle's domain.",
            "Firewall: the shipped rules (telnet rejected, SMB dropped, RDP logged) plus pc1's web server published to the internet.",
            f"Center: the reference center (`vcr-opscenter serve`) as {CENTER_NAME} with its TUF repository at /tuf/; "
            "heartbeat every 2 s; the box activated with a code, alarms through the durable spool.",
            f"HTTPS server: Python ssl in web, {cert}.",
        ]

    # -- traffic ---------------------------------------------------------------------------------
    def start_roles(self) -> list[subprocess.Popen]:
        assert self.lab is not None
        lab, env = self.lab, helper_env()
        web = lab.hosts["web"].ipv4
        secs = str(self.o.duration + 5)
        common = ["--control", str(self.control), "--seconds", secs, "--web", web]
        out = self.workdir / "out"
        procs = [
            lab.popen("pc1", helper_argv(ROLES, "prober", *common, "--interval", str(PROBE_INTERVAL), "--tcp-port",
                                         str(ECHO_PORT), "--udp-port", str(UDP_ECHO_PORT), "--echo-port", str(ECHO_PORT),
                                         "--out", str(out / "probes.txt")), name="prober", env=env),
            lab.popen("pc1", helper_argv(ROLES, "office", *common, "--dns", DNS_IP, "--name", WEB_NAME, "--names", *BENIGN_NAMES,
                                         "--out", str(out / "office.json")), name="office", env=env),
            lab.popen("pc2", helper_argv(ROLES, "alarms", *common, "--kinds", ",".join(ALARM_KINDS_PC), "--every",
                                         str(self.o.alarm_every), "--src", lab.hosts["pc2"].ipv4, "--dns", DNS_IP,
                                         "--phish", self.phish, "--cnc-ip", CNC_IP, "--cnc-port", str(CNC_PORT),
                                         "--cnc-domain", "evil-c2.example", "--log", str(out / "alarms-pc2.jsonl")),
                      name="alarms", env=env),
            lab.popen("atk", helper_argv(ROLES, "alarms", *common, "--kinds", "inbound", "--every", str(self.o.attack_every),
                                         "--offset", "0.5", "--src", lab.hosts["atk"].ipv4, "--target", lab.hosts["pc1"].ipv4,
                                         "--log", str(out / "alarms-atk.jsonl")), name="attacker", env=env),
        ]
        return procs

    # -- sampling --------------------------------------------------------------------------------
    def sample_loop(self) -> None:
        nxt = time.monotonic()
        while not self.abort.is_set():
            self.sample_once()
            nxt += self.o.sample_every
            self.abort.wait(max(0.0, nxt - time.monotonic()))

    def sample_once(self) -> None:
        st = self.status()
        if not st.get("pid"):
            return
        now = time.time()
        t = round(now - self.t0, 2)

        def busy(slot: str) -> bool:
            return bool({"*", slot} & self.busy) or now < max(self.quiet_after.get(slot, 0.0), self.quiet_after.get("*", 0.0))
        daemon = int(st["pid"])
        procs = [("daemon", daemon)] + [(f"worker {i}", int(w.get("pid") or 0)) for i, w in sorted((st.get("workers") or {}).items())]
        for slot, pid in procs:
            if slot != "daemon" and not is_child(pid, daemon):
                continue  # status.json still names a killed worker
            got = proc_sample(pid)
            if got is None:
                continue
            self.samples.append(Sample(t, slot, pid, *got, busy=busy(slot)))  # its state: classify()
        c = st.get("center") or {}
        self.link.append({"t": t, "state": c.get("state"), "pending": (c.get("spool") or {}).get("pending"),
                          "alarms_written": st.get("alarms_written")})

    # -- events ----------------------------------------------------------------------------------
    def event_loop(self) -> None:
        for ev in self.plan:
            delay = self.t0 + ev.t - time.time()
            if delay > 0 and self.abort.wait(delay):
                return
            started = time.time()
            reload = ev.kind in ("sighup", "remote-config", "bundle-ips", "bundle-ti")
            if reload:
                self.busy.add("*")  # a kill marks its worker's slot itself
            try:
                ok, detail = getattr(self, "ev_" + ev.kind.replace("-", "_"))(ev)
            except Exception as exc:  # noqa: BLE001 - an event that broke is a failed event, the soak goes on
                log.exception("soak event %s failed", ev.kind)
                ok, detail = False, f"{type(exc).__name__}: {exc}"
            finally:
                for slot in self.busy:
                    self.quiet_after[slot] = time.time() + QUIET_GRACE
                self.busy = set()
            row = EventRow(ev.t, started - self.t0, time.time() - started, ev.label(), detail, ok)
            self.events.append(row)
            log.info("soak %6.1f s: %s: %s (%s)", row.started, row.kind, detail, "ok" if ok else "FAILED")

    def ev_sighup(self, ev: Event) -> tuple[bool, str]:
        assert self.agent is not None
        self.counter["sighup"] += 1
        name = f"hup{self.counter['sighup']}.soak-deny.example"
        data = self.config()
        data["engines"]["webfilter"]["deny"] = [*(data["engines"]["webfilter"].get("deny") or []), name]
        tmp = self.agent.config_path.with_suffix(".soak-tmp")
        tmp.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
        os.replace(tmp, self.agent.config_path)
        r = self.status().get("reloads") or {}
        before, failed = int(r.get("workers_reloaded", 0)), int(r.get("failed", 0))
        t = time.monotonic()
        os.kill(int(self.status()["pid"]), signal.SIGHUP)
        ok, why = self.wait_reloaded(before, failed)
        if ok:
            self.state["deny"] = name
            self.write_state()
        return ok, f"deny-list entry {name}: workers reloaded in {time.monotonic() - t:.1f} s" if ok else why

    def ev_remote_config(self, ev: Event) -> tuple[bool, str]:
        self.counter["remote-config"] += 1
        n = self.counter["remote-config"]
        name = f"rc{n}.soak-deny.example"
        data = self.config()
        data.pop("center", None)
        data["engines"]["webfilter"]["deny"] = [*(data["engines"]["webfilter"].get("deny") or []), name]
        data["settings_sheet"]["contact"] = f"soak revision {n}"
        t = time.monotonic()
        tid = self.center.add_task(self.device, "config", {"revision": n, "config": yaml.safe_dump(data, allow_unicode=True, sort_keys=False)})

        def final() -> dict[str, Any] | None:
            task = next((x for x in self.center.tasks(self.device) if x["task_id"] == tid), None)
            return task if task and task["status"] in ("applied", "failed", "rolled_back") else None

        task = self.wait(final, self.reload_timeout + 90, 0.5)
        if not task:
            return False, f"revision {n} not applied within {self.reload_timeout + 90:.0f} s"
        if task["status"] != "applied":
            return False, f"revision {n}: {task['status']}: {task.get('detail')}"
        self.state["deny"] = name
        self.write_state()
        return True, f"revision {n} ({name}) applied and confirmed in {time.monotonic() - t:.1f} s"

    def publish(self, kind: str, files: dict[str, str]) -> tuple[bool, str, str]:
        """Publish a bundle at the center, send an update_check task, wait until it is live and reloaded."""
        key = "bundle-ips" if kind == "ips" else "bundle-ti"
        self.counter[key] += 1
        n = self.counter[key]
        version = f"2026.12.1.{n}"
        src = self.workdir / "bundles" / f"{kind}-{n}"
        src.mkdir(parents=True, exist_ok=True)
        for name, text in files.items():
            (src / name).write_text(text)
        r = self.status().get("reloads") or {}
        before, failed = int(r.get("workers_reloaded", 0)), int(r.get("failed", 0))
        t = time.monotonic()
        self.center.tuf.publish(kind, version, src)
        self.center.add_task(self.device, "update_check", {"kinds": [kind]})
        live = self.wait(lambda: ((self.status().get("updates") or {}).get("kinds", {}).get(kind) or {}).get("live") == version,
                         self.reload_timeout, 0.3)
        if not live:
            k = (self.status().get("updates") or {}).get("kinds", {}).get(kind)
            return False, f"{kind} {version} not live: {json.dumps(k)[:300]}", version
        ok, why = self.wait_reloaded(before, failed)
        return ok, (f"{kind} {version} live in {time.monotonic() - t:.1f} s" if ok else why), version

    def ev_bundle_ips(self, ev: Event) -> tuple[bool, str]:
        """Bundle n holds the canary rules of 1..n (as a real one holds all its rules), so an action that
        still uses the previous canary while the new bundle goes live raises its alarm either way."""
        n = self.counter["bundle-ips"] + 1
        path, sid = f"/soak-bundle-v{n}/", BUNDLE_SID + n
        rules = "".join(f'alert http $HOME_NET any -> any any (msg:"VCR SOAK bundle canary v{i}"; flow:established,to_server; '
                        f'http.uri; content:"/soak-bundle-v{i}/"; classtype:policy-violation; sid:{BUNDLE_SID + i}; rev:1;)\n'
                        for i in range(1, n + 1))
        ok, detail, _ = self.publish("ips", {"bundle.rules": rules})
        if ok:
            self.state.update(canary=path, canary_sid=sid)
            self.write_state()
        return ok, detail + (f", canary sid {sid}" if ok else "")

    def ev_bundle_ti(self, ev: Event) -> tuple[bool, str]:
        n = self.counter["bundle-ti"] + 1  # bundle n lists the domains of 1..n
        domain = f"ti{n}.soak-c2.example"
        listed = "".join(f"ti{i}.soak-c2.example\n" for i in range(1, n + 1))
        ok, detail, _ = self.publish("threatintel", {"c2-domains.txt": f"# soak threat-intel bundle {n}\n{listed}"})
        if ok:
            self.state["ti"] = domain
            self.write_state()
        return ok, detail + (f", C&C domain {domain}" if ok else "")

    def _cut(self, add: bool) -> None:
        assert self.lab is not None
        ops = self.lab.hosts["ops"]
        op = "-I" if add else "-D"
        for tool, ip in (("iptables", ops.ipv4), ("ip6tables", ops.ipv6)):
            for side in ("-d", "-s"):
                self.lab.exec("router", [tool, "-w", op, "FORWARD", side, ip, "-j", "DROP"])

    def link_state(self) -> str:
        return str((self.status().get("center") or {}).get("state"))

    def ev_outage_begin(self, ev: Event) -> tuple[bool, str]:
        pending = lambda: ((self.status().get("center") or {}).get("spool") or {}).get("pending", 0)  # noqa: E731
        if ev.arg == "stop":
            self.center.stop()
        else:
            self._cut(True)
        noticed = self.wait(lambda: self.link_state() not in ("ok", "None"), 60, 0.5)
        how = "center stopped" if ev.arg == "stop" else "route to the center cut at the router (packets dropped)"
        return True, f"{how}; link state {self.link_state()}" + ("" if noticed else " (not noticed yet)") + f", spool {pending()}"

    def ev_outage_end(self, ev: Event) -> tuple[bool, str]:
        pending = ((self.status().get("center") or {}).get("spool") or {}).get("pending", 0)
        if ev.arg == "stop":
            self.center.start()
        else:
            self._cut(False)
        t = time.monotonic()
        back = self.wait(lambda: self.link_state() == "ok", 120, 0.5)
        drained = self.wait(lambda: ((self.status().get("center") or {}).get("spool") or {}).get("pending", 1) == 0, 120, 0.5)
        return bool(back), (f"{pending} alarms waited in the spool; link ok after {time.monotonic() - t:.1f} s"
                            + (", spool drained" if drained else ", spool not drained in 120 s") if back else
                            f"link not back in 120 s (state {self.link_state()})")

    def ev_kill(self, ev: Event) -> tuple[bool, str]:
        st = self.status()
        daemon = int(st["pid"])
        n = len(st.get("workers") or {})
        i = int(ev.arg) % n
        q = int(self.config()["dataplane"].get("queue_base", 0)) + i
        (self.control / "pause").touch()
        self.busy.add(f"worker {i}")
        try:
            time.sleep(PAUSE_LEAD)
            st = self.status()
            pid = int(st["workers"][str(i)]["pid"])
            if not is_child(pid, daemon):
                return False, f"worker {i}: pid {pid} is not the daemon's child"
            old = bound_queues(daemon).get(q)
            os.kill(pid, signal.SIGKILL)
            t = time.monotonic()
            unbound = False
            restart = -1.0
            while time.monotonic() - t < self.o.tol.restart_s:
                cur = bound_queues(daemon).get(q)
                if cur != old:
                    unbound = True
                if unbound and cur is not None and cur != old:
                    restart = time.monotonic() - t
                    break
                time.sleep(0.01)
            self.restarts.append(restart)
            new = self.wait(lambda: (lambda s: s.get("ready") == n and int(s["workers"][str(i)]["pid"]) != pid
                                     and s["workers"][str(i)]["alive"] and s)(self.status()), 60, 0.2)
            time.sleep(1.0)
        finally:
            (self.control / "pause").unlink(missing_ok=True)
        if restart < 0:
            return False, f"worker {i}: queue {q} not bound again within {self.o.tol.restart_s:g} s"
        if not new:
            return False, f"worker {i}: queue bound after {restart:.2f} s but status.json shows no ready successor"
        w = new["workers"][str(i)]
        return True, f"worker {i}: pid {pid} -> {w['pid']} (restart #{w['restarts']}), queue {q} unbound for {restart:.2f} s"

    # -- the run ---------------------------------------------------------------------------------
    def drain(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[str]]:
        from agent.evelog import read_eve

        assert self.agent is not None
        self.wait(lambda: (lambda s: s.get("pending") == 0 and s.get("in_flight") == 0)(
            (self.status().get("center") or {}).get("spool") or {}), 180, 0.5)
        time.sleep(2.5)  # status.json is written every 2 s: let it catch up with the last records
        eve = read_eve(self.agent.eve_path)
        self.wait(lambda: self.center.alarm_count(self.device) >= len(eve), 120, 1.0)
        eve = read_eve(self.agent.eve_path)
        stored = self.center.alarms(self.device, limit=10_000_000)
        return eve, [a["event"] for a in stored], [a["event_id"] for a in stored]

    def run(self) -> SoakResult:
        start_wall = time.monotonic()
        date = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        noise = [machine_noise("Before the soak")] if self.o.noise else []
        self.control.mkdir(parents=True, exist_ok=True)
        (self.workdir / "out").mkdir(parents=True, exist_ok=True)
        for f in ("stop", "pause", "state.json"):
            (self.control / f).unlink(missing_ok=True)
        lab = Lab(self.o.prefix, lan_pcs=2, log_dir=self.workdir / "lab")
        lab.add_internet_host("ops", "198.51.100.80")
        lab.add_internet_host("dns", DNS_IP)
        lab.add_internet_host("cnc", CNC_IP)
        threads: list[threading.Thread] = []
        try:
            with lab:
                self.setup(lab)
                print(f"soak: set up in {time.monotonic() - start_wall:.0f} s; {self.o.duration:.0f} s of traffic, "
                      f"warm-up {self.warmup:.0f} s, {len(self.plan)} events", flush=True)
                self.write_state()
                self.t0 = time.time()
                roles = self.start_roles()
                threads = [threading.Thread(target=self.sample_loop, name="soak-sampler", daemon=True),
                           threading.Thread(target=self.event_loop, name="soak-events", daemon=True)]
                for th in threads:
                    th.start()
                end = self.t0 + self.o.duration
                while time.time() < end:
                    dead = [p for p in roles if p.poll() is not None]
                    if dead or (self.agent and self.agent.proc and self.agent.proc.poll() is not None):
                        self.notes.append("a traffic role or the agent exited early: "
                                          + ", ".join(str(p.args[-1]) for p in dead))
                        break
                    time.sleep(min(1.0, max(0.0, end - time.time())))
                real_end = time.time() - self.t0
                (self.control / "stop").touch()
                for p in roles:
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        p.wait(30)
                self.abort.set()
                for th in threads:
                    th.join(self.reload_timeout + 120)
                eve, stored, ids = self.drain()
                self.save_raw(real_end, stored, ids, date, noise, time.monotonic() - start_wall)
                result = self.analyse(real_end, eve, stored, ids)
                result.date, result.noise = date, noise
                return result
        finally:
            self.abort.set()
            if self.agent is not None:
                with contextlib.suppress(Exception):
                    self.agent.kill()
                with contextlib.suppress(Exception):
                    self.agent.bridge_down()
            if self.center is not None:
                with contextlib.suppress(Exception):
                    self.center.close()
            self.wall = time.monotonic() - start_wall

    # -- what a report is made from: saved before the analysis, so a report can be made again -----
    def save_raw(self, end: float, stored: list[dict[str, Any]], ids: list[str], date: str, noise: list[str],
                 wall: float) -> None:
        out = self.workdir / "out"
        o = self.o
        meta = {"end": end, "t0": self.t0, "warmup": self.warmup, "date": date, "noise": noise, "wall": wall,
                "start_seconds": self.start_seconds, "device": self.device, "phish": self.phish,
                "eve": str(self.agent.eve_path) if self.agent else "", "config_lines": self.config_lines,
                "notes": self.notes, "restarts": self.restarts, "events": [dataclasses.asdict(e) for e in self.events],
                "options": {"duration": o.duration, "ips": o.ips, "sample_every": o.sample_every, "alarm_every": o.alarm_every,
                            "attack_every": o.attack_every, "command": o.command, "tol": dataclasses.asdict(o.tol)}}
        (out / "raw.json").write_text(json.dumps(meta, ensure_ascii=False, indent=1))
        (out / "samples.jsonl").write_text("".join(json.dumps(dataclasses.asdict(x)) + "\n" for x in self.samples))
        (out / "link.jsonl").write_text("".join(json.dumps(x) + "\n" for x in self.link))
        (out / "center.jsonl").write_text("".join(json.dumps({"event_id": i, "event": e}, ensure_ascii=False) + "\n"
                                                  for i, e in zip(ids, stored)))

    @classmethod
    def load_raw(cls, workdir: Path) -> tuple["Soak", float, list[dict[str, Any]], list[dict[str, Any]], list[str], dict[str, Any]]:
        """A finished soak's saved data (``save_raw``): (soak, end, eve records, center records, center ids, meta)."""
        from agent.evelog import read_eve

        out = Path(workdir) / "out"
        meta = json.loads((out / "raw.json").read_text())
        o = meta["options"]
        opts = SoakOptions(duration=o["duration"], workdir=Path(workdir), ips=o["ips"], out=None, sample_every=o["sample_every"],
                           alarm_every=o["alarm_every"], attack_every=o["attack_every"], noise=False,
                           tol=Tolerance(**o["tol"]), command=o["command"])
        soak = cls(opts)
        soak.t0, soak.warmup, soak.start_seconds = meta["t0"], meta["warmup"], meta["start_seconds"]
        soak.device, soak.phish, soak.config_lines = meta["device"], meta["phish"], meta["config_lines"]
        soak.notes, soak.restarts = meta["notes"], meta["restarts"]
        soak.events = [EventRow(**e) for e in meta["events"]]
        soak.samples = [Sample(**json.loads(line)) for line in (out / "samples.jsonl").read_text().splitlines() if line]
        center = [json.loads(line) for line in (out / "center.jsonl").read_text().splitlines() if line]
        return (soak, meta["end"], read_eve(meta["eve"]), [c["event"] for c in center], [c["event_id"] for c in center], meta)

    def analyse(self, end: float, eve: list[dict[str, Any]], stored: list[dict[str, Any]], ids: list[str]) -> SoakResult:
        out = self.workdir / "out"
        actions = []
        for f in ("alarms-pc2.jsonl", "alarms-atk.jsonl"):
            with contextlib.suppress(OSError):
                for line in (out / f).read_text().splitlines():
                    with contextlib.suppress(ValueError):
                        actions.append(json.loads(line))
        alarms = match_alarms(actions, eve, stored, ids)
        try:
            lines = (out / "probes.txt").read_text().splitlines()
        except OSError:
            lines = []
        by = parse_probes(lines)
        # gaps are counted from the prober's first probe to its last (its own start-up is not a gap)
        sent = [t for k in ("tcp", "udp") for t, _ in by.get(k, [])]
        first, last = (min(sent), max(sent)) if sent else (self.t0, self.t0 + end)
        probes = [probe_stats(k, by.get(k, []), PROBE_INTERVAL, first, last,
                              broken=len(by.get("held-broken", [])) if k == "held" else 0) for k in ("tcp", "udp", "held")]
        try:
            office = json.loads((out / "office.json").read_text())
        except (OSError, ValueError):
            office = {}
        done = [e.started + e.took for e in self.events if e.ok and e.kind in ("sighup", "remote-config", "bundle-ips", "bundle-ti")]
        samples = classify(self.samples, done)
        slots = slot_rows(samples, self.warmup, end, self.o.tol)
        kills = sum(1 for e in self.plan if e.kind == "kill" and e.t < end)
        notes = list(self.notes)
        windows = [(self.t0 + e.started, self.t0 + e.started + e.took) for e in self.events
                   if e.kind in ("sighup", "remote-config", "bundle-ips", "bundle-ti")]
        if windows:
            notes.append(phase_note(rtt_by_phase(by.get("tcp", []) + by.get("udp", []), windows),
                                    sum(b - a for a, b in windows)))
        back = [r for r in self.restarts if r >= 0]
        if back:
            notes.append(f"Killed workers: their queue had no listener for {', '.join(f'{r:.2f}' for r in back)} s. Meanwhile "
                         "the kernel let that queue's share of new flows through uninspected (`--queue-bypass`, fail-open); "
                         "the daemon restarts a worker after a 0.5 s back-off, as a fork of a live worker of the running "
                         "generation (after a reload) or of the engines the daemon prepared (before any), so it binds its "
                         "queue at once instead of building its engines first.")
        busy = sum(1 for x in self.samples if x.busy)
        notes.append(f"{len(self.samples):,} process samples, {busy:,} of them taken during a reload or a worker restart "
                     "(left out of the memory comparison, shown in the peak and the timeline).")
        checks = build_checks(slots, probes, alarms, office, self.events, self.restarts, kills, self.o.tol)
        res = SoakResult(
            title="Soak: the agent under office traffic, reloads, bundle updates, center outages and worker kills",
            command=self.o.command, date="", duration=end, warmup=self.warmup, wall=0.0, machine=machine(),
            config=self.config_lines, noise=[], tol=self.o.tol, slots=slots, timeline=timeline(samples, end),
            probes=probes, alarms=alarms, office=office, events=self.events, restarts=self.restarts, checks=checks,
            notes=notes, t0=self.t0)
        return res


# ----------------------------------------------------------------------------- method, entry point
def method_lines(o: SoakOptions, warmup: float) -> list[str]:
    t = o.tol
    return [
        "Lab: lab/netns.py (pc1, pc2 -- LAN switch -- UTM lan0|wan0 -- router -- web 198.51.100.10, dns .53, "
        "center .80, attacker 203.0.113.66, C&C 203.0.113.99), every host a network namespace on one machine; the "
        "agent (`vcr-agent bridge up` + `vcr-agent run`) in the UTM namespace, the center (`vcr-opscenter serve`) on the ops host.",
        "Everyday traffic from pc1 (lab/bench/soak_roles.py `office`): every 0.25 s one of HTTP `GET /` (web, Host "
        f"{WEB_NAME}), HTTPS `GET /` with SNI {WEB_NAME}, or a DNS look-up of one of {len(BENIGN_NAMES)} names, each on a new "
        "connection or socket; a 20 MB HTTP download every 20 s. A request fails when it gets no 200 (or the right A record) within 5 s.",
        f"Alarm schedule (`alarms`): from pc2 one action every {o.alarm_every:g} s cycling through: telnet to web (rejected by the "
        "firewall in the kernel), SMB to web (dropped in the kernel), a TCP SYN to the listed C&C address (dropped by the ATP ipset), "
        "a DNS query for `*.malware.example` (local IPS rule), HTTP to `/soak-canary/` (the soak's IPS rule), DNS, HTTP and HTTPS "
        "(SNI) for a name under a UT1 phishing entry (web filter: sinkhole, block page, reset), DNS for a name under the C&C domain "
        "(ATP sinkhole), and — once they exist — the newest deny-list entry of a reload, the newest IPS bundle's canary path and "
        f"the newest threat-intel bundle's domain; from the attacker one path traversal against pc1's published web server every "
        f"{o.attack_every:g} s (IPS drop). Each action uses a fresh socket; its alarm is found in eve.json and at the center by "
        "source address and port and must be there exactly once. From 1.5 s before a worker kill until the successor is ready, "
        "the actions an NFQUEUE worker would raise are held back (a killed worker loses the records it had not handed to the "
        "daemon, and its queue bypasses inspection while it is down: fail-open); the kernel's own (telnet, SMB, C&C address) go on.",
        f"Prober (`prober`, pc1): every {PROBE_INTERVAL * 1000:.0f} ms a new TCP connection to web:{ECHO_PORT} and a UDP echo to "
        f"web:{UDP_ECHO_PORT} from a new source port (each a new flow, so each goes through NFQUEUE), plus a 4-byte round trip on one "
        "long-lived TCP connection (offloaded to the kernel after its verdict). A probe without an answer within 1 s failed; a "
        "gap is the time between two successful probes of a kind.",
        "Events (the Events table): SIGHUP after adding a deny-list entry to the local config (done when every worker reports "
        "its reload); a remote configuration revision sent as a center task (`config`, a new deny-list entry; done when the "
        "task is `applied`, i.e. confirmed by a check-in); an IPS or threat-intel bundle published in the center's TUF "
        "repository (opscenter.tufrepo) followed by an `update_check` task (done when status.json shows it live and every "
        "worker reloaded); the center stopped, or its route cut at the router (iptables DROP both ways), then restored "
        "(done when the link is `ok` and the spool empty); SIGKILL of a worker (done when its queue is bound again, by "
        "/proc/PID/net/netfilter/nfnetlink_queue, and status.json shows the successor ready). The deny-list entries, bundle "
        "canaries and threat-intel domains are then used by the alarm schedule, which proves each change is enforced.",
        f"Memory: every {o.sample_every:g} s RSS and PSS (psutil `memory_full_info`, from smaps_rollup), open descriptors and "
        "threads of the daemon and of each worker (a killed worker's successor continues its slot). Warm-up: the first "
        f"{warmup:.0f} s, which hold a reload and a kill, so every worker runs engines it built itself. The medians of the "
        f"first and the last third of the rest are compared: {t.describe()}; for the whole agent, the PSS sum (forked "
        "workers share pages, so RSS sums overstate). Samples taken while a reload, a bundle activation or a worker "
        "restart is under way (and 3 s after) are left out, and a worker is compared with itself in the same kind of "
        "state: where its engines came from (the daemon's, for the workers it started with; its own, for a successor of "
        "a killed worker) and whether it has been through no reload, one, or two and more (each reload builds the new "
        "engines beside the old ones, and the heap keeps part of that peak: a worker's memory steps up over its first "
        "two reloads, then stays). The column `Memory compared on` names the kind and the samples used.",
        "At the end the traffic stops, the spool drains, and eve.json is compared with the center's records of the box "
        "(`vcr-opscenter alarms`): the same records, each exactly once (by content and event id).",
        "All of it shares the machine's CPUs with the agent (and with anything else running there): the figures are for "
        "stability (growth, loss, gaps), not for speed.",
    ]


def run_soak(opts: SoakOptions) -> SoakResult:
    soak = Soak(opts)
    res = None
    try:
        res = soak.run()
    finally:
        failed = res is None or not res.ok
        if soak.o.workdir is None and not soak.o.keep and not failed:
            shutil.rmtree(soak.workdir, ignore_errors=True)
        elif soak.o.workdir is None:
            print(f"soak: logs kept in {soak.workdir}", flush=True)
    res.wall = soak.wall
    if opts.noise:
        res.noise.append(machine_noise("After the soak"))
    with contextlib.suppress(OSError):  # beside the data it was made from (out/raw.json, samples.jsonl ...)
        (soak.workdir / "out" / "report.md").write_text(render_markdown(res, method_lines(opts, res.warmup)), encoding="utf-8")
    return res


def report_from(workdir: Path) -> tuple[SoakResult, SoakOptions]:
    """The report of a finished soak again, from what it saved in ``workdir`` (no lab)."""
    soak, end, eve, stored, ids, meta = Soak.load_raw(workdir)
    res = soak.analyse(end, eve, stored, ids)
    res.date, res.noise, res.wall = meta["date"], meta["noise"], meta["wall"]
    res.notes.append(f"This report was made again from the run's saved data (`python -m lab soak --report-from {workdir}`).")
    return res, soak.o


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--minutes", type=float, default=30.0, help="minutes of traffic (default 30)")
    p.add_argument("--ips", choices=["et-open", "local"], default=None,
                   help="IPS rules: ET Open + local rules (default when ET Open is beside the repository) or the local rules only")
    p.add_argument("--out", default="docs/benchmarks.md", help="the report's file (its `soak` section)")
    p.add_argument("--no-doc", action="store_true", help="print the report, do not write it")
    p.add_argument("--prefix", default="vsk")
    p.add_argument("--workdir", type=Path, default=None, help="keep everything here (default: a temporary folder)")
    p.add_argument("--keep", action="store_true", help="keep the temporary folder")
    p.add_argument("--report-from", type=Path, default=None, metavar="WORKDIR",
                   help="no soak: make the report again from what a finished soak saved in WORKDIR (its --workdir)")


def command_line(args: argparse.Namespace, ips: str) -> str:
    """The command that made the report, as Markdown (``make soak`` runs the defaults)."""
    cmd = f"python -m lab soak --minutes {args.minutes:g}" + ("" if ips == "et-open" else f" --ips {ips}")
    return f"`make soak` (= `{cmd}`)" if args.minutes == 30 and ips == "et-open" else f"`{cmd}`"


def main(args: argparse.Namespace) -> int:
    from lab.bench.offline import et_open_files

    if args.report_from is not None:
        res, opts = report_from(args.report_from)
        opts.out = None if args.no_doc else Path(args.out)
    else:
        ips = args.ips or ("et-open" if et_open_files()[0] else "local")
        opts = SoakOptions.for_duration(args.minutes * 60, prefix=args.prefix, workdir=args.workdir, ips=ips,
                                        out=None if args.no_doc else Path(args.out), keep=args.keep,
                                        command=command_line(args, ips))
        res = run_soak(opts)
    if opts.duration < 1800:
        res.partial = (f"This run is {opts.duration / 60:g} minutes, not the full 30 of `make soak`: the events are the short "
                       "plan's (see Events), and slow growth has less time to show.")
    md = render_markdown(res, method_lines(opts, res.warmup))
    print(render_terminal(res), flush=True)
    if opts.out is not None:
        write_section(opts.out, "soak", md)
        print(f"soak: report written to the `soak` section of {opts.out}", flush=True)
    else:
        print(md)
    return 0 if res.ok else 1
