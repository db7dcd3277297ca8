"""One NFQUEUE worker process: binds a queue, runs the pipeline, gives verdicts and connmark offloads."""
from __future__ import annotations

import gc
import logging
import os
import queue as _queue
import select
import signal
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable

from agent.dataplane.bridge import port_sides
from agent.config import AgentConfig
from agent.engines import build_engines
from agent.dataplane.inject import Injector
from agent.dataplane.nfq import QueueSocket, packet_connection
from agent.dataplane.performers import SLOW_KINDS, perform
from agent.dataplane.prefilter import Prefilters
from agent.dataplane.ruleset import (MARK_ACCEPT, MARK_CT_EST, MARK_CT_REPLY, MARK_DROP, MARK_HS, MARK_MASK, MARK_REJECT,
                                     PF_MASK, bulk_queue_num)
from filters import registry
from filters.app.layer import AppLayer, AppSettings
from filters.defrag import DefragSettings, Defragmenter
from filters.engine import Action, Engine
from filters.flow import FlowTable
from filters.packet import Side, parse_ip
from filters.pipeline import Outcome, Pipeline, PipelinePolicy, Release

log = logging.getLogger(__name__)

STATS_EVERY = 2.0
# The interpreter's switch interval in a worker: the packet thread is busy in Python, and an I/O
# thread (a clamd scan, a lookup) waits up to this long for the interpreter at each return from a
# system call. Measured (a pool thread scanning 3 KB files on the private clamd beside a thread busy
# in Python): median 22 ms, p95 48 ms at Python's default 5 ms; 4.8 ms, 8.6 ms at 1 ms (clamd's own
# scan: 0.4 ms).
SWITCH_INTERVAL = 0.001


def pipeline_from_config(
    cfg: AgentConfig,
    emit: Callable[[dict[str, Any]], None],
    *,
    ips: bool = True,
    engines: list[Engine] | None = None,
    kernel_offload: bool = False,
) -> Pipeline:
    """The pipeline for ``cfg``; ``engines`` prepared ahead (e.g. before forking workers) are reused."""
    dp = cfg.dataplane
    fl = dp.flows
    flows = FlowTable(
        max_flows=fl.max_flows,
        stream_depth=fl.stream_depth,
        max_pending_bytes=fl.max_pending_bytes,
        timeouts=dict(fl.timeouts) or None,
        midstream=fl.midstream,
        memcap=fl.memcap,
        memcap_policy=fl.memcap_policy,
    )
    policy = PipelinePolicy(
        on_engine_error=Action.DROP if dp.on_engine_error == "drop" else Action.NONE,
        on_malformed=Action.DROP if dp.on_malformed == "drop" else Action.NONE,
        hold_max_packets=dp.hold.max_packets_per_flow,
        hold_max_bytes=dp.hold.max_bytes,
        hold_overflow=Action.DROP if dp.hold.overflow == "drop" else Action.PASS,
        ips=ips,
        kernel_offload=kernel_offload,
        defrag_timeout=Action.DROP if dp.defrag.timeout_action == "drop" else Action.PASS,
    )
    df = dp.defrag
    defrag = Defragmenter(DefragSettings(policy=df.policy, timeout=df.timeout, max_trackers=df.max_trackers,
                                         max_frags=df.max_frags, memcap=df.memcap))
    http = cfg.app_layer.http
    if engines is None:
        engines = build_engines(cfg)
    app = AppLayer(
        AppSettings(
            http_request_body_limit=http.request_body_limit,
            http_response_body_limit=http.response_body_limit,
            http_decompress_layers=http.decompress_layers,
            file_depth=registry.file_depth(engines),  # the file engines' own limits (av max_size, sandbox)
        )
    )
    return Pipeline(engines, flows, policy, emit, app, defrag)


@dataclass
class WorkerSpec:
    index: int
    queue_num: int
    config_path: str = ""
    generation: int = 0  # the daemon's configuration generation this worker's engines were built for
    successor: bool = False  # built for a reload: takes the queue over from the running worker


BIND_RETRY = 0.002  # a successor's bind attempts while the worker it replaces still holds the queue
MAX_FORK_SIGNALS = 24  # SIGRTMIN + i asks a worker to fork a replacement for queue index i
# One round of the worker's loop over its queues (``Worker._run_queues``): at most this many packets
# of the first queue, then of the bulk queue. Under overload the bulk queue keeps a fifth of the
# worker; otherwise both queues are emptied each round, the first one first.
FIRST_QUOTA = 64
BULK_QUOTA = 16
BULK_CONNS_KEPT = 4096
HANDOVER_SECONDS = 1.0  # at most this long, a stopping worker serves what keeps coming (``_handover``)


def fork_signal(index: int) -> int:
    """The signal that asks a running worker to fork a worker for queue ``index`` (its own died)."""
    return signal.SIGRTMIN + index


def queue_settings(qsocks: list[QueueSocket]) -> str:
    """status.json's ``workers.N.queue_settings``: the kernel's answers for all of a worker's queues."""
    refused = [q for q in qsocks if q.answer]
    if refused:
        return "; ".join(f"refused on queue {q.queue_num}: {os.strerror(q.answer or 0)}" for q in refused)
    return "no answer" if any(q.answer is None for q in qsocks) else "taken"


class Worker:
    """Runs in its own process. Talks to the parent only through ``out`` (a multiprocessing queue)."""

    def __init__(self, cfg: AgentConfig, spec: WorkerSpec, out: Any, engines: list[Engine] | None = None) -> None:
        self.cfg = cfg
        self.spec = spec
        self.out = out
        self.sides = port_sides(cfg)
        self.pipeline = pipeline_from_config(cfg, self._emit, engines=engines, kernel_offload=True)
        self.injector = Injector()
        self.io_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix=f"io-w{spec.index}")
        # I/O that may wait minutes (a sandbox verdict) has its own threads: scans and lookups never queue behind it
        self.slow_pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix=f"io-slow-w{spec.index}")
        self.io_done: _queue.SimpleQueue[tuple[int, Any, str | None]] = _queue.SimpleQueue()
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)
        self.running = True
        self.fork_for: list[int] = []  # queue indexes whose worker died: fork a copy of this one for them
        self._nfq_fds: list[int] = []
        self.callback_errors = 0
        self.verdicts: dict[str, int] = {}
        self.large_packets = 0  # packets over 1500 bytes: GSO packets queued whole (agent/dataplane/nfq.py)
        # The first queue (a connection's first bytes) and the bulk queue (its later bytes: served
        # only while the first is empty; agent/dataplane/ruleset.py ``_queue_lines``)
        self.nfq: Any = None
        self.qsock: QueueSocket | None = None
        self.bulk_nfq: Any = None
        self.bulk_qsock: QueueSocket | None = None
        self._first_left = FIRST_QUOTA  # first-queue packets the current round may still serve
        # connections seen on the bulk queue (the latest BULK_CONNS_KEPT): their first bulk packet
        # waited for the whole first queue (``_before_bulk``), their later ones need not
        self._bulk_conns: dict[tuple, None] = {}
        self.bulk_connections = 0  # bulk packets that waited for the whole first queue (first of their connection)
        self.busy_poll = cfg.dataplane.busy_poll_us / 1e6
        self.prefilters = self._prefilters()

    def _prefilters(self) -> Prefilters | None:
        """The kernel prefilter's ids and chains, when an engine gives prefilters (the IPS)."""
        if not self.pipeline.gives_prefilters:
            return None
        return Prefilters(self.spec.index, self.cfg.dataplane.worker_count())

    def _emit(self, rec: dict[str, Any]) -> None:
        self.out.put(("eve", rec))

    # -- verdicts --------------------------------------------------------------------------
    def _apply(self, rel: Release) -> None:
        nfpkt = rel.token
        key = rel.outcome.name.lower() + ("+offload" if rel.offload else "")
        self.verdicts[key] = self.verdicts.get(key, 0) + 1
        if rel.inject and rel.packet is not None:
            for inj in rel.inject:
                self.injector.send(rel.packet, inj)
        try:
            if rel.prefilter is not None and self.prefilters is not None and rel.outcome is Outcome.ACCEPT:
                bits = self.prefilters.mark(rel.prefilter)
                if bits is not None:  # VCR-FWD saves the id to the connmark and accepts the packet
                    nfpkt.set_mark((nfpkt.get_mark() & ~PF_MASK) | bits)
                    nfpkt.repeat()
                    return
            if rel.handshake and rel.outcome is Outcome.ACCEPT:  # VCR-FWD saves the bit to the connmark
                nfpkt.set_mark(nfpkt.get_mark() | MARK_HS)
                nfpkt.repeat()
                return
            if not rel.offload:
                nfpkt.accept() if rel.outcome is Outcome.ACCEPT else nfpkt.drop()
                return
            mark = {Outcome.ACCEPT: MARK_ACCEPT, Outcome.DROP: MARK_DROP, Outcome.REJECT: MARK_REJECT}[rel.outcome]
            nfpkt.set_mark((nfpkt.get_mark() & ~MARK_MASK) | mark)
            nfpkt.repeat()  # re-enter FORWARD: VCR-FWD saves the mark to the connmark and acts on it
        except Exception:
            log.exception("verdict failed")

    def _fail_verdict(self, nfpkt: Any) -> None:
        try:
            nfpkt.drop() if self.pipeline.policy.on_engine_error.blocks else nfpkt.accept()
        except Exception:
            log.exception("fail verdict failed")

    def on_packet(self, nfpkt: Any) -> None:
        """NFQUEUE callback: never raises (an exception here would stop the queue loop)."""
        try:
            data = nfpkt.get_payload()
            if len(data) > 1500:
                self.large_packets += 1
            side = self.sides.get(nfpkt.physindev, Side.UNKNOWN)
            pkt = parse_ip(data, time.time(), side)
            mark = nfpkt.get_mark()
            if mark & MARK_CT_REPLY:
                pkt.ct_reply = True
            if mark & MARK_CT_EST:
                pkt.ct_established = True
            releases = self.pipeline.process(pkt, nfpkt)
        except Exception:
            self.callback_errors += 1
            log.exception("packet processing failed; applying the fail verdict")
            self._fail_verdict(nfpkt)
            return
        for rel in releases:
            self._apply(rel)

    # -- I/O for holds -------------------------------------------------------------------
    def _submit_io(self) -> None:
        for hold_id, req in self.pipeline.take_io():
            fut = (self.slow_pool if req.kind in SLOW_KINDS else self.io_pool).submit(perform, req)
            fut.add_done_callback(lambda f, h=hold_id: self._io_finished(h, f))

    def _io_finished(self, hold_id: int, fut: "Future[tuple[Any, str | None]]") -> None:
        result, error = fut.result()
        self.io_done.put((hold_id, result, error))
        try:
            os.write(self.wake_w, b"x")
        except BlockingIOError:
            pass

    def _drain_io(self) -> None:
        try:
            os.read(self.wake_r, 4096)
        except BlockingIOError:
            pass
        while True:
            try:
                hold_id, result, error = self.io_done.get_nowait()
            except _queue.Empty:
                return
            for rel in self.pipeline.io_done(hold_id, result, error, time.time()):
                self._apply(rel)

    # -- main loop -------------------------------------------------------------------------
    def run(self) -> None:
        from netfilterqueue import NetfilterQueue

        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)  # reloads are new worker processes (the daemon's)
        for i in range(min(MAX_FORK_SIGNALS, signal.SIGRTMAX - signal.SIGRTMIN + 1)):
            signal.signal(fork_signal(i), self._fork_request)
        nfq, bulk_nfq = self.nfq, self.bulk_nfq = NetfilterQueue(), NetfilterQueue()
        # the bulk queue's number (agent/dataplane/ruleset.py), from the first queue's as _fork_sibling does
        bulk_num = bulk_queue_num(self.spec.queue_num - self.spec.index, self.cfg.dataplane.worker_count(), self.spec.index)
        if not self._bind(nfq, self.spec.queue_num) or not self._bind(bulk_nfq, bulk_num):
            return
        fd, bulk_fd = nfq.get_fd(), bulk_nfq.get_fd()
        self._nfq_fds = [fd, bulk_fd]
        fail_open = self.cfg.dataplane.fail_mode == "open"
        self.qsock = QueueSocket(fd, self.spec.queue_num)
        self.qsock.configure(gso=True, fail_open=fail_open)
        self.bulk_qsock = QueueSocket(bulk_fd, bulk_num, before=self._before_bulk)
        self.bulk_qsock.configure(gso=True, fail_open=fail_open)
        if self.prefilters is not None:  # the queue is this worker's: so is its prefilter chain
            self.prefilters.start()
        # what the kernel may keep from this worker (the daemon installs the ruleset for it)
        self.out.put(("needs", self.spec.index, self.spec.generation, registry.dataplane_needs(self.pipeline.engines)))
        self.out.put(("ready", self.spec.index, self.spec.generation, os.getpid()))
        if self.spec.successor:
            summary = {e.name: e.summary() for e in self.pipeline.engines}
            self.out.put(("reloaded", self.spec.index, summary, self.spec.generation))
        log.info("worker %d bound to queues %d and %d (generation %d)", self.spec.index, self.spec.queue_num,
                 bulk_num, self.spec.generation)
        last_stats = last_tick = time.monotonic()
        hot = False  # a packet came while busy-polling: poll again after the loop's other work
        try:
            while self.running:
                deadline = self.pipeline.next_deadline()
                wait = 0.5 if deadline is None else max(0.0, min(0.5, deadline - time.time()))
                try:
                    ready, _, _ = select.select([fd, bulk_fd, self.wake_r], [], [], 0.0 if hot else wait)
                except InterruptedError:
                    continue
                packets = fd in ready or bulk_fd in ready
                if packets:
                    self._run_queues()
                if self.busy_poll and (hot or packets):
                    hot = self._busy_poll()
                if self.wake_r in ready:
                    self._drain_io()
                self._submit_io()
                while self.fork_for:
                    self._fork_sibling(self.fork_for.pop(0))
                now = time.monotonic()
                if now - last_tick >= 0.2 or deadline is not None:
                    for rel in self.pipeline.tick(time.time()):
                        self._apply(rel)
                    last_tick = now
                if now - last_stats >= STATS_EVERY:
                    self._send_stats()
                    last_stats = now
            self._handover()
        finally:
            if self.prefilters is not None:
                self.prefilters.close()
            self._send_stats()
            for qsock in (self.qsock, self.bulk_qsock):
                if qsock is not None:
                    qsock.close()
            nfq.unbind()
            bulk_nfq.unbind()
            self.io_pool.shutdown(wait=False, cancel_futures=True)
            self.slow_pool.shutdown(wait=False, cancel_futures=True)

    # -- a replacement for a dead sibling: a copy of this worker, engines and all -----------------
    def _fork_request(self, signum: int, _frame: Any) -> None:
        index = signum - signal.SIGRTMIN
        if index != self.spec.index and index not in self.fork_for:
            self.fork_for.append(index)
        try:
            os.write(self.wake_w, b"f")
        except OSError:
            pass

    def _fork_sibling(self, index: int) -> None:
        """The daemon's answer to a dead worker after a reload: rather than a new process that
        builds the engines from the configuration (seconds, minutes with ET Open) before it binds
        its queue, a copy of this worker (same generation, same engines, its pages shared) that
        binds the dead one's queue at once. Forked twice, so the copy is the daemon's child (the
        daemon is a child subreaper) and not this worker's."""
        queue_num = self.spec.queue_num - self.spec.index + index
        log.info("worker %d: forking a worker for queue %d (index %d)", self.spec.index, queue_num, index)
        try:
            pid = os.fork()
        except OSError as exc:
            log.error("worker %d: cannot fork a worker for index %d: %s", self.spec.index, index, exc)
            return
        if pid == 0:  # the intermediate child: fork the copy and go, so the daemon adopts it
            code = 0
            try:
                if os.fork() == 0:
                    code = 1
                    try:
                        self._become(index, queue_num)
                        code = 0
                    except BaseException:  # noqa: BLE001 - nothing may unwind into the sibling's loop
                        log.exception("forked worker %d failed", index)
                    try:  # what is still buffered for the daemon (alarms) goes out before the exit
                        self.out.close()
                        self.out.join_thread()
                    except Exception:  # noqa: BLE001
                        pass
            finally:
                os._exit(code)
        os.waitpid(pid, 0)

    def _become(self, index: int, queue_num: int) -> None:
        """In the forked copy: drop the sibling's queue, flows and threads; keep its engines; serve
        queue ``queue_num``."""
        for qsock in (self.qsock, self.bulk_qsock):
            if qsock is not None:  # this process's copies of the sibling's queue sockets, not the
                qsock.sock.close()  # sockets themselves: the sibling keeps its queues
        for fd in self._nfq_fds:
            os.close(fd)
        self.qsock = self.bulk_qsock = None
        self._bulk_conns = {}
        os.close(self.wake_r)
        os.close(self.wake_w)
        self.out._after_fork()  # the multiprocessing queue's feeder thread did not come along
        for h in logging.getLogger().handlers:
            h.setFormatter(logging.Formatter(f"%(asctime)s w{index} %(levelname)s %(name)s: %(message)s"))
        engines = self.pipeline.engines
        self.spec = WorkerSpec(index, queue_num, self.spec.config_path, generation=self.spec.generation)
        self.pipeline = pipeline_from_config(self.cfg, self._emit, engines=engines, kernel_offload=True)
        self.prefilters = self._prefilters()  # the dead worker's chain: this one's from now on
        self.injector = Injector()
        self.io_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix=f"io-w{index}")
        self.io_done = _queue.SimpleQueue()
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)
        self.running = True
        self.fork_for = []
        self.callback_errors = 0
        self.verdicts = {}
        self.large_packets = 0
        self.run()

    def _stop(self, *_: Any) -> None:
        """SIGTERM: a successor is ready to take the queue (or the agent stops): leave the loop now."""
        self.running = False
        try:
            os.write(self.wake_w, b"s")
        except OSError:
            pass

    def _handover(self) -> None:
        """Before unbinding, give a verdict to every packet already queued to this worker: the
        kernel drops what is still queued when a queue is unbound (its successor binds next).
        Rounds until both queues are empty, for at most HANDOVER_SECONDS while packets keep coming."""
        deadline = time.monotonic() + HANDOVER_SECONDS
        while time.monotonic() < deadline:
            try:
                ready, _, _ = select.select(self._nfq_fds, [], [], 0)
            except InterruptedError:
                continue
            if not ready:
                return
            self._run_queues()

    def _bind(self, nfq: Any, queue_num: int) -> bool:
        """Bind the queue. A successor waits here while the worker it replaces still holds it (the
        daemon has just told that one to stop): the kernel refuses a second listener."""
        maxlen = self.cfg.dataplane.queue_maxlen
        deadline = time.monotonic() + 60.0
        while True:
            try:
                nfq.bind(queue_num, self.on_packet, max_len=maxlen)
                return True
            except OSError:
                if not self.spec.successor or time.monotonic() > deadline:
                    raise
            if not self.running:
                return False
            time.sleep(BIND_RETRY)

    def _busy_poll(self) -> bool:
        """Look at the queue without sleeping for ``dataplane.busy_poll_us`` after its last packet.

        A worker asleep in select() is woken by the kernel when a packet is queued; on an idle CPU
        that wake-up (an IPI, and in a VM a halt exit) can cost more than the packet's inspection.
        The next packet of an exchange (a TCP segment's answer, a DNS reply) often comes within
        tens of microseconds: polling that long catches it on a running CPU. True when a packet
        came or other work is waiting (the loop does it, then calls this again); False when the
        window passed quietly and the loop may sleep. Never longer than the window without a
        packet: an idle box does not spin."""
        seen = self._messages()
        end = time.perf_counter() + self.busy_poll
        while self.running and self.io_done.empty() and not self.fork_for:
            self._run_queues()
            if self._messages() != seen:
                return True
            if time.perf_counter() >= end:
                return False
        return True

    def _messages(self) -> int:
        return sum(q.messages for q in (self.qsock, self.bulk_qsock) if q is not None)

    def _run_queues(self) -> None:
        """One round over the two queues: up to ``FIRST_QUOTA`` packets of the first queue and
        ``BULK_QUOTA`` of the bulk queue, then back to the loop (its ticks, stats, reloads), which
        comes back at once while packets wait.

        The first queue goes first: before each bulk packet, what waits there is served, as long
        as the round's first-queue quota lasts. So new connections do not wait behind downloads,
        and yet a first queue that never empties (more new connections than the worker can take)
        leaves the bulk queue its share instead of starving it. A connection keeps its order as
        it moves to the bulk queue: before its first bulk packet, the first queue is served
        without quota up to the kernel's queue length, which is all that can wait ahead of it.
        """
        self._first_left = FIRST_QUOTA
        self._first_left -= self._run_queue(self.nfq, self.qsock, self._first_left)
        if self.bulk_qsock is not None:
            self._run_queue(self.bulk_nfq, self.bulk_qsock, BULK_QUOTA)

    def _before_bulk(self, message: bytes) -> None:
        """The bulk queue's ``before``: the first queue's turn ahead of this bulk packet."""
        conn = packet_connection(message)
        if conn is None or conn not in self._bulk_conns:  # its first bulk packet (as far as we know)
            self.bulk_connections += 1
            if conn is not None:
                self._bulk_conns[conn] = None
                if len(self._bulk_conns) > BULK_CONNS_KEPT:
                    del self._bulk_conns[next(iter(self._bulk_conns))]
            self._run_queue(self.nfq, self.qsock, self.cfg.dataplane.queue_maxlen)
        elif self._first_left > 0:
            self._first_left -= self._run_queue(self.nfq, self.qsock, self._first_left)

    @staticmethod
    def _run_queue(nfq: Any, qsock: QueueSocket | None, quota: int | None = None) -> int:
        """Waiting packets of one queue, at most ``quota`` (None: all); how many were handed on."""
        if qsock is None:
            return 0
        seen, qsock.quota = qsock.messages, quota
        try:
            nfq.run_socket(qsock)  # until nothing waits or the quota is spent (agent/dataplane/nfq.py)
        except OSError as exc:
            log.warning("queue %s recv failed: %s", qsock.queue_num, exc)
        finally:
            qsock.quota = None
        return qsock.messages - seen

    def _send_stats(self) -> None:
        stats = self.pipeline.stats()
        stats["worker"] = {"callback_errors": self.callback_errors, **self.verdicts, **self.injector.counters, "pid": os.getpid(),
                           "large_packets": self.large_packets,
                           "bulk_packets": self.bulk_qsock.messages if self.bulk_qsock is not None else 0,
                           "bulk_connections": self.bulk_connections}
        if self.prefilters is not None:  # status.json's counters.prefilter (summed over the workers)
            stats["prefilter"] = self.prefilters.stats()
        qsocks = [q for q in (self.qsock, self.bulk_qsock) if q is not None]
        if qsocks:  # the kernel's answers to the queue settings (agent/dataplane/nfq.py)
            stats["worker"]["queue_settings"] = queue_settings(qsocks)
        self.out.put(("stats", self.spec.index, stats))


def worker_main(cfg: AgentConfig, spec: WorkerSpec, out: Any, log_level: int, engines: list[Engine] | None = None) -> None:
    """A worker process. A successor (a reload) builds its engines here, in its own process, while
    the running worker keeps serving the queue with its own interpreter; it says ``prepared``, the
    daemon stops the running worker, and the successor binds the queue the moment it is free. A
    successor whose engines fail to build says ``reload_failed`` and exits: the running worker stays."""
    logging.basicConfig(level=log_level, format=f"%(asctime)s w{spec.index} %(levelname)s %(name)s: %(message)s")
    sys.setswitchinterval(SWITCH_INTERVAL)
    # Not the daemon's handlers (inherited through fork): SIGTERM ends a successor still building.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if spec.successor:
        try:
            worker = Worker(cfg, spec, out, engines)
        except Exception as exc:  # a bad config or rule file: keep the running workers
            log.error("worker %d: reload failed, the running worker keeps its rules: %s", spec.index, exc)
            out.put(("reload_failed", spec.index, str(exc), spec.generation))
            return
        # Compiled rules are long-lived: out of the collector's scans, as in the daemon at start.
        gc.collect()
        gc.freeze()
        out.put(("prepared", spec.index, spec.generation, os.getpid()))
    else:
        worker = Worker(cfg, spec, out, engines)
        if engines is None:  # built here: keep the long-lived rules out of the collector's scans
            gc.collect()
            gc.freeze()
    try:
        worker.run()
    except Exception:
        log.exception("worker %d died", spec.index)
        raise
