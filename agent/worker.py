"""One NFQUEUE worker process: binds a queue, runs the pipeline, gives verdicts and connmark offloads."""
from __future__ import annotations

import gc
import logging
import os
import queue as _queue
import select
import signal
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable

from agent.bridge import port_sides
from agent.config import AgentConfig
from agent.inject import Injector
from agent.nfq import QueueSocket
from agent.performers import perform
from agent.ruleset import MARK_ACCEPT, MARK_DROP, MARK_MASK, MARK_REJECT
from filters.app.layer import AppLayer, AppSettings
from filters.engine import Action, Engine
from filters.flow import FlowTable
from filters.packet import Side, parse_ip
from filters.pipeline import Outcome, Pipeline, PipelinePolicy, Release
from filters.registry import build_engines

log = logging.getLogger(__name__)

STATS_EVERY = 2.0


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
    )
    policy = PipelinePolicy(
        on_engine_error=Action.DROP if dp.on_engine_error == "drop" else Action.NONE,
        on_malformed=Action.DROP if dp.on_malformed == "drop" else Action.NONE,
        hold_max_packets=dp.hold.max_packets_per_flow,
        hold_max_bytes=dp.hold.max_bytes,
        hold_overflow=Action.DROP if dp.hold.overflow == "drop" else Action.PASS,
        ips=ips,
        kernel_offload=kernel_offload,
    )
    http = cfg.app_layer.http
    app = AppLayer(
        AppSettings(
            http_request_body_limit=http.request_body_limit,
            http_response_body_limit=http.response_body_limit,
            http_decompress_layers=http.decompress_layers,
        )
    )
    return Pipeline(engines if engines is not None else build_engines(cfg), flows, policy, emit, app)


@dataclass
class WorkerSpec:
    index: int
    queue_num: int
    config_path: str = ""  # re-read on reload (SIGHUP)


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
        self.io_done: _queue.SimpleQueue[tuple[int, Any, str | None]] = _queue.SimpleQueue()
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)
        self.running = True
        self.reload_requested = False
        self.reloader: threading.Thread | None = None
        self.reloaded: list[Engine] | None = None  # engines built by the reloader, not yet swapped in
        self.callback_errors = 0
        self.verdicts: dict[str, int] = {}
        self.large_packets = 0  # packets over 1500 bytes: GSO packets queued whole (agent/nfq.py)
        self.qsock: QueueSocket | None = None

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
            fut = self.io_pool.submit(perform, req)
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

        signal.signal(signal.SIGTERM, lambda *_: setattr(self, "running", False))
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGHUP, lambda *_: setattr(self, "reload_requested", True))
        nfq = NetfilterQueue()
        nfq.bind(self.spec.queue_num, self.on_packet, max_len=self.cfg.dataplane.queue_maxlen)
        fd = nfq.get_fd()
        self.qsock = QueueSocket(fd, self.spec.queue_num)
        self.qsock.configure(gso=True, fail_open=self.cfg.dataplane.fail_mode == "open")
        self.out.put(("ready", self.spec.index))
        log.info("worker %d bound to queue %d", self.spec.index, self.spec.queue_num)
        last_stats = last_tick = time.monotonic()
        try:
            while self.running:
                deadline = self.pipeline.next_deadline()
                wait = 0.5 if deadline is None else max(0.0, min(0.5, deadline - time.time()))
                try:
                    ready, _, _ = select.select([fd, self.wake_r], [], [], wait)
                except InterruptedError:
                    continue
                if fd in ready:
                    self._run_queue(nfq)
                if self.wake_r in ready:
                    self._drain_io()
                self._submit_io()
                self._reload_step()
                now = time.monotonic()
                if now - last_tick >= 0.2 or deadline is not None:
                    for rel in self.pipeline.tick(time.time()):
                        self._apply(rel)
                    last_tick = now
                if now - last_stats >= STATS_EVERY:
                    self._send_stats()
                    last_stats = now
        finally:
            self._send_stats()
            if self.qsock is not None:
                self.qsock.close()
            nfq.unbind()
            self.io_pool.shutdown(wait=False, cancel_futures=True)

    # -- reload: build the new engines beside the running ones, then swap ------------------
    def _reload_step(self) -> None:
        if self.reloaded is not None:
            engines, self.reloaded = self.reloaded, None
            self.pipeline.replace_engines(engines)
            gc.collect()
            gc.freeze()  # the new rules are long-lived too
            summary = {e.name: e.summary() for e in engines}
            log.info("worker %d: reloaded engines %s", self.spec.index, ", ".join(summary))
            self.out.put(("reloaded", self.spec.index, summary))
        if self.reload_requested and self.reloader is None:
            self.reload_requested = False
            self.reloader = threading.Thread(target=self._build, name=f"reload-w{self.spec.index}", daemon=True)
            self.reloader.start()

    def _build(self) -> None:
        """Runs in the reload thread: packets keep flowing through the old engines meanwhile."""
        from agent.config import load_config

        try:
            cfg = load_config(self.spec.config_path)
            engines = build_engines(cfg)
        except Exception as exc:  # a bad config or rule file: keep the running engines
            log.error("worker %d: reload failed, keeping the running rules: %s", self.spec.index, exc)
            self.out.put(("reload_failed", self.spec.index, str(exc)))
        else:
            self.reloaded = engines
        finally:
            self.reloader = None
            try:
                os.write(self.wake_w, b"r")
            except BlockingIOError:
                pass

    def _run_queue(self, nfq: Any) -> None:
        try:
            nfq.run_socket(self.qsock)  # every waiting message, whole (see agent/nfq.py)
        except OSError as exc:
            log.warning("queue recv failed: %s", exc)

    def _send_stats(self) -> None:
        stats = self.pipeline.stats()
        stats["worker"] = {"callback_errors": self.callback_errors, **self.verdicts, **self.injector.counters, "pid": os.getpid(),
                           "large_packets": self.large_packets}
        if self.qsock is not None:  # the kernel's answer to the queue settings (agent/nfq.py)
            answer = self.qsock.answer
            stats["worker"]["queue_settings"] = ("no answer" if answer is None else "taken" if answer == 0
                                                 else f"refused: {os.strerror(answer)}")
        self.out.put(("stats", self.spec.index, stats))


def worker_main(cfg: AgentConfig, spec: WorkerSpec, out: Any, log_level: int, engines: list[Engine] | None = None) -> None:
    logging.basicConfig(level=log_level, format=f"%(asctime)s w{spec.index} %(levelname)s %(name)s: %(message)s")
    try:
        Worker(cfg, spec, out, engines).run()
    except Exception:
        log.exception("worker %d died", spec.index)
        raise
