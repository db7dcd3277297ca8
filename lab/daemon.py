"""What the lab's private daemons (lab/clamd.py, lab/dovecot.py, lab/rspamd.py) share: each runs in
its own process group (``start_new_session=True``), is waited for until it answers, and is stopped
with its children."""
from __future__ import annotations

import os
import signal
import subprocess
import time
from typing import Callable


def wait_up(proc: subprocess.Popen, answers: Callable[[], bool], timeout: float, interval: float = 0.1) -> bool:
    """Ask ``answers`` every ``interval`` s until it says yes (True); False when the process exits
    first (``proc.poll()`` is then set) or ``timeout`` s pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        if answers():
            return True
        time.sleep(interval)
    return False


def stop_group(proc: subprocess.Popen | None, grace: float = 10.0) -> None:
    """SIGTERM the process group of ``proc``, SIGKILL it after ``grace`` s, and reap ``proc``."""
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        pass
