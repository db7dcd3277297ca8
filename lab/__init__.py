"""The development lab: never installed on the box.

The simulated office in network namespaces (``netns``), the real agent and center run inside it
(``agentrun``, ``center``, ``pgtemp``), the demo, the benchmarks and their report (the ``bench``
package: see lab/bench/__init__.py), the lab's DNS server and the suricata-verify runner.
It may import anything of ``agent``, ``filters`` and ``opscenter``; none of them may import it.
Run as ``python -m lab COMMAND`` from a checkout (the Makefile does).
"""

from __future__ import annotations

import os
from pathlib import Path

SHARED_ENV = "VCR_SHARED"


def shared_dir() -> Path:
    """The shared test data (suricata-verify, ET Open, UT1, abuse.ch feeds...): ``$VCR_SHARED`` when
    set, else ``shared`` beside the checkout, as in CI. Not checked for existence."""
    env = os.environ.get(SHARED_ENV, "").strip()
    return Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared"
