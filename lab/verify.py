"""The suricata-verify peer suite runner: each case through ``vcr-agent pcap``, alerts vs expected.json."""
from __future__ import annotations

import argparse
import collections
import io
import json
import logging
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lab import shared_dir

log = logging.getLogger(__name__)

DEFAULT_ROOT = shared_dir() / "peer" / "suricata-verify"  # $VCR_SHARED or ../shared beside the checkout
WHERE_KEYS = ("pcap_cnt", "src_ip", "dest_ip", "src_port", "dest_port", "proto")


@dataclass
class Case:
    name: str
    root: Path
    rules: Path
    pcap: Path
    expected: list[dict[str, Any]]
    engine_options: dict[str, Any]
    sets: list[str] = field(default_factory=list)

    @property
    def argv(self) -> list[str]:
        """The ``vcr-agent pcap`` command line that reproduces Suricata's run of this case."""
        argv = ["pcap", "-r", str(self.pcap), "-S", str(self.rules)]
        opts = self.engine_options
        if not opts.get("checksum_checks", True):
            argv += ["-k", "none"]
        if opts.get("ips"):
            argv.append("--simulate-ips")
        if opts.get("midstream"):
            argv += ["--set", "stream.midstream=true"]
        if opts.get("stream_inline"):
            argv += ["--set", "stream.inline=true"]
        for s in self.sets:
            argv += ["--set", s]
        return argv


@dataclass
class CaseResult:
    name: str
    passed: bool
    reasons: list[str]
    alerts: dict[int, int]
    seconds: float


def _extra_sets(test_yaml: Path) -> list[str]:
    """``--set`` options from the case's own args (the decompression layer limit)."""
    try:
        doc = yaml.safe_load(test_yaml.read_text()) or {}
    except (OSError, yaml.YAMLError):
        return []
    out = []
    for arg in doc.get("args", []) or []:
        words = shlex.split(str(arg))
        for i, w in enumerate(words):
            if w == "--set" and i + 1 < len(words) and "decompress-layer-limit" in words[i + 1]:
                out.append(words[i + 1])
    return out


def load_cases(root: Path = DEFAULT_ROOT, names: list[str] | None = None) -> list[Case]:
    manifest = json.loads((root / "manifest.json").read_text())
    cases = []
    for t in manifest["tests"]:
        if names and t["name"] not in names:
            continue
        d = root / t["name"]
        cases.append(
            Case(
                name=t["name"],
                root=d,
                rules=root / t["rules_file"],
                pcap=root / t["pcaps"][0],
                expected=json.loads((d / "expected.json").read_text()),
                engine_options=t["engine_options"],
                sets=_extra_sets(d / "test.yaml"),
            )
        )
    return cases


def _matches_where(rec: dict[str, Any], where: dict[str, Any]) -> bool:
    for k, v in where.items():
        got = rec.get("alert", {}).get("action") if k == "action" else rec.get(k)
        if got != v:
            return False
    return True


def check(expected: list[dict[str, Any]], alerts: list[dict[str, Any]]) -> list[str]:
    """Problems found comparing EVE alerts with expected.json entries ([] means the case passes)."""
    problems = []
    for exp in expected:
        sid, want = exp.get("sid"), exp["count"]
        pool = [a for a in alerts if sid is None or a["alert"]["signature_id"] == sid]
        if exp.get("where"):
            pool = [a for a in pool if _matches_where(a, exp["where"])]
        got = len(pool)
        label = f"sid {sid}" if sid is not None else "all alerts"
        if exp.get("where"):
            label += f" where {exp['where']}"
        if exp.get("lossy"):
            if got < want:
                problems.append(f"{label}: expected at least {want}, got {got}")
        elif got != want:
            problems.append(f"{label}: expected {want}, got {got}")
    return problems


def run_case(case: Case) -> CaseResult:
    from agent.cli import build_parser
    from agent.offline.replay import OfflineOptions, offline_config, run_pcap

    t0 = time.monotonic()
    args = build_parser().parse_args(case.argv)
    buf = io.StringIO()
    try:
        cfg = offline_config(None, args.set or [], rule_files=args.rules or [])
        opts = OfflineOptions(pcap=Path(args.r), simulate_ips=args.simulate_ips, checksum_mode=args.k, sets=args.set or [])
        run_pcap(opts, cfg, out=buf)
    except Exception as exc:  # a crash is a failed case with its reason, not a crashed runner
        log.exception("case %s crashed", case.name)
        return CaseResult(case.name, False, [f"crashed: {type(exc).__name__}: {exc}"], {}, time.monotonic() - t0)
    alerts = [r for r in map(json.loads, buf.getvalue().splitlines()) if r.get("event_type") == "alert"]
    problems = check(case.expected, alerts)
    counts = collections.Counter(a["alert"]["signature_id"] for a in alerts)
    return CaseResult(case.name, not problems, problems, dict(counts), time.monotonic() - t0)


def run_suite(root: Path = DEFAULT_ROOT, names: list[str] | None = None) -> list[CaseResult]:
    return [run_case(c) for c in load_cases(root, names)]


def summary(results: list[CaseResult]) -> dict[str, Any]:
    passed = sum(r.passed for r in results)
    return {"cases": len(results), "passed": passed, "rate": passed / len(results) if results else 0.0}


def main(args: argparse.Namespace) -> int:
    root = Path(args.root) if args.root else DEFAULT_ROOT
    if not getattr(args, "verbose", False):
        logging.getLogger().setLevel(logging.WARNING)  # per-case rule-load chatter hides the results
    results = run_suite(root, args.case or None)
    for r in results:
        state = "pass" if r.passed else "FAIL"
        why = "; ".join(r.reasons)
        print(f"{state}  {r.name:45s} {r.seconds:6.2f}s  {why}")
    s = summary(results)
    print(f"\n{s['passed']}/{s['cases']} cases passed ({s['rate']:.1%})")
    if args.json:
        Path(args.json).write_text(json.dumps({"summary": s, "results": [r.__dict__ for r in results]}, indent=1))
    return 0 if s["passed"] == s["cases"] or not args.strict else 1
