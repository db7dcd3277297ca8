"""The agent daemon (``vcr-agent run``): bridge ruleset, one worker per queue, alarms, stats, systemd."""
from __future__ import annotations

import contextlib
import gc
import json
import logging
import multiprocessing as mp
import os
import queue as _queue
import signal
import threading
import time
from pathlib import Path
from typing import Any

from agent import sdnotify
from agent.dataplane.bridge import BridgeControl, firewall_policy, port_sides, spec_from_config
from agent.config import AgentConfig
from agent.evelog import EveLog
from agent.dataplane.ruleset import parse_nflog_prefix
from agent.dataplane.worker import MAX_FORK_SIGNALS, WorkerSpec, fork_signal, worker_main
from agent.engines import build_engines, load_effective_config
from filters import eve
from filters.engine import Action, BlockPage, Engine, Verdict
from filters.registry import dataplane_needs, kernel_set_owner, kernel_set_owners
from filters.firewall import BLOCKLIST_SID, CATEGORY, SID_BASE
from filters.packet import Side, parse_ip

log = logging.getLogger(__name__)

RESTART_BACKOFF = (0.5, 1.0, 2.0, 5.0, 10.0)
STABLE_RUN = 60.0  # a worker that ran this long before it died was stable: its back-off starts afresh
RETIRE_GRACE = 10.0  # seconds a replaced worker has to hand its queue over and exit before it is killed
FORK_WAIT = 5.0  # seconds a sibling has to fork a dead worker's replacement before one is built instead
RELOAD_WAIT_CAP = 900.0  # a reload still being built (its workers alive and working) is waited for this long at most


class Adopted:
    """A worker the daemon did not start itself: a copy forked by a sibling (worker._fork_sibling),
    the daemon's child as the daemon is a child subreaper. The parts of ``multiprocessing.Process``
    the daemon uses."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.exitcode: int | None = None

    def is_alive(self) -> bool:
        if self.exitcode is not None:
            return False
        try:
            got, status = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:  # not reparented to the daemon yet (or reaped elsewhere)
            try:
                os.kill(self.pid, 0)
                return True
            except ProcessLookupError:
                self.exitcode = -1
                return False
        if got == 0:
            return True
        self.exitcode = os.waitstatus_to_exitcode(status)
        return False

    def _signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, sig)

    def terminate(self) -> None:
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        self._signal(signal.SIGKILL)

    def join(self, timeout: float | None = None) -> None:
        deadline = time.monotonic() + (timeout or 0.0)
        while self.is_alive() and (timeout is None or time.monotonic() < deadline):
            time.sleep(0.02)


def release_memory() -> None:
    """After dropping long-lived objects: collect them (cycles among frozen objects too) and hand
    the freed heap back to the system (glibc keeps freed memory in its arenas otherwise)."""
    import ctypes

    gc.unfreeze()
    gc.collect()
    gc.freeze()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def become_subreaper() -> bool:
    """PR_SET_CHILD_SUBREAPER: orphaned descendants (workers forked by a sibling) become ours."""
    import ctypes

    try:
        return ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


class ReloadTracker:
    """Reload requests matched to what they became (issue 16: a reply was counted for the wrong request).

    Every reload the daemon accepts is a new configuration *generation*; each worker is built for
    one and says which when it takes its queue. A request (``ask``) gets a ticket; the reload the
    main loop runs next serves every ticket asked so far with its generation (or its error), and
    the request is done when every worker runs that generation or a later one, or failed when a
    worker could not build it (or a later one it was superseded by) and the workers stay older."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.asked = 0
        self.served_upto = 0
        self.served: list[tuple[int, int, str]] = []  # (last ticket, generation or -1, error)
        self.generation = 0
        self.failed_gen = 0
        self.failed_error = ""
        self.worker_gen: dict[int, int] = {}
        self.started: dict[int, float] = {}  # generation -> when the daemon accepted it (monotonic)
        self.seconds: list[float] = []  # how long the last reloads took until every worker ran them

    def ask(self) -> int:
        with self.lock:
            self.asked += 1
            return self.asked

    def _serve(self, gen: int, error: str) -> None:
        with self.lock:
            if self.asked > self.served_upto:
                self.served.append((self.asked, gen, error))
                self.served_upto = self.asked
                del self.served[:-64]

    def begin(self) -> int:
        """The main loop accepted a reload: a new generation for every request so far."""
        self.generation += 1
        self.started[self.generation] = time.monotonic()
        self._serve(self.generation, "")
        return self.generation

    def refuse(self, error: str) -> None:
        self._serve(-1, error)

    def running(self, index: int, gen: int, workers: list[int]) -> None:
        self.worker_gen[index] = gen
        t0 = self.started.pop(gen, None) if all(self.worker_gen.get(i, -1) >= gen for i in workers) else None
        if t0 is not None:
            self.seconds = (self.seconds + [round(time.monotonic() - t0, 1)])[-10:]

    def failed(self, gen: int, error: str) -> None:
        if gen >= self.failed_gen:
            self.failed_gen, self.failed_error = gen, error
        self.started.pop(gen, None)

    def generation_of(self, ticket: int) -> tuple[int, str] | None:
        with self.lock:
            for upto, gen, error in self.served:
                if ticket <= upto:
                    return gen, error
        return None

    def outcome(self, ticket: int, workers: list[int]) -> tuple[bool | None, str]:
        """True: every worker runs the ticket's generation (or a later one); False: it failed;
        None: not yet."""
        got = self.generation_of(ticket)
        if got is None:
            return None, ""
        gen, error = got
        if gen < 0:
            return False, error
        wg = dict(self.worker_gen)
        if all(wg.get(i, -1) >= gen for i in workers):
            return True, f"{len(workers)} workers reloaded (generation {gen})"
        if self.failed_gen >= gen:
            return False, self.failed_error
        return None, ""


class Daemon:
    def __init__(self, cfg: AgentConfig, *, config_path: str = "") -> None:
        self.cfg = cfg
        self.config_path = config_path
        self.reload_requested = threading.Event()
        self._hup = False  # SIGHUP (or ``vcr-agent reload``) asked for a reload
        self.reloads: dict[str, Any] = {"requested": 0, "workers_reloaded": 0, "failed": 0, "last_error": ""}
        self.spec = spec_from_config(cfg)
        self.log_dir = Path(cfg.logging.dir)
        self.eve = EveLog(self.log_dir / "eve.json", rotate_bytes=cfg.logging.eve_rotate_bytes, keep=cfg.logging.eve_keep)
        self.ctx = mp.get_context("fork")
        self.out: Any = self.ctx.Queue()
        self.procs: dict[int, mp.process.BaseProcess] = {}
        self.restarts: dict[int, int] = {}
        self.backoff: dict[int, int] = {}  # restarts since the worker last ran STABLE_RUN seconds
        self.spawned_at: dict[int, float] = {}
        self.restart_due: dict[int, float] = {}  # a dead worker's restart, after its back-off (not slept)
        self.forking: dict[int, float] = {}  # index -> deadline: a sibling was asked to fork its replacement
        self.subreaper = False
        # Reloads: a successor process per queue builds the new engines; it replaces the worker
        # when ready (agent/dataplane/worker.py worker_main).
        self.gens = ReloadTracker()
        self.successors: dict[int, tuple[int, mp.process.BaseProcess]] = {}  # index -> (generation, process)
        self.retiring: list[tuple[float, mp.process.BaseProcess]] = []  # (kill after, replaced worker)
        self._waiters: list[tuple[int, Any]] = []  # (ticket, callback(ok, error)): bundle activations
        self.worker_stats: dict[int, dict[str, Any]] = {}
        self.ready: set[int] = set()
        self.stopping = threading.Event()
        self.started = time.time()
        self.nflog_count = 0
        self.policy = firewall_policy(cfg)
        # Engines are prepared once here (rule compilation) and inherited by the forked workers.
        self.engines = build_engines(cfg)
        # What the kernel keeps from the workers follows what the loaded engines need; after a
        # reload, what every worker reports it runs with (``_sync_needs``).
        self.needs = dataplane_needs(self.engines)
        self.worker_needs: dict[int, tuple[int, tuple[bool, bool]]] = {}  # index -> (generation, needs)
        self.bridge = BridgeControl(cfg, self.needs)
        # Compiled rules are long-lived: keep them out of the collector (no multi-100 ms pauses
        # scanning them) and untouched after fork (the workers share their pages).
        gc.collect()
        gc.freeze()
        self.reload_summary: dict[str, Any] = {e.name: e.summary() for e in self.engines}
        self.blockpage: Any = None
        self.mail: Any = None  # agent.dataplane.mailproxy.MailService, when engines.mail is enabled
        self._mail_sections: Any = (cfg.engines.get("mail"), cfg.engines.get("av"))
        self.kernel_sets: dict[str, dict[str, Any]] = {}  # engine -> {"version", "entries"}: its sets as loaded
        self.center: Any = None  # the operations-center link (agent/link/center.py), when enabled
        self.center_error = ""
        self.tasks: Any = None  # agent.link.tasks.TaskRunner: the center's tasks (issue 6); outlives link restarts
        self.remote_config: Any = None  # agent.lifecycle.remoteconfig.RemoteConfig (task kind "config")
        self.updates: Any = None  # agent.lifecycle.updates.UpdateService (signed bundles), when updates.enabled
        self.upgrader: Any = None  # agent.lifecycle.upgrade.Upgrader (task kind "upgrade"), when upgrade.enabled
        self.exit_code = 0  # 75 (agent.launcher.RESTART_CODE): the launcher starts the new release

    # -- workers ---------------------------------------------------------------------------
    def _spawn(self, index: int, *, successor: bool = False) -> None:
        gen = self.gens.generation
        spec = WorkerSpec(index, self.spec.queue_base + index, self.config_path, generation=gen, successor=successor)
        p = self.ctx.Process(
            target=worker_main,
            # After a reload the engines prepared at start-up are stale: a successor or a restarted
            # worker builds its own from the current configuration.
            args=(self.cfg, spec, self.out, logging.getLogger().level, None if gen else self.engines),
            name=f"vcr-worker-{index}" + (f"-g{gen}" if successor else ""),
            daemon=True,
        )
        p.start()
        if successor:
            self.successors[index] = (gen, p)
        else:
            self.procs[index] = p
            self.spawned_at[index] = time.monotonic()

    def _check_workers(self) -> None:
        now = time.monotonic()
        for item in list(self.retiring):
            kill_after, p = item
            if not p.is_alive():
                p.join(0)
                self.retiring.remove(item)
            elif now > kill_after:
                log.warning("replaced worker pid %s did not exit: killing it", p.pid)
                p.kill()
        for index, (gen, p) in list(self.successors.items()):
            if p.is_alive():
                continue
            del self.successors[index]
            p.join(0)
            if p.exitcode != 0:  # 0: it said reload_failed itself (or was superseded)
                self._successor_failed(index, gen, f"worker {index} exited while building generation {gen} (code {p.exitcode})")
        if self.stopping.is_set():
            return
        for index, p in list(self.procs.items()):
            if p.is_alive():
                continue
            if index in self.successors:
                continue  # its successor binds the queue the moment it is built
            if index in self.forking:
                if now < self.forking[index]:
                    continue  # a sibling is forking its replacement
                del self.forking[index]
                log.warning("worker %d: no forked replacement within %.0f s: starting one that builds its engines",
                            index, FORK_WAIT)
                self._spawn(index)
                continue
            due = self.restart_due.get(index)
            if due is None:
                if now - self.spawned_at.get(index, now) >= STABLE_RUN:
                    self.backoff[index] = 0  # it had run well: no back-off left over from an old crash
                n = self.backoff.get(index, 0)
                self.backoff[index] = n + 1
                self.restarts[index] = self.restarts.get(index, 0) + 1
                self.ready.discard(index)
                delay = RESTART_BACKOFF[min(n, len(RESTART_BACKOFF) - 1)]
                log.error("worker %d exited (code %s); restarting in %.1f s (restart #%d)", index, p.exitcode, delay,
                          self.restarts[index])
                self.restart_due[index] = due = now + delay
            if now >= due:  # the main loop goes on meanwhile: alarms, status, the other workers
                del self.restart_due[index]
                p.join(0)
                if not self._fork_from_sibling(index):
                    self._spawn(index)

    def _fork_from_sibling(self, index: int) -> bool:
        """After a reload the daemon has no prepared engines of the running generation: ask a live
        worker of that generation to fork a copy of itself for ``index`` (ready at once) rather than
        start one that builds its engines before it binds its queue (a fail-open gap of seconds)."""
        gen = self.gens.generation
        if gen == 0 or not self.subreaper or index >= MAX_FORK_SIGNALS:
            return False  # before any reload a new worker forks from the daemon's prepared engines
        for j, q in list(self.procs.items()):
            if j == index or j not in self.ready or self.gens.worker_gen.get(j) != gen or not q.is_alive():
                continue
            try:
                os.kill(q.pid, fork_signal(index))
            except OSError:
                continue
            self.forking[index] = time.monotonic() + FORK_WAIT
            log.info("worker %d: worker %d (generation %d) forks its replacement", index, j, gen)
            return True
        return False

    # -- NFLOG (kernel firewall decisions) -------------------------------------------------
    def _nflog_loop(self) -> None:
        try:
            from agent.dataplane.nflog import NflogReader

            reader = NflogReader(self.spec.nflog_group)
        except Exception:
            log.exception("cannot read NFLOG group %d: kernel firewall drops will not raise alarms", self.spec.nflog_group)
            return
        import select

        sides = port_sides(self.cfg)
        while not self.stopping.is_set():
            ready, _, _ = select.select([reader.fileno()], [], [], 0.5)
            if not ready:
                continue
            for rec in reader.read():
                self._nflog_alarm(rec, sides)
        reader.close()

    def _nflog_alarm(self, rec: Any, sides: dict[int, Side]) -> None:
        parsed = parse_nflog_prefix(rec.prefix)
        if parsed is None:
            return
        kind, number, action, direction = parsed
        pkt = parse_ip(rec.payload, rec.ts or time.time(), sides.get(rec.physindev, Side.UNKNOWN))
        if kind not in ("fw", "bl"):  # a drop through an engine's kernel set
            self._kernel_set_alarm(kind, pkt)
            return
        if kind == "bl":
            sid, sig = BLOCKLIST_SID, "VCR firewall: blocklisted address"
        elif number == 0:
            sid, sig = SID_BASE, f"VCR firewall: default {action} {direction}"
        else:
            rule = next((r for r in self.policy.rules if r.number == number), None)
            sid, sig = SID_BASE + number, f"VCR firewall: {rule.name if rule else f'rule {number}'}"
        act = Action.REJECT if action == "reject" else Action.DROP
        v = Verdict(act, "firewall", rule_id=sid, signature=sig, category=CATEGORY, severity=2, reason="kernel")
        self.nflog_count += 1
        self.eve.write(eve.alert_record(v, pkt.ts, pkt, None, blocked=True))

    # -- the engines' kernel sets (e.g. ATP's C&C addresses) ---------------------------------
    def _running(self, cls: type[Engine]) -> Engine | None:
        return next((e for e in self.engines if type(e) is cls), None)

    def _sync_kernel_sets(self) -> None:
        """Load every engine's kernel sets from the running engine (empty sets when it is off)."""
        from agent.dataplane.bridge import update_kernel_sets

        for cls in kernel_set_owners():
            engine = self._running(cls)
            entries = engine.kernel_set_entries() if engine is not None else {}
            try:
                loaded = update_kernel_sets(cls.kernel_sets, entries, why=f"{cls.name} kernel sets update")
            except Exception as exc:  # the previous sets stay live
                log.error("%s: kernel sets not updated (the previous ones stay): %s", cls.name, exc)
                continue
            version = str(engine.summary().get("version", "")) if engine is not None else ""
            self.kernel_sets[cls.name] = {"version": version, "entries": loaded}
            log.info("%s: kernel sets loaded: %s", cls.name, loaded)

    def _kernel_set_alarm(self, tag: str, pkt: Any) -> None:
        """A kernel drop through an engine's set: the engine that owns it describes the alarm."""
        cls = kernel_set_owner(tag)
        if cls is None:
            return
        engine = self._running(cls) or cls()  # an engine that is off describes it unconfigured
        v = engine.kernel_drop_verdict(pkt)
        if v is None:
            return
        self.nflog_count += 1
        self.eve.write(eve.alert_record(v, pkt.ts, pkt, None, blocked=True))

    def _threat_sets_status(self) -> dict[str, Any]:
        """The kernel sets as loaded: entries per set, and the engines' data versions."""
        entries = {k: v for st in self.kernel_sets.values() for k, v in st["entries"].items()}
        version = ", ".join(st["version"] for st in self.kernel_sets.values() if st["version"])
        return {"version": version, "entries": entries} if self.kernel_sets else {}

    # -- messages from workers ----------------------------------------------------------------
    def _handle(self, msg: tuple[Any, ...]) -> None:
        kind = msg[0]
        if kind == "eve":
            self.eve.write(msg[1])
        elif kind == "stats":
            self.worker_stats[msg[1]] = msg[2]
        elif kind == "reloaded":  # ("reloaded", index, summary, generation): a successor took its queue
            self.reloads["workers_reloaded"] += 1
            self.reload_summary = msg[2]
            self._check_waiters()
        elif kind == "reload_failed":  # ("reload_failed", index, error, generation)
            self._successor_failed(msg[1], msg[3], str(msg[2]))
        elif kind == "needs":  # ("needs", index, generation, (packets, empty_acks)): sent before "ready"
            self.worker_needs[msg[1]] = (msg[2], tuple(msg[3]))
        elif kind == "prepared":  # ("prepared", index, generation, pid): built; the running worker steps aside
            index, gen, pid = msg[1], msg[2], msg[3]
            succ = self.successors.get(index)
            old = self.procs.get(index)
            if succ is not None and succ[1].pid == pid and old is not None and old.is_alive():
                old.terminate()  # it answers what is queued, unbinds and exits; the successor binds
                self.retiring.append((time.monotonic() + RETIRE_GRACE, old))
        elif kind == "ready":  # ("ready", index, generation, pid): bound to its queue
            index, gen, pid = msg[1], msg[2], msg[3]
            succ = self.successors.get(index)
            if succ is not None and succ[1].pid == pid:
                del self.successors[index]
                self.procs[index] = succ[1]
                self.spawned_at[index] = time.monotonic()
                self.restart_due.pop(index, None)
                self.backoff[index] = 0  # a reload's fresh process, not a crash loop
            elif index in self.procs and self.procs[index].pid != pid:  # forked by a sibling
                self.forking.pop(index, None)
                self.procs[index] = Adopted(pid)
                self.spawned_at[index] = time.monotonic()
            self.gens.running(index, gen, list(self.procs))
            self.ready.add(index)
            self._sync_needs()
            self._check_waiters()
            if len(self.ready) == len(self.procs):
                log.info("all %d workers ready (generation %d)", len(self.procs), gen)
                sdnotify.notify(f"READY=1\nSTATUS=inspecting on {len(self.procs)} queues")

    def _sync_needs(self) -> None:
        """Install the kernel ruleset for what the running workers need, once each has said what
        its engines need (combined: any need wins). While a reload is under way (successors still
        building) it only ever asks the kernel for more: a reload installs the ruleset that keeps
        nothing from the workers, and what the new engines spare is given back when all run."""
        reports = [self.worker_needs.get(i) for i in self.procs]
        running = self.gens.worker_gen
        if not reports or any(r is None or r[0] != running.get(i) for i, r in zip(self.procs, reports)):
            return
        needs = tuple(any(r[1][k] for r in reports if r is not None) for k in range(2))
        if self.successors:
            needs = tuple(a or b for a, b in zip(needs, self.needs))
        if needs == self.needs:
            return
        try:
            BridgeControl(self.cfg, needs).install_ruleset()  # type: ignore[arg-type]
        except Exception as exc:  # the installed ruleset stays
            log.error("kernel ruleset for the engines' needs %s not installed: %s", needs, exc)
            return
        log.info("kernel ruleset: engines need packets %s, empty ACKs %s", *needs)
        self.needs = needs  # type: ignore[assignment]

    def _successor_failed(self, index: int, gen: int, error: str) -> None:
        """A successor could not build its engines: the running workers keep theirs; the other
        successors of that generation are stopped."""
        log.error("reload (generation %d) failed in worker %d, the running workers keep their rules: %s", gen, index, error)
        self.reloads["failed"] += 1
        self.reloads["last_error"] = error
        self.gens.failed(gen, error)
        for i, (g, p) in list(self.successors.items()):
            if g <= gen:
                del self.successors[i]
                p.terminate()
                self.retiring.append((time.monotonic() + RETIRE_GRACE, p))
        self._check_waiters()
        self._sync_needs()

    def _check_waiters(self) -> None:
        for item in list(self._waiters):
            ticket, callback = item
            ok, detail = self.gens.outcome(ticket, list(self.procs))
            if ok is None:
                continue
            self._waiters.remove(item)
            callback(True) if ok else callback(False, detail)

    def status(self) -> dict[str, Any]:
        totals: dict[str, dict[str, int]] = {}
        for stats in self.worker_stats.values():
            for section, counters in stats.items():
                dst = totals.setdefault(section, {})
                for k, v in counters.items():
                    if isinstance(v, int) and k != "pid":
                        dst[k] = dst.get(k, 0) + v
        if self.mail is not None:  # the proxy's counters beside the workers' (mail.uninspected from TLS ports)
            dst = totals.setdefault("mail", {})
            for k, v in self.mail.counters.items():
                dst[k] = dst.get(k, 0) + v
        return {
            "pid": os.getpid(),
            "started": self.started,
            "uptime": time.time() - self.started,
            "fail_mode": self.cfg.dataplane.fail_mode,
            "ready": len(self.ready),
            "workers": {str(i): {"pid": p.pid, "alive": p.is_alive(), "restarts": self.restarts.get(i, 0),
                                 "generation": self.gens.worker_gen.get(i, 0),
                                 "queue_settings": self.worker_stats.get(i, {}).get("worker", {}).get("queue_settings")}
                        for i, p in self.procs.items()},
            "generation": self.gens.generation,
            "successors": {str(i): {"pid": p.pid, "generation": g} for i, (g, p) in self.successors.items()},
            "alarms_written": self.eve.written,
            "kernel_firewall_alarms": self.nflog_count,
            # what the installed ruleset hands to the workers (docs/dataplane.md, "The kernel keeps...")
            "queued": {"packets": self.needs[0], "empty_acks": self.needs[1]},
            "threat_sets": self._threat_sets_status(),
            "reloads": {**self.reloads, "seconds": self.gens.seconds},
            "engines": self.reload_summary,
            "counters": totals,
            "center": self.center.status() if self.center is not None else {"enabled": self.cfg.center.enabled, "error": self.center_error},
            "updates": self.updates.status() if self.updates is not None else {"enabled": False},
            "upgrade": self.upgrader.status() if self.upgrader is not None else {"enabled": False},
            "blockpage": self.blockpage.status() if self.blockpage is not None else None,
            "mail_proxy": self.mail.status() if self.mail is not None else None,
        }

    def _write_status(self) -> None:
        path = self.log_dir / "status.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.status(), indent=1))
        os.replace(tmp, path)

    # -- operations center link (issue 5) -------------------------------------------------------
    def _start_center(self, cfg: AgentConfig | None = None) -> None:
        """Every EVE record also goes to the durable spool; threads check in, drain it and run port checks.

        The EVE listener only appends to an in-memory queue (the spool's writer thread commits), so
        an unreachable center or a slow disk never holds up the alarm path.
        """
        cfg = cfg or self.cfg
        if not cfg.center.enabled:
            return
        from agent.link.center import CenterLink
        from agent.link.spool import SpoolError

        self._start_tasks(cfg)
        try:
            self.center = CenterLink(cfg, config_path=self.config_path, alarm_sink=self.eve.write, tasks=self.tasks,
                                     bundles=self._live_bundles)
            if self.upgrader is not None:
                self.center.on_checkin.append(self.upgrader.checked_in)
            if self.remote_config is not None:
                self.center.on_checkin.append(self.remote_config.checked_in)
                self.center.config_revision = self.remote_config.current_revision
        except SpoolError as exc:
            self.center_error = str(exc)
            log.error("operations center link not started (alarms stay in eve.json only): %s", exc)
            return
        self.eve.listeners.append(self.center.spool.submit)
        self._wire_spam_reports(cfg)
        self.center.start()

    def _send_spam_reports(self, reports: list[dict[str, Any]]) -> None:
        center = self.center  # the current link (a reload replaces it)
        if center is None:
            raise ConnectionError("no operations center link")
        center.send_spam_reports(reports)

    def _wire_spam_reports(self, cfg: AgentConfig) -> None:
        """The anti-spam engine's reports of clear spam go to a durable queue beside the alarm spool,
        sent over the center link; the digests the center lists come back with each check-in
        (docs/mail.md, "What a box reports to the center")."""
        from pathlib import Path

        from agent.link.spamreport import ReportQueue, ReportSender, connect

        spam = next((e for e in self.engines if e.name == "antispam" and hasattr(e, "add_known_digests")), None)
        if spam is None or self.center is None:
            return
        try:
            if getattr(self, "spam_reports", None) is None:
                self.spam_reports = ReportQueue(Path(cfg.center.spool.path).parent / "spamreports.db")
                self.spam_sender = ReportSender(self.spam_reports, self._send_spam_reports)
                self.spam_sender.start()
        except Exception as exc:  # noqa: BLE001 - sqlite3.Error and the like: the mail goes on unreported
            log.error("spam report queue not started (nothing reported to the center): %s", exc)
            return
        connect(spam, self.center, self.spam_reports)

    def _start_tasks(self, cfg: AgentConfig) -> None:
        """The task runner and its handlers, once; statuses go through whichever link is current."""
        if self.tasks is not None:
            return
        from agent.lifecycle.remoteconfig import RemoteConfig
        from agent.link.tasks import TaskRunner

        def report(task_id: int, status: str, detail: str) -> None:
            if self.center is None:
                raise RuntimeError("operations center link not running")
            self.center.report_task(task_id, status, detail)

        state_dir = Path(cfg.center.state_file).parent
        self.tasks = TaskRunner(state_dir, report)
        self.remote_config = RemoteConfig(
            self.config_path, state_dir, runner=self.tasks, reload=self.reload_and_wait, alarm=self.eve.write,
            backup=lambda rev, blob: self.center.send_backup(rev, blob),
            reset_connections=lambda: self.center.reset_connections() if self.center is not None else None,
            credential=lambda: self.center.cred if self.center is not None else None)
        self.tasks.register("config", self.remote_config.handle_task)
        self.remote_config.start()
        self._start_upgrades(cfg)

    # -- signed bundles and software upgrades (issue 6) -------------------------------------------
    def _start_upgrades(self, cfg: AgentConfig) -> None:
        """Task kinds "upgrade" (agent/lifecycle/upgrade.py) and "update_check" (bundles now)."""
        self.tasks.register("update_check", self._update_check_task)
        if not cfg.upgrade.enabled:
            def refuse(params: dict[str, Any], progress: Any) -> None:
                raise RuntimeError("この機器ではソフトウェア更新が無効です / upgrades are disabled on this box (upgrade.enabled)")

            self.tasks.register("upgrade", refuse)
            return
        from agent.lifecycle.upgrade import Upgrader

        self.upgrader = Upgrader(cfg, emit=self.eve.write, post=self.tasks.post,
                                 task_id_of=lambda: (self.tasks.current or {}).get("task_id"),
                                 request_exit=self._request_exit)
        self.tasks.register("upgrade", self.upgrader.handle_task)

    def _update_check_task(self, params: dict[str, Any], progress: Any) -> None:
        if self.updates is None:
            raise RuntimeError("署名更新が無効です / signed updates are disabled on this box (updates.enabled)")
        kinds = params.get("kinds")
        self.updates.check_now()
        progress("done", f"update check started{' for ' + ', '.join(map(str, kinds)) if kinds else ''}")

    def _start_updates(self) -> None:
        if not self.cfg.updates.enabled:
            return
        from agent.lifecycle.updates import UpdateService

        self.updates = UpdateService(self.cfg, emit=self.eve.write, request_reload=self._bundle_reload)
        self.updates.start()

    def _bundle_reload(self) -> None:
        """A bundle went live: reload; ``on_reload_result`` learns the outcome of this very reload
        (every worker runs its generation, or it failed), from the main loop."""
        ticket = self.gens.ask()
        self._waiters.append((ticket, self.updates.on_reload_result))
        self.reload_requested.set()
        return None

    def _live_bundles(self) -> dict[str, str]:
        return self.updates.live_versions() if self.updates is not None else {}

    def _request_exit(self, code: int) -> None:
        """Stop with ``code`` (75: the launcher starts the release ``current`` now names)."""
        self.exit_code = code
        self.stopping.set()

    def reload_and_wait(self, timeout: float = 60.0) -> tuple[bool, str]:
        """Ask the main loop for a reload (the SIGHUP path) and wait until every worker runs the
        generation this request became (not any reload's replies).

        ``timeout`` is how long a reload may go without progress: past it, a reload whose new
        workers are still alive and building their engines (ET Open on a busy box takes minutes)
        is waited for, up to RELOAD_WAIT_CAP, so a slow but good reload is never reported failed
        (which would roll a good configuration back)."""
        ticket = self.gens.ask()
        self.reload_requested.set()
        start = time.monotonic()
        while not self.stopping.is_set():
            ok, detail = self.gens.outcome(ticket, list(self.procs))
            if ok is not None:
                return ok, detail
            now = time.monotonic()
            if now - start > timeout and not (now - start < RELOAD_WAIT_CAP and self._reload_building(ticket)):
                return False, f"workers did not confirm the reload within {now - start:.0f} s"
            time.sleep(0.1)
        return False, "the agent is stopping"

    def _reload_building(self, ticket: int) -> bool:
        """The ticket's reload is under way: not yet taken up by the main loop, or successors of its
        generation (or a later one) are alive."""
        got = self.gens.generation_of(ticket)
        if got is None:
            return True
        gen = got[0]
        return gen >= 0 and any(g >= gen and p.is_alive() for g, p in list(self.successors.values()))

    def _reload_center(self, cfg: AgentConfig) -> None:
        """A changed ``center:`` section takes effect on reload: the link restarts on the same spool."""
        running = self.center.cfg.center if self.center is not None else None
        if running == cfg.center or (running is None and not cfg.center.enabled):
            return
        if self.center is not None:
            self.eve.listeners.remove(self.center.spool.submit)
            self.center.stop()
            self.center = None
        self.center_error = ""
        self._start_center(cfg)
        log.info("reload: operations center link %s", "restarted" if self.center is not None else "stopped")

    # -- main ------------------------------------------------------------------------------
    def _start_services(self) -> None:
        """The local services the running engines ask for: the block page, served where sinkholed
        names land (the box's management address). Every engine that offers one is asked, in
        pipeline order; the first that blocked the name decides the page (ATP's C&C page before the
        web filter's category page)."""
        from agent.dataplane.blockpage import BlockPageServer, first_block

        pages = [svc for e in self.engines for svc in e.local_services() if isinstance(svc, BlockPage)]
        sheet = self.cfg.settings_sheet
        if not pages or sheet is None:
            return
        try:
            self.blockpage = BlockPageServer(sheet.management_ip.split("/")[0], 80, first_block(pages),
                                             box=pages[-1].box or pages[0].box)
            self.blockpage.start()
        except OSError as exc:
            log.warning("block page server not started: %s", exc)

    def _start_mail(self, cfg: AgentConfig, engines: list[Engine]) -> None:
        """The mail proxy (engines.mail): scans with the web antivirus's clamd (engines.av), asks the
        anti-spam engine when one runs; its REDIRECT stays only while it answers."""
        from agent.dataplane.mailproxy import MailService
        from filters.av.engine import Antivirus
        from filters.mail.engine import MailSecurity

        engine = next((e for e in engines if isinstance(e, MailSecurity)), None)
        if engine is None:
            return
        av = Antivirus()
        av.configure(cfg.engines.get("av") or {}, cfg.engine_context())
        clamd = {"socket": av.conf.clamd_socket, "max_concurrent": av.conf.max_concurrent, "database": av.database}
        antispam = next((e for e in engines if e.name == "antispam" and hasattr(e, "check_message")), None)
        try:
            self.mail = MailService(engine, bridge=cfg.bridge.name, clamd=clamd, emit=self.eve.write, antispam=antispam,
                                    home_net=tuple(cfg.home_net)).start()
        except Exception as exc:  # mail passes uninspected; the rest of the box goes on
            log.error("mail proxy not started (mail passes uninspected): %s", exc)
            self.mail = None

    def _stop_mail(self) -> None:
        if self.mail is not None:
            self.mail.stop()
            self.mail = None

    def run(self) -> int:
        self.bridge.up()
        self._sync_kernel_sets()
        self._start_services()
        self._start_mail(self.cfg, self.engines)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stopping.set())
        signal.signal(signal.SIGHUP, self._on_sighup)
        self._start_center()
        if self.upgrader is not None:  # after the spool listener: its start-up report reaches the center
            self.upgrader.start()
        self._start_updates()
        nflog = threading.Thread(target=self._nflog_loop, name="nflog", daemon=True)
        nflog.start()
        self.subreaper = become_subreaper()
        for i in range(self.spec.workers):
            self._spawn(i)
        wd = sdnotify.watchdog_interval()
        last_wd = last_status = 0.0
        while not self.stopping.is_set():
            try:
                self._handle(self.out.get(timeout=0.5))
            except _queue.Empty:
                pass
            except (EOFError, OSError):
                log.exception("worker queue failed")
            now = time.monotonic()
            if self.reload_requested.is_set():
                self.reload_requested.clear()
                # a request already served by the reload that just ran (it asked, then set the
                # event) needs no second one: each reload builds every worker anew
                if self._hup or self.gens.asked > self.gens.served_upto:
                    self._hup = False
                    self._reload()
            self._check_workers()
            self._check_waiters()
            if wd and now - last_wd >= wd and all(p.is_alive() for p in self.procs.values()):
                sdnotify.notify("WATCHDOG=1")
                last_wd = now
            if now - last_status >= 2.0:
                self._write_status()
                last_status = now
        self._shutdown()
        return self.exit_code

    def _on_sighup(self, *_: Any) -> None:
        self._hup = True
        self.reload_requested.set()

    def _reload(self) -> None:
        """SIGHUP: validate the config file, reinstall the kernel ruleset, have workers rebuild engines."""
        self.reloads["requested"] += 1
        try:
            cfg = load_effective_config(self.config_path)
            BridgeControl(cfg).install_ruleset()  # needs everything until the new workers say (_sync_needs)
        except Exception as exc:  # nothing changes on a bad config
            log.error("reload refused, the running configuration stays: %s", exc)
            self.reloads["failed"] += 1
            self.reloads["last_error"] = str(exc)
            self.gens.refuse(str(exc))
            self._check_waiters()
            return
        self.needs = (True, True)
        self.policy = firewall_policy(cfg)
        self.cfg = cfg  # what successors and restarted workers start from
        self._reload_kernel_sets(cfg)
        self._reload_center(cfg)
        if (cfg.engines.get("mail"), cfg.engines.get("av")) != (self._mail_sections or (None, None)):
            self._stop_mail()
            self._start_mail(cfg, build_engines(cfg, path=self.config_path))
            self._mail_sections = (cfg.engines.get("mail"), cfg.engines.get("av"))
        gen = self.gens.begin()
        for index in range(self.spec.workers):
            pending = self.successors.pop(index, None)
            if pending is not None:  # superseded before it was ready
                pending[1].terminate()
                self.retiring.append((time.monotonic() + RETIRE_GRACE, pending[1]))
            self._spawn(index, successor=True)
        log.info("reload: configuration valid, generation %d: new workers are building their engines", gen)

    def _reload_kernel_sets(self, cfg: AgentConfig) -> None:
        """Rebuild the engines that own kernel sets (e.g. a threat-intel feed update) and swap their
        sets; the daemon's other engines stay as they are (the workers rebuild their own)."""
        owners = kernel_set_owners()
        fresh = [e for e in build_engines(cfg, path=self.config_path, prepare=False) if type(e) in owners]
        for engine in fresh:
            engine.prepare()
        stale = [e for e in self.engines if type(e) not in owners]
        # The engines prepared at start served only to fork workers from: after a reload no worker
        # starts from them again (successors build their own, a dead worker's replacement is forked
        # from a live one), so the daemon keeps just the kernel sets' owners and gives the rest back.
        self.engines = fresh
        self._sync_kernel_sets()
        if stale:
            del stale
            release_memory()

    def _shutdown(self) -> None:
        sdnotify.notify("STOPPING=1")
        if self.updates is not None:
            self.updates.stop()
        if self.upgrader is not None:
            self.upgrader.stop()
        if self.blockpage is not None:
            self.blockpage.stop()
        self._stop_mail()
        others = [p for _, p in self.successors.values()] + [p for _, p in self.retiring]
        for p in list(self.procs.values()) + others:
            p.terminate()
        deadline = time.time() + 5
        for p in list(self.procs.values()) + others:
            p.join(max(0.1, deadline - time.time()))
            if p.is_alive():
                p.kill()
        while True:  # drain the last alarms and stats
            try:
                self._handle(self.out.get(timeout=0.2))
            except (_queue.Empty, EOFError, OSError):
                break
        if self.center is not None:
            self.center.stop()  # commits what is queued for the spool; unsent alarms wait there
        if getattr(self, "spam_reports", None) is not None:
            self.spam_sender.stop()
            self.spam_reports.close()  # commits the reports still in memory; unsent ones wait there
        self._write_status()
        self.eve.close()
        log.info("agent stopped; the bridge keeps forwarding (%s)", "fail-open" if self.spec.fail_open else "fail-closed")

