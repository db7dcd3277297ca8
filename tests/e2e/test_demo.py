"""The README's demo command: every step succeeds and nothing is left behind."""
from __future__ import annotations

import argparse
import subprocess

import pytest

from lab.demo import run_demo
from tests.shared_data import SharedData

pytestmark = pytest.mark.lab


def test_demo_runs_and_cleans_up(lab_prefix: str, shared_data: SharedData, capsys: pytest.CaptureFixture[str]):
    shared_data.path("data", "ut1", "phishing", "domains")  # the web filter step's real UT1 entry
    prefix = f"{lab_prefix}demo"
    assert run_demo(argparse.Namespace(prefix=prefix)) == 0
    out = capsys.readouterr().out
    assert "FAIL" not in out and "OK   IPS: path traversal" in out
    assert "OK   web filter: block page" in out  # the step ran: it is left out without the UT1 lists
    assert "VCR LOCAL Log4j JNDI lookup" in out  # the IPS alarm is shown as evidence
    assert "OK   sandbox: blocked at pc2's next download, alarm at the center" in out
    assert "OK   anti-spam: spam tagged at POP3" in out and "OK   anti-spam: a PC's spam refused at SMTP" in out
    left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert prefix not in left
