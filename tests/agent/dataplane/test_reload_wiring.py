"""The daemon's bookkeeping of reloads and restarts (agent/dataplane/daemon.py), with real child
processes standing in for workers: a reload request is answered by the reload it became, a slow
reload still being built is waited for, a dead worker's back-off does not stop the main loop and
starts afresh after a stable run."""
from __future__ import annotations

import multiprocessing as mp
import threading
import time

import pytest

from agent.dataplane import daemon as D
from tests.agent.dataplane.bare import bare_daemon


_SLEEPERS: list[mp.process.BaseProcess] = []


def sleeper(seconds: float) -> mp.process.BaseProcess:
    p = mp.get_context("fork").Process(target=time.sleep, args=(seconds,), daemon=True)
    p.start()
    _SLEEPERS.append(p)
    return p


@pytest.fixture(autouse=True)
def _sleepers_stopped():
    """The stand-in workers of a test end with it."""
    yield
    while _SLEEPERS:
        p = _SLEEPERS.pop()
        p.kill()
        p.join(5)


def test_reload_and_wait_is_answered_by_its_own_reload() -> None:
    d = bare_daemon()
    d.procs = {0: sleeper(30), 1: sleeper(30)}
    d.gens.begin()  # generation 1 under way before the request (a SIGHUP)
    got: list[tuple[bool, str]] = []
    waiter = threading.Thread(target=lambda: got.append(d.reload_and_wait(10.0)))
    waiter.start()
    time.sleep(0.3)
    for i in (0, 1):  # the replies of generation 1
        d._handle(("ready", i, 1, 1000 + i))
        d._handle(("reloaded", i, {}, 1))
    time.sleep(0.3)
    assert got == []  # before: "2 workers reloaded" for a reload that was not this request's
    assert d.gens.begin() == 2
    for i in (0, 1):
        d._handle(("ready", i, 2, 2000 + i))
        d._handle(("reloaded", i, {}, 2))
    waiter.join(5)
    assert got and got[0][0] is True and "generation 2" in got[0][1]
    for p in d.procs.values():
        p.kill()


def test_a_reload_still_building_outlives_the_timeout() -> None:
    """reload_timeout is how long a reload may go without progress, not a limit on a slow build:
    a timeout would make remote configuration roll a good revision back."""
    d = bare_daemon()
    d.procs = {0: sleeper(30)}
    got: list[tuple[bool, str]] = []
    t0 = time.monotonic()
    waiter = threading.Thread(target=lambda: got.append(d.reload_and_wait(0.5)))
    waiter.start()
    time.sleep(0.2)
    gen = d.gens.begin()
    d.successors[0] = (gen, sleeper(30))  # alive: building its engines
    time.sleep(1.5)
    assert got == []  # still waiting, past the 0.5 s
    d._handle(("ready", 0, gen, d.successors[0][1].pid))
    waiter.join(5)
    assert got and got[0][0] is True and time.monotonic() - t0 > 1.5
    # a reload nobody works on (its successor died without a word) times out
    got.clear()
    waiter = threading.Thread(target=lambda: got.append(d.reload_and_wait(0.5)))
    waiter.start()
    time.sleep(0.2)
    gen = d.gens.begin()
    waiter.join(5)
    assert got and got[0][0] is False and "did not confirm" in got[0][1]
    for p in d.procs.values():
        p.kill()


def test_a_dead_worker_does_not_stall_the_main_loop_and_its_backoff_resets(monkeypatch) -> None:
    d = bare_daemon()
    spawned: list[int] = []
    monkeypatch.setattr(d, "_spawn", lambda index, successor=False: (spawned.append(index), d.procs.__setitem__(index, sleeper(30)),
                                                                      d.spawned_at.__setitem__(index, time.monotonic())))
    dead = sleeper(0)
    dead.join()
    d.procs = {0: dead}
    d.spawned_at = {0: time.monotonic()}
    d.backoff = {0: 4}  # it crashed 4 times in a row just now: the longest back-off (10 s)
    t = time.monotonic()
    d._check_workers()
    assert time.monotonic() - t < 0.5  # before: slept the back-off in the daemon's main loop
    assert spawned == [] and d.restart_due[0] - time.monotonic() > 9
    assert d.restarts[0] == 1
    # a worker that had run STABLE_RUN seconds before it died starts from the shortest back-off
    d.restart_due.clear()
    d.backoff = {0: 4}
    d.spawned_at = {0: time.monotonic() - D.STABLE_RUN - 1}
    d._check_workers()
    due = d.restart_due[0] - time.monotonic()
    assert due <= D.RESTART_BACKOFF[0] + 0.05 and d.backoff[0] == 1
    time.sleep(D.RESTART_BACKOFF[0] + 0.1)
    d._check_workers()
    assert spawned == [0] and d.procs[0].is_alive() and not d.restart_due
    d.procs[0].kill()
