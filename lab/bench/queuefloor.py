"""The queue floor of new connections (issue 15): what queueing a connection's packets to Python
costs by itself, with workers that inspect nothing.

The new-connection row of ``make bench`` compares the agent (IPS with ET Open) with the bare
bridge. This measures the same load (lab/bench/dataplane.py ``Bench.connections``: HTTP
``Connection: close`` connections from pc1 and pc2) through the bridge with br_netfilter and
conntrack, the packets the agent's kernel rules queue for the IPS (SYN, data, FIN; empty ACKs and
the SYN+ACK stay in the kernel, agent/dataplane/ruleset.py) hashed by HMARK to ``--workers``
NFQUEUE workers that accept every packet with the agent's queue settings (GSO packets whole,
fail-open: agent/dataplane/nfq.py) and do nothing else. The ratio to the bare bridge is the
ceiling of the design's per-packet hand-off to Python on this machine; the agent's gap to it is
its inspection's CPU per connection.

    python -m lab.bench.queuefloor --seconds 5 --runs 3
"""
from __future__ import annotations

import argparse
import select
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

from agent.dataplane.ruleset import EMPTY_ACK_U32, DataplaneSpec, _queue_lines

CHAIN = "VCR-QF"
MODE = "queue floor"


def ruleset(workers: int) -> str:
    """iptables-restore text: empty ACKs and SYN+ACKs accepted, everything else to a worker's queue
    by the agent's own queue lines (one queue per worker, fail-open)."""
    spec = DataplaneSpec("br0", "lan0", "wan0", queue_base=0, workers=workers, fail_open=True, nflog_group=0,
                         stream_depth=0)
    lines = ["*filter", f":{CHAIN} - [0:0]", f"-A FORWARD -i br0 -o br0 -j {CHAIN}",
             f"-A {CHAIN} -p tcp --tcp-flags SYN,ACK,FIN,RST ACK {EMPTY_ACK_U32[4]} -j ACCEPT",
             f"-A {CHAIN} -p tcp --tcp-flags SYN,ACK,FIN,RST SYN,ACK {EMPTY_ACK_U32[4]} -j ACCEPT",
             *(line.replace("-A VCR-FWD ", f"-A {CHAIN} ", 1) for line in _queue_lines(spec))]
    return "\n".join([*lines, "COMMIT", ""])


def worker(queue: int) -> None:
    """Accept every packet of ``queue`` (runs in the UTM's namespace until killed)."""
    from netfilterqueue import NetfilterQueue

    from agent.dataplane.nfq import QueueSocket

    nfq = NetfilterQueue()
    nfq.bind(queue, lambda pkt: pkt.accept(), max_len=4096)
    qsock = QueueSocket(nfq.get_fd(), queue)
    qsock.configure(gso=True, fail_open=True)
    while True:
        select.select([nfq.get_fd()], [], [])
        nfq.run_socket(qsock)


def measure(seconds: float, runs: int, workers: int) -> dict[str, list[float]]:
    from lab.bench.blocks import bare_bridge
    from lab.bench.dataplane import Bench
    from lab.bench.host import helper_env
    from lab.netns import Lab

    workdir = Path(tempfile.mkdtemp(prefix="vcr-queuefloor-"))
    res: dict[str, list[float]] = {"bare": [], MODE: [], "per connection": []}
    with Lab("vqf", log_dir=workdir / "lab") as lab:
        bench = Bench(lab, 1, seconds, workdir, [])
        bench.conn_errors[MODE] = 0
        bench.start_servers()
        for run in range(runs):
            with bare_bridge(lab, netfilter=False):
                time.sleep(1)
                res["bare"].append(bench.connections("bare")["conn_rate"])
            lab.exec("utm", ["conntrack", "-F"])
            with bare_bridge(lab, netfilter=True):
                lab.exec("utm", ["iptables-restore", "--noflush", "-w"], input=ruleset(workers), check=True)
                procs = [lab.popen("utm", [sys.executable, "-m", "lab.bench.queuefloor", "--worker", str(i)],
                                   name=f"queuefloor-{i}", env=helper_env()) for i in range(workers)]
                try:
                    time.sleep(1.5)
                    before = sum(q.id_sequence for q in bench.nfqueue().values())
                    rate = bench.connections(MODE)["conn_rate"]
                    res[MODE].append(rate)
                    after = sum(q.id_sequence for q in bench.nfqueue().values())
                    res["per connection"].append((after - before) / max(rate * seconds, 1.0))
                finally:
                    for p in procs:
                        p.kill()
                    lab.exec("utm", ["iptables", "-w", "-D", "FORWARD", "-i", "br0", "-o", "br0", "-j", CHAIN])
                    lab.exec("utm", ["iptables", "-w", "-F", CHAIN])
                    lab.exec("utm", ["iptables", "-w", "-X", CHAIN])
            print(f"run {run + 1}: bare bridge {res['bare'][-1]:,.0f} conn/s, queue floor {res[MODE][-1]:,.0f} conn/s "
                  f"({res['per connection'][-1]:.1f} packets queued per connection)", flush=True)
    return res


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lab.bench.queuefloor", description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--worker", type=int, help=argparse.SUPPRESS)  # the worker process itself
    args = ap.parse_args(argv)
    if args.worker is not None:
        worker(args.worker)
        return 0
    res = measure(args.seconds, args.runs, args.workers)
    bare, floor = statistics.median(res["bare"]), statistics.median(res[MODE])
    print(f"medians: bare bridge {bare:,.0f} conn/s, queue floor ({args.workers} trivial workers) {floor:,.0f} conn/s: "
          f"{floor / bare:.2f}x; {statistics.median(res['per connection']):.1f} packets queued per connection")
    return 0


if __name__ == "__main__":
    sys.exit(main())
