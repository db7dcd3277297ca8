"""Shared pytest fixtures: the privilege check and unique names for network-namespace (lab) tests."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
from hypothesis import settings

# Property and fuzz tests: CI runs a fixed sequence of examples (derandomized), so a landing never
# depends on luck; `HYPOTHESIS_PROFILE=explore` draws fresh random examples (and more of them) to
# hunt for new failures, e.g. `HYPOTHESIS_PROFILE=explore make test`. A failure found that way
# becomes an @example in its test.
settings.register_profile("ci", derandomize=True)
settings.register_profile("explore", derandomize=False, max_examples=5000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def netns_unavailable_reason() -> str | None:
    """Why lab tests cannot run here, or None when root can create network namespaces."""
    if os.geteuid() != 0:
        return f"running as uid {os.geteuid()}, not root"
    for tool in ("ip", "iptables", "ip6tables"):
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed"
    probe = f"nsprobe{os.getpid()}"
    added = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True, check=False)
    if added.returncode != 0:
        return f"`ip netns add` failed: {added.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True, check=False)
    return None


@pytest.fixture(scope="session")
def netns_capable() -> None:
    """Skip, loudly, when this machine cannot run namespace tests."""
    reason = netns_unavailable_reason()
    if reason is not None:
        pytest.skip(f"LAB TEST SKIPPED: needs root and network namespaces: {reason}")


@pytest.fixture(scope="session")
def lab_prefix(netns_capable: None) -> str:
    """A namespace-name prefix unique to this test run (append letters for more labs)."""
    return f"t{os.getpid() % 10000}"
