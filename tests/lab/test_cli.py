"""lab/cli.py: the commands of ``python -m lab``."""
from __future__ import annotations

import pytest


def test_bench_parser_has_a_suite_option():
    from lab.cli import build_parser

    args = build_parser().parse_args(["bench"])
    assert args.suite == "dataplane" and args.prefix is None
    args = build_parser().parse_args(["bench", "--suite", "filter", "--runs", "1"])
    assert args.suite == "filter" and args.runs == 1
    with pytest.raises(SystemExit):
        build_parser().parse_args(["bench", "--suite", "nope"])


def test_center_bench_arguments() -> None:
    from lab.cli import build_parser

    args = build_parser().parse_args(["center-bench", "--db", "postgres", "--devices", "10"])
    assert (args.db, args.devices, args.duration) == ("postgres", 10, 60.0)


def test_report_commands_arguments() -> None:
    from lab.cli import build_parser

    args = build_parser().parse_args(["report-bench", "--contracts", "5", "--workers", "1"])
    assert (args.contracts, args.workers, args.alarms_per_day, args.out) == (5, 1, 100, "docs/benchmarks.md")
    args = build_parser().parse_args(["screenshots-report"])
    assert (args.out, args.chromium) == ("docs/screenshots", "chromium")
