"""Fixtures for the end-to-end tests: one office lab per module, and the real agent in it."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from lab.netns import Lab
from lab.agentrun import LabAgent

LOOKUP_SERVER = Path(__file__).with_name("lookup_server.py")


@pytest.fixture(scope="module")
def office(lab_prefix: str, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest):
    # One lab per test module (modules may run in any order); the suffix keeps names unique.
    suffix = request.module.__name__.rsplit("_", 1)[-1][:3]
    lab = Lab(f"{lab_prefix}{suffix}", log_dir=tmp_path_factory.mktemp("lab"))
    lab.add_internet_host("ops", "198.51.100.80")
    with lab:
        lab.start_http_server("web", 80)
        for port in (23, 445, 3389, 8081, 8082, 8083):
            lab.start_tcp_listener("web", port)
        for port in (22, 445, 3389):
            lab.start_tcp_listener("pc1", port)
        lab.start_http_server("pc1", 80)
        lab.popen("ops", [sys.executable, str(LOOKUP_SERVER), "8000"], name="lookup")
        assert lab.wait_tcp("ops", "127.0.0.1", 8000, 10)
        yield lab


@pytest.fixture
def agent(office: Lab, tmp_path: Path, request: pytest.FixtureRequest):
    """A running agent; parametrize with indirect overrides (dict) to change its config."""
    overrides = getattr(request, "param", None) or {}
    a = LabAgent(office, tmp_path, overrides=overrides)
    with a.running():
        yield a


