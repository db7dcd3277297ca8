"""The kernel prefilter, a worker's half: prefilter ids, their chains, and the marks that select them.

A UDP or ICMP flow whose every possible rule has a fast pattern (``Release.prefilter``, from
``Engine.kernel_filter``) gets an id: the worker sets it in the packet mark of the packet it
passes and repeats the packet; VCR-FWD saves it in the connection mark and accepts the packet
(agent/dataplane/ruleset.py). From then on the connection's packets go through VCR-PF to the
worker's chain (``VCR-PF-W<i>``) and on to the id's (``VCR-PF-<id>``): a packet holding one of
the patterns of its conntrack direction (xt_string, Boyer-Moore over the whole IP packet, a
superset of the payload the rules read) returns and is queued; any other is accepted there.

One id per distinct pair of pattern sets, given by this worker from its own block (``pf_ids``:
ids of live workers never collide); its chains are installed the first time, by a thread of
their own (``iptables-restore --noflush``, both families), and until then the flow stays in
Python. A worker chain ends with a line that clears the id bits of a connection whose id it does
not hold any more, so that connection's packets are queued again.

A new worker process for a queue (start, reload, a crash) starts with its chain cleared to that
last line: a connection marked by its predecessor is queued again on its next packet. It gives no
id before every conntrack entry that could still carry one of its predecessor's (a UDP or ICMP
entry idle for its conntrack timeout is gone) has either passed a packet (cleared) or expired:
an id is never read against patterns it was not given for.
"""
from __future__ import annotations

import logging
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

from agent.dataplane.ruleset import PF_MASK, PF_NONE, PF_SHIFT, pf_id_chain, pf_ids, pf_worker_chain
from filters.engine import MAX_KERNEL_PATTERN, KernelFilter

log = logging.getLogger(__name__)

# The conntrack timeouts an entry of a UDP or ICMP connection can live idle (the longest of them
# bounds how long a predecessor's id can sit on an entry that passes no packet); the default when
# they cannot be read is the kernel's longest (udp stream: 120 s; 180 s in newer kernels).
CT_TIMEOUTS = ("nf_conntrack_udp_timeout_stream", "nf_conntrack_udp_timeout", "nf_conntrack_icmp_timeout",
               "nf_conntrack_icmpv6_timeout")
DEFAULT_CT_TIMEOUT = 180.0
RESTORE = {4: "iptables-restore", 6: "ip6tables-restore"}
LIST = {4: "iptables", 6: "ip6tables"}

Runner = Callable[[list[str], str | None], int]  # argv, stdin -> exit status


def _run(argv: list[str], stdin: str | None = None) -> int:
    try:
        return subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=30).returncode
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("%s failed: %s", argv[0], exc)
        return -1


def _listing(argv: list[str]) -> str:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def ct_idle_limit(proc: Path = Path("/proc/sys/net/netfilter")) -> float:
    """How long a UDP or ICMP conntrack entry can live without a packet."""
    got = []
    for name in CT_TIMEOUTS:
        try:
            got.append(float((proc / name).read_text().split()[0]))
        except (OSError, ValueError, IndexError):
            pass
    return max(got) if got else DEFAULT_CT_TIMEOUT


def pattern_match(pattern: bytes, nocase: bool, itype: int = -1, family: int = 4) -> str:
    """An xt_string match for ``pattern`` (as hex, so any byte goes; cut to xt_string's length),
    in an ICMP packet of type ``itype`` when it is not -1."""
    icmp = "" if itype < 0 else (f"-p icmp --icmp-type {itype} " if family == 4 else
                                 f"-p ipv6-icmp --icmpv6-type {itype} ")
    return f'{icmp}-m string --algo bm --hex-string "|{pattern[:MAX_KERNEL_PATTERN].hex()}|"' + (" --icase" if nocase else "")


def id_chains(pf_id: int) -> tuple[str, str]:
    """The id's chains: its original direction's patterns, and its reply direction's."""
    return pf_id_chain(pf_id), pf_id_chain(pf_id) + "R"


def id_chain_lines(pf_id: int, kf: KernelFilter, family: int = 4) -> list[str]:
    """The id's chains: a packet holding a pattern of its conntrack direction returns (queued),
    any other is accepted. A packet of the reply direction goes on to the second chain: each
    packet meets its own direction's patterns only (every string match costs a search)."""
    orig, reply = id_chains(pf_id)
    lines = [f"-A {orig} -m conntrack --ctdir REPLY -g {reply}"]
    for chain, pats in ((orig, kf[0]), (reply, kf[1])):
        lines += [f"-A {chain} {pattern_match(pattern, nocase, itype, family)} -j RETURN"
                  for pattern, nocase, itype in sorted(pats)]
        lines.append(f"-A {chain} -j ACCEPT")
    return lines


def worker_chain_lines(index: int, ids: list[int]) -> list[str]:
    """The worker's chain: a goto per installed id, then the bits of any other id cleared."""
    chain = pf_worker_chain(index)
    lines = [f"-A {chain} -m connmark --mark 0x{i << PF_SHIFT:x}/0x{PF_MASK:x} -g {pf_id_chain(i)}" for i in ids]
    lines.append(f"-A {chain} -j CONNMARK --set-xmark 0x0/0x{PF_MASK:x}")
    return lines


class Prefilters:
    """One worker's prefilter ids and chains. ``mark`` is called on the packet thread; installs
    run on a thread of their own (the packet thread never waits for iptables)."""

    def __init__(self, index: int, workers: int, runner: Runner = _run, idle_limit: float | None = None,
                 families: tuple[int, ...] = (4, 6), lister: Callable[[list[str]], str] = _listing) -> None:
        self.index = index
        self.free = pf_ids(index, workers)
        self.ids: dict[KernelFilter, int] = {}
        self.filters: dict[int, KernelFilter] = {}
        self.ready: set[int] = set()
        self.runner = runner
        self.lister = lister
        self.families = families
        self.idle_limit = idle_limit
        self.not_before = 0.0  # no id is given before (monotonic): see the module's docstring
        self.counters = {"marked": 0, "stopped": 0, "exhausted": 0, "install_failures": 0, "paused": 0}
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None

    def start(self, now: float | None = None) -> None:
        """At the worker's start (queue bound): clear the worker's chain, and give no id until
        its predecessor's can have left every conntrack entry, if it had any."""
        now = time.monotonic() if now is None else now
        stale = any(" -g VCR-PF-" in self.lister([LIST[f], "-w", "-S", pf_worker_chain(self.index)])
                    for f in self.families)
        if self._install_worker_chain([]) and stale:
            limit = ct_idle_limit() if self.idle_limit is None else self.idle_limit
            self.not_before = now + limit + 5.0
            log.info("worker %d: kernel prefilter from %.0f s on (ids of a previous worker may be on connections)",
                     self.index, limit + 5.0)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"prefilter-w{self.index}")

    def close(self) -> None:
        """Wait for an install under way: a successor clears this chain once it has the queue."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def mark(self, kf: Any, now: float | None = None) -> int | None:
        """The packet-mark bits that give a passed packet's connection ``kf`` (Release.prefilter;
        NO_PREFILTER: none any more), or None when the packet is simply accepted (its id is not
        installed yet, no id is left, the prefilter is paused)."""
        if not kf:  # NO_PREFILTER
            self.counters["stopped"] += 1
            return PF_NONE << PF_SHIFT
        pf_id = self.ids.get(kf)
        if pf_id is None:
            if self._pool is None:
                return None
            if (time.monotonic() if now is None else now) < self.not_before:
                self.counters["paused"] += 1
                return None
            if not self.free:
                self.counters["exhausted"] += 1
                return None
            pf_id = self.free.pop(0)
            self.ids[kf], self.filters[pf_id] = pf_id, kf
            self._pool.submit(self._install, pf_id)
            return None
        if pf_id not in self.ready:
            return None
        self.counters["marked"] += 1
        return pf_id << PF_SHIFT

    def _restore(self, chains: tuple[str, ...], lines: Callable[[int], list[str]]) -> bool:
        """Declare (create or flush) ``chains`` and fill them with ``lines(family)``, in every
        family, with ``iptables-restore --noflush`` (the rest of the table stays as it is)."""
        head = ["*filter", *(f":{c} - [0:0]" for c in chains)]
        return all(self.runner([RESTORE[f], "--noflush", "-w"], "\n".join([*head, *lines(f), "COMMIT", ""])) == 0
                   for f in self.families)

    def _install(self, pf_id: int) -> None:
        with self._lock:
            ids = sorted(self.ready | {pf_id})
            if self._restore((*id_chains(pf_id), pf_worker_chain(self.index)),
                             lambda f: [*id_chain_lines(pf_id, self.filters[pf_id], f),
                                        *worker_chain_lines(self.index, ids)]):
                self.ready.add(pf_id)
                return
        self.counters["install_failures"] += 1
        log.error("worker %d: kernel prefilter %d not installed; its flows stay in Python", self.index, pf_id)

    def _install_worker_chain(self, ids: list[int]) -> bool:
        ok = self._restore((pf_worker_chain(self.index),), lambda f: worker_chain_lines(self.index, ids))
        if not ok:
            self.counters["install_failures"] += 1
            log.error("worker %d: kernel prefilter chain not cleared; no prefilter", self.index)
            self.free = []
        return ok

    def stats(self) -> dict[str, Any]:
        return {**self.counters, "ids_in_use": len(self.ids), "ids_installed": len(self.ready),
                "ids_free": len(self.free)}
