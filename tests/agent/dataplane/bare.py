"""A Daemon with only its bookkeeping (agent/dataplane/daemon.py): no bridge, no engines, no
workers, for the tests of its reload and restart wiring."""
from __future__ import annotations

import threading

from agent.dataplane.daemon import Daemon, ReloadTracker


def bare_daemon() -> Daemon:
    d = Daemon.__new__(Daemon)
    d.procs = {}
    d.reloads = {"requested": 0, "workers_reloaded": 0, "failed": 0, "last_error": ""}
    d.reload_requested = threading.Event()
    d.stopping = threading.Event()
    d.exit_code = 0
    d.gens = ReloadTracker()
    d._waiters = []
    d.successors = {}
    d.retiring = []
    d.spawned_at = {}
    d.restart_due = {}
    d.forking = {}
    d.subreaper = False
    d.restarts = {}
    d.backoff = {}
    d.ready = set()
    d.updates = None
    d.needs, d.worker_needs = (True, True), {}  # what the kernel keeps from the workers (_sync_needs)
    return d
