"""The README's demo command: every step succeeds and nothing is left behind."""
from __future__ import annotations

import argparse
import subprocess

import pytest

from agent.demo import run_demo

pytestmark = pytest.mark.lab


def test_demo_runs_and_cleans_up(lab_prefix: str, capsys: pytest.CaptureFixture[str]):
    prefix = f"{lab_prefix}demo"
    assert run_demo(argparse.Namespace(prefix=prefix)) == 0
    out = capsys.readouterr().out
    assert "FAIL" not in out and "OK   IPS: path traversal" in out
    assert "VCR LOCAL Log4j JNDI lookup" in out  # the IPS alarm is shown as evidence
    left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert prefix not in left
