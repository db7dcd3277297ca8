"""``python -m lab``: the development lab's command line (demo, lab up/down, benchmarks, peer suites).

Not installed on the box: these commands run from a checkout, through the Makefile (``make demo``,
``make bench``, ``make bench-filter``) or by hand as ``.venv/bin/python -m lab COMMAND``.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import Callable

from filters.climain import run_command


def cmd_lab(args: argparse.Namespace) -> int:
    from lab.demo import lab_down, lab_up, run_demo

    actions: dict[str, Callable[[argparse.Namespace], int]] = {"up": lab_up, "down": lab_down, "demo": run_demo}
    return actions[args.command](args)


def cmd_bench(args: argparse.Namespace) -> int:
    if args.suite != "dataplane":
        args.out = args.out or "docs/benchmarks.md"  # (the dataplane suite checks --out against a partial run)
    if args.suite == "office":
        from lab.bench.office import run_office_bench

        return run_office_bench(args)
    args.seconds = 5.0 if args.seconds is None else args.seconds
    if args.suite == "filter":
        from lab.bench.filter import run_filter_bench

        args.prefix = args.prefix or "vbf"
        return run_filter_bench(args)
    from lab.bench.dataplane import run_bench

    args.prefix = args.prefix or "vb"
    return run_bench(args)


def _run(module: str, name: str) -> Callable[[argparse.Namespace], int]:
    """The handler of a command that ``module.name(args)`` runs, imported when the command runs."""
    def run(args: argparse.Namespace) -> int:
        return getattr(importlib.import_module(module), name)(args)

    return run


# Commands whose module declares its own options (``add_arguments(parser)``): name, help, module, handler.
DELEGATED = (
    ("soak", "the soak: office traffic for --minutes while the agent is reloaded, updated, cut off from its center "
             "and has workers killed (make soak), written to docs/benchmarks.md", "lab.bench.soak", "main"),
    ("av-bench", "web antivirus: 20 MB download through clamd against the bare bridge and clamd's INSTREAM rate; "
                 "clamd memory (make bench-av)", "lab.bench.av", "run_av_bench"),
    ("center-bench", "operations-center scale benchmark: thousands of simulated boxes over HTTPS", "lab.bench.center",
     "run_bench"),
    ("sandbox-bench", "sandbox: verdict latency at the center and files analysed a minute", "lab.bench.sandbox",
     "run_bench"),
    ("spam-eval", "anti-spam: rspamd trained and tuned on the SpamAssassin sample, held-out precision/recall/F1 "
                  "against out of the box, memory and latency", "lab.spameval", "main"),
    ("report-bench", "monthly report generation time, extrapolated to 5,000 contracts", "lab.bench.reports",
     "run_bench"),
)


def cmd_screenshots(args: argparse.Namespace) -> int:
    from pathlib import Path

    from lab.panel_demo import browser_missing, take_screenshots

    missing = browser_missing()
    if missing:
        print(f"screenshots: {missing}", file=sys.stderr)
        return 1
    made = take_screenshots(Path(args.out), only=args.only or None)
    print(f"{len(made)} screenshots in {args.out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m lab", description=__doc__.splitlines()[0])
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="command", required=True)

    for action, text in (("demo", "the guided demo of the simulated office (make demo)"),
                         ("up", "bring the simulated office up and leave it running"),
                         ("down", "remove the simulated office")):
        lab = sub.add_parser(action, help=text)
        lab.add_argument("--prefix", default="vcr")
        lab.set_defaults(fn=cmd_lab)

    bench = sub.add_parser("bench", help="benchmarks in the lab, written to docs/benchmarks.md")
    bench.add_argument("--runs", type=int, default=5)  # the bulk rate over veth swings by a quarter between runs: five give a steadier median
    bench.add_argument("--seconds", type=float, default=None, help="per measurement (default 5; office: 10 per step)")
    bench.add_argument("--out", default=None, help="the file whose generated section is written (default docs/benchmarks.md)")
    bench.add_argument("--prefix", default=None, help="lab prefix (default vb, vbf for --suite filter, vbo for office)")
    bench.add_argument("--suite", choices=["dataplane", "filter", "office"], default="dataplane",
                       help="dataplane: the data path against the bare bridge; filter: web filter and threat protection; "
                            "office: 50 users' web pages, mail, downloads and video with every engine on")
    bench.add_argument("--ladder", default=None, help="office: offered page rates, comma-separated (default 5..120)")
    bench.add_argument("--keep", action="store_true", help="office: keep the work dir (agent logs, eve.json, lab logs)")
    bench.add_argument("--modes", default=None, help="modes to run (bare always); office: among bare,agent-w2,agent-w1; "
                                                     "dataplane: among bare,brnf,kernel,fw,ips (then --out is required)")
    bench.add_argument("--scenarios", default=None,
                       help="dataplane: only these scenarios, among bulk,connections,latency,udp,floor,memory,offline "
                            "(floor: the paired fw-against-kernel-floor runs; then --out is required)")
    bench.set_defaults(fn=cmd_bench)

    v = sub.add_parser("verify", help="run the suricata-verify peer suite through the agent's pcap mode")
    v.add_argument("--root", help="suricata-verify folder (default: $VCR_SHARED/peer/suricata-verify, else ../shared/peer/suricata-verify)")
    v.add_argument("--case", action="append", help="only this case (repeatable)")
    v.add_argument("--json", help="write the results as JSON here")
    v.add_argument("--strict", action="store_true", help="exit 1 unless every case passes")
    v.set_defaults(fn=_run("lab.verify", "main"))

    for name, text, module, handler in DELEGATED:
        d = sub.add_parser(name, help=text)
        importlib.import_module(module).add_arguments(d)
        d.set_defaults(fn=_run(module, handler))

    ss = sub.add_parser("screenshots-report", help="docs/screenshots: the monthly report (PDF pages, HTML) and "
                                                   "the block pages (desktop and phone), with headless Chromium")
    ss.add_argument("--out", default="docs/screenshots", help="folder for the PNGs")
    ss.add_argument("--chromium", default="chromium", help="the Chromium binary")
    ss.set_defaults(fn=_run("lab.screenshots_report", "run"))

    shots = sub.add_parser("screenshots", help="screenshots of every control panel and console page (ja/en, "
                                               "desktop/phone) into docs/screenshots/")
    shots.add_argument("--out", default="docs/screenshots")
    shots.add_argument("--only", nargs="*", metavar="APP-PAGE",
                       help="just these pages (e.g. customer-sheet console-confirmations); the others stay")
    shots.set_defaults(fn=cmd_screenshots)
    return p


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser().parse_args(argv))
