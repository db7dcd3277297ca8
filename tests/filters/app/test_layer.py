"""The app layer as the workers get it."""
from __future__ import annotations

import subprocess
import sys


def test_parsers_are_loaded_before_the_workers_fork() -> None:
    """The daemon builds its engines and then forks one worker per queue. A parser module first
    imported in a worker costs that worker tens of milliseconds (more without a bytecode cache) in
    the middle of its first HTTP or DNS flow, holding that flow's packet and all queued behind it."""
    code = (
        "import sys, agent.dataplane.daemon\n"
        "mods = ('filters.app.http', 'filters.app.http.parser', 'filters.app.http2', 'filters.app.http2.parser',\n"
        "        'filters.app.dns', 'filters.app.tls', 'filters.app.smtp')\n"
        "print(' '.join(m for m in mods if m not in sys.modules))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert res.stdout.strip() == "", f"imported only after the fork, in each worker: {res.stdout.strip()}"
