"""A block of measurements in the lab: the UTM as a bare bridge or with the agent running, the order of
the modes over the runs, each scenario's samples or errors, and what other processes on the machine
used while a block ran.

Shared by the lab benches (lab/bench/dataplane.py, lab/bench/filter.py): each runs every mode once
per run, in ``rotated`` order, each mode as one block.
"""
from __future__ import annotations

import contextlib
import logging
import os
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from lab.bench.host import agent_memory, foreign_cpu, foreign_use

log = logging.getLogger(__name__)
Samples = dict[str, dict[str, list[float]]]  # mode -> metric key -> one value per run
Errors = dict[str, dict[str, list[str]]]  # mode -> metric key -> what went wrong, per run


def rotated(modes: Sequence[str], run: int) -> list[str]:
    """The order of the modes in run ``run``: rotated by one each run (each mode leads once in len(modes) runs)."""
    k = run % len(modes) if modes else 0
    return [*modes[k:], *modes[:k]]


@contextlib.contextmanager
def block_noise(run: int, runs: int, mode: str, loads: list[str]) -> Iterator[None]:
    """Say which block starts (run, mode, load average); when it ends, add to ``loads`` the share of all CPU
    time the processes outside the bench used during it, with the biggest of them."""
    load = os.getloadavg()[0]
    print(f"run {run + 1}/{runs}: {mode} (load average {load:.2f})", flush=True)
    others, t0 = foreign_cpu(), time.monotonic()
    try:
        yield
    finally:
        share, top = foreign_use(others, foreign_cpu(), (time.monotonic() - t0) * (os.cpu_count() or 1))
        shown = ", ".join(f"{name} {sec:.1f} s" for sec, name in top)
        loads.append(f"run {run + 1} {mode}: load {load:.2f}, other processes {share:.0%}"
                     + (f" ({shown})" if shown else ""))


@contextlib.contextmanager
def bare_bridge(lab: Any, netfilter: bool = False) -> Iterator[None]:
    """The UTM as a plain bridge (``Lab.bridge_bare``; br_netfilter on with no rule when ``netfilter``)."""
    lab.bridge_bare(netfilter=netfilter)
    try:
        yield
    finally:
        lab.unbridge_bare()


@contextlib.contextmanager
def running_agent(lab: Any, workdir: Path, overrides: dict[str, Any], timeout: float) -> Iterator[tuple[Any, str]]:
    """The agent on the UTM (``vcr-agent bridge up`` + ``run``, lab.agentrun.LabAgent with the shipped config
    and ``overrides``): (the agent, how long it took to get ready and its RSS/PSS then). Afterwards the agent
    is killed, the bridge taken down and the UTM left with two unbridged ports."""
    from lab.agentrun import LabAgent

    agent = LabAgent(lab, workdir, overrides=overrides)
    try:
        agent.bridge_up()
        t0 = time.monotonic()
        agent.start(timeout=timeout)
        ready = time.monotonic() - t0
        assert agent.proc is not None
        rss, pss = agent_memory(agent.proc.pid)
        yield agent, f"ready in {ready:.1f} s, RSS {rss:.0f} MiB / PSS {pss:.0f} MiB"
    finally:
        agent.kill()
        try:
            agent.bridge_down()
        finally:
            # bridge down undoes what its state file says; the file is per machine, not per
            # namespace, so make sure the UTM is back to two unbridged ports whatever it said
            lab.unbridge_bare()


@contextlib.contextmanager
def agent_mode(bench: Any, workdir: Path, overrides: dict[str, Any], timeout: float, starts: list[str]) -> Iterator[None]:
    """A lab bench's block with the agent (``running_agent``): its start goes to ``starts``, ``bench.agent``
    is the agent while the block lasts, and the block starts once ``bench._wait_path()`` found the path
    through the UTM."""
    with running_agent(bench.lab, workdir, overrides, timeout) as (agent, started):
        starts.append(started)
        bench.agent = agent
        try:
            bench._wait_path()
            yield
        finally:
            bench.agent = None


def record_error(errors: Errors, mode: str, keys: Sequence[str], message: str) -> None:
    """``message`` against each metric of ``keys`` in ``mode`` (the report lists it under Errors)."""
    for key in keys:
        errors[mode].setdefault(key, []).append(message)


def measure(name: str, fn: Callable[[], dict[str, float]], keys: Sequence[str], mode: str, run: int,
            samples: Samples, errors: Errors, whole_from: float = 100.0) -> dict[str, float] | None:
    """One scenario of a block: its values added to ``samples`` and printed (without decimals from
    ``whole_from`` up), or, when it fails, the error recorded against its ``keys``; the values or None.
    One failed scenario does not stop the block."""
    try:
        values = fn()
    except Exception as exc:  # noqa: BLE001 - one failed scenario must not stop the bench
        log.exception("%s (%s, run %d) failed", name, mode, run + 1)
        record_error(errors, mode, keys, f"{mode}, run {run + 1}: {exc}")
        print(f"  {mode:5s} {name}: ERROR {exc}", flush=True)
        return None
    for key, value in values.items():
        samples[mode].setdefault(key, []).append(value)
    shown = ", ".join(f"{k}={v:,.3f}" if v < whole_from else f"{k}={v:,.0f}" for k, v in values.items())
    print(f"  {mode:5s} {name}: {shown}", flush=True)
    return values
