"""The agent daemon (``vcr-agent run``): bridge ruleset, one worker per queue, alarms, stats, systemd."""
from __future__ import annotations

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
from agent.bridge import BridgeControl, firewall_policy, port_sides, spec_from_config
from agent.config import AgentConfig
from agent.evelog import EveLog
from agent.ruleset import parse_nflog_prefix
from agent.worker import WorkerSpec, worker_main
from filters import eve
from filters.registry import build_engines
from filters.engine import Action, Verdict
from filters.firewall import BLOCKLIST_SID, CATEGORY, SID_BASE
from filters.packet import Side, ntop, parse_ip

log = logging.getLogger(__name__)

RESTART_BACKOFF = (0.5, 1.0, 2.0, 5.0, 10.0)


class Daemon:
    def __init__(self, cfg: AgentConfig, *, config_path: str = "") -> None:
        self.cfg = cfg
        self.config_path = config_path
        self.reload_requested = threading.Event()
        self.reloads: dict[str, Any] = {"requested": 0, "workers_reloaded": 0, "failed": 0, "last_error": ""}
        self.spec = spec_from_config(cfg)
        self.log_dir = Path(cfg.logging.dir)
        self.eve = EveLog(self.log_dir / "eve.json", rotate_bytes=cfg.logging.eve_rotate_bytes, keep=cfg.logging.eve_keep)
        self.ctx = mp.get_context("fork")
        self.out: Any = self.ctx.Queue()
        self.procs: dict[int, mp.process.BaseProcess] = {}
        self.restarts: dict[int, int] = {}
        self.worker_stats: dict[int, dict[str, Any]] = {}
        self.ready: set[int] = set()
        self.stopping = threading.Event()
        self.started = time.time()
        self.nflog_count = 0
        self.bridge = BridgeControl(cfg)
        self.policy = firewall_policy(cfg)
        # Engines are prepared once here (rule compilation) and inherited by the forked workers.
        self.engines = build_engines(cfg)
        # Compiled rules are long-lived: keep them out of the collector (no multi-100 ms pauses
        # scanning them) and untouched after fork (the workers share their pages).
        gc.collect()
        gc.freeze()
        self.reload_summary: dict[str, Any] = {e.name: e.summary() for e in self.engines}
        self.blockpage: Any = None
        self.threat_sets: dict[str, Any] = {}
        self.center: Any = None  # the operations-center link (agent/center.py), when enabled
        self.center_error = ""
        self.tasks: Any = None  # agent.tasks.TaskRunner: the center's tasks (issue 6); outlives link restarts
        self.remote_config: Any = None  # agent.remoteconfig.RemoteConfig (task kind "config")
        self.updates: Any = None  # agent.updates.UpdateService (signed bundles), when updates.enabled
        self._bundle_wait = 0  # workers still to confirm the reload a bundle activation asked for
        self.upgrader: Any = None  # agent.upgrade.Upgrader (task kind "upgrade"), when upgrade.enabled
        self.exit_code = 0  # 75 (agent.launcher.RESTART_CODE): the launcher starts the new release

    # -- workers ---------------------------------------------------------------------------
    def _spawn(self, index: int) -> None:
        spec = WorkerSpec(index, self.spec.queue_base + index, self.config_path)
        p = self.ctx.Process(
            target=worker_main,
            # After a reload the engines prepared at start-up are stale: a restarted worker builds
            # its own from the current configuration.
            args=(self.cfg, spec, self.out, logging.getLogger().level, None if self.reloads["requested"] else self.engines),
            name=f"vcr-worker-{index}",
            daemon=True,
        )
        p.start()
        self.procs[index] = p

    def _check_workers(self) -> None:
        for index, p in list(self.procs.items()):
            if p.is_alive() or self.stopping.is_set():
                continue
            n = self.restarts.get(index, 0)
            log.error("worker %d exited (code %s); restarting (restart #%d)", index, p.exitcode, n + 1)
            self.restarts[index] = n + 1
            self.ready.discard(index)
            time.sleep(RESTART_BACKOFF[min(n, len(RESTART_BACKOFF) - 1)])
            self._spawn(index)

    # -- NFLOG (kernel firewall decisions) -------------------------------------------------
    def _nflog_loop(self) -> None:
        try:
            from agent.nflog import NflogReader

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
        if kind == "ti":
            self._threat_alarm(pkt)
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

    # -- threat protection (C&C) in the kernel ------------------------------------------------
    def _atp(self) -> Any:
        from filters.atp import Atp

        return next((e for e in self.engines if isinstance(e, Atp)), None)

    def _sync_threat_sets(self, atp: Any) -> None:
        """Load the C&C addresses into the kernel sets (empty sets when ATP is off)."""
        from agent.bridge import update_threat_sets

        if atp is None:
            nets: tuple[list[str], list[str]] = ([], [])
            ports: tuple[list[str], list[str]] = ([], [])
        else:
            nets, ports = atp.intel.ipset_entries(), atp.intel.ipset_ip_port_entries(("tcp", "udp"))
        try:
            loaded = update_threat_sets(nets, ports)
        except Exception as exc:  # the previous sets stay live
            log.error("threat-intel ipsets not updated (the previous ones stay): %s", exc)
            return
        self.threat_sets = {"version": atp.intel.version if atp else "", "entries": loaded}
        log.info("threat-intel ipsets loaded: %s", loaded)

    def _threat_alarm(self, pkt: Any) -> None:
        """A kernel drop of a listed C&C address: name the LAN host, the indicator and the threat."""
        from filters.atp import CATEGORY as ATP_CATEGORY, SID_IP

        atp = self._atp()
        ind = None
        # The listed end is the remote one: the destination of a LAN host's attempt, or the
        # source of an inbound packet from the C&C.
        ends = [(pkt.dst_addr, pkt.dport, pkt.src_addr), (pkt.src_addr, pkt.sport, pkt.dst_addr)]
        if pkt.side is Side.WAN:
            ends.reverse()
        remote, remote_port, lan = ends[0]
        for r, rp, other in ends:
            ind = atp.intel.match_ip(r, rp or None) if atp is not None else None
            if ind is not None:
                remote, remote_port, lan = r, rp, other
                break
        details: dict[str, Any] = {"lan_host": ntop(lan), "where": "kernel", "seen": f"{ntop(remote)}:{remote_port}"}
        if ind is not None:
            details.update(indicator=ind.value, indicator_type=ind.kind.value, threat=ind.threat, source=ind.source)
        threat = ind.threat if ind is not None else "listed address"
        v = Verdict(Action.DROP, "atp", rule_id=SID_IP, signature=f"VCR ATP: connection with a listed C&C address ({threat})",
                    category=ATP_CATEGORY, severity=1, reason="kernel", metadata={"atp": details})
        self.nflog_count += 1
        self.eve.write(eve.alert_record(v, pkt.ts, pkt, None, blocked=True))

    # -- messages from workers ----------------------------------------------------------------
    def _handle(self, msg: tuple[Any, ...]) -> None:
        kind = msg[0]
        if kind == "eve":
            self.eve.write(msg[1])
        elif kind == "stats":
            self.worker_stats[msg[1]] = msg[2]
        elif kind == "reloaded":
            self.reloads["workers_reloaded"] += 1
            self.reload_summary = msg[2]
            if self._bundle_wait > 0:
                self._bundle_wait -= 1
                if self._bundle_wait == 0 and self.updates is not None:
                    self.updates.on_reload_result(True)
        elif kind == "reload_failed":
            self.reloads["failed"] += 1
            self.reloads["last_error"] = msg[2]
            if self._bundle_wait > 0 and self.updates is not None:
                self._bundle_wait = 0
                self.updates.on_reload_result(False, str(msg[2]))
        elif kind == "ready":
            self.ready.add(msg[1])
            if len(self.ready) == len(self.procs):
                log.info("all %d workers ready", len(self.procs))
                sdnotify.notify(f"READY=1\nSTATUS=inspecting on {len(self.procs)} queues")

    def status(self) -> dict[str, Any]:
        totals: dict[str, dict[str, int]] = {}
        for stats in self.worker_stats.values():
            for section, counters in stats.items():
                dst = totals.setdefault(section, {})
                for k, v in counters.items():
                    if isinstance(v, int) and k != "pid":
                        dst[k] = dst.get(k, 0) + v
        return {
            "pid": os.getpid(),
            "started": self.started,
            "uptime": time.time() - self.started,
            "fail_mode": self.cfg.dataplane.fail_mode,
            "ready": len(self.ready),
            "workers": {str(i): {"pid": p.pid, "alive": p.is_alive(), "restarts": self.restarts.get(i, 0),
                                 "queue_settings": self.worker_stats.get(i, {}).get("worker", {}).get("queue_settings")}
                        for i, p in self.procs.items()},
            "alarms_written": self.eve.written,
            "kernel_firewall_alarms": self.nflog_count,
            "threat_sets": self.threat_sets,
            "reloads": self.reloads,
            "engines": self.reload_summary,
            "counters": totals,
            "center": self.center.status() if self.center is not None else {"enabled": self.cfg.center.enabled, "error": self.center_error},
            "updates": self.updates.status() if self.updates is not None else {"enabled": False},
            "upgrade": self.upgrader.status() if self.upgrader is not None else {"enabled": False},
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
        from agent.center import CenterLink
        from agent.spool import SpoolError

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
        self.center.start()

    def _start_tasks(self, cfg: AgentConfig) -> None:
        """The task runner and its handlers, once; statuses go through whichever link is current."""
        if self.tasks is not None:
            return
        from agent.remoteconfig import RemoteConfig
        from agent.tasks import TaskRunner

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
        """Task kinds "upgrade" (agent/upgrade.py) and "update_check" (bundles now)."""
        self.tasks.register("update_check", self._update_check_task)
        if not cfg.upgrade.enabled:
            def refuse(params: dict[str, Any], progress: Any) -> None:
                raise RuntimeError("この機器ではソフトウェア更新が無効です / upgrades are disabled on this box (upgrade.enabled)")

            self.tasks.register("upgrade", refuse)
            return
        from agent.upgrade import Upgrader

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
        from agent.updates import UpdateService

        self.updates = UpdateService(self.cfg, emit=self.eve.write, request_reload=self._bundle_reload)
        self.updates.start()

    def _bundle_reload(self) -> None:
        """A bundle went live: reload; the outcome reaches ``on_reload_result`` from ``_handle``."""
        self._bundle_wait = len(self.procs)
        self.reload_requested.set()
        return None

    def _live_bundles(self) -> dict[str, str]:
        return self.updates.live_versions() if self.updates is not None else {}

    def _request_exit(self, code: int) -> None:
        """Stop with ``code`` (75: the launcher starts the release ``current`` now names)."""
        self.exit_code = code
        self.stopping.set()

    def reload_and_wait(self, timeout: float = 60.0) -> tuple[bool, str]:
        """Ask the main loop for a reload (the SIGHUP path) and wait until every worker has rebuilt."""
        before = dict(self.reloads)
        n = sum(1 for p in self.procs.values() if p.is_alive())
        self.reload_requested.set()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self.stopping.is_set():
            if self.reloads["failed"] > before["failed"]:
                return False, str(self.reloads["last_error"])
            if (self.reloads["requested"] > before["requested"]
                    and self.reloads["workers_reloaded"] - before["workers_reloaded"] >= n):
                return True, f"{n} workers reloaded"
            time.sleep(0.1)
        return False, f"workers did not confirm the reload within {timeout:.0f} s"

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
    def _start_blockpage(self) -> None:
        """Serve the block page where sinkholed names land: the box's management address."""
        from agent.blockpage import BlockPageServer
        from filters.webfilter.engine import WebFilter

        wf = next((e for e in self.engines if isinstance(e, WebFilter)), None)
        sheet = self.cfg.settings_sheet
        if wf is None or sheet is None:
            return

        def describe(host: str) -> tuple[list[str], str]:
            d = wf.decide_host(host)
            return sorted(d.categories & wf.policy.blocked) or sorted(d.categories), "deny list" if d.reason == "deny list" else "category"

        try:
            self.blockpage = BlockPageServer(sheet.management_ip.split("/")[0], 80, describe, box=wf.box)
            self.blockpage.start()
        except OSError as exc:
            log.warning("block page server not started: %s", exc)

    def run(self) -> int:
        self.bridge.up()
        self._sync_threat_sets(self._atp())
        self._start_blockpage()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stopping.set())
        signal.signal(signal.SIGHUP, lambda *_: self.reload_requested.set())
        self._start_center()
        if self.upgrader is not None:  # after the spool listener: its start-up report reaches the center
            self.upgrader.start()
        self._start_updates()
        nflog = threading.Thread(target=self._nflog_loop, name="nflog", daemon=True)
        nflog.start()
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
                self._reload()
            self._check_workers()
            if wd and now - last_wd >= wd and all(p.is_alive() for p in self.procs.values()):
                sdnotify.notify("WATCHDOG=1")
                last_wd = now
            if now - last_status >= 2.0:
                self._write_status()
                last_status = now
        self._shutdown()
        return self.exit_code

    def _reload(self) -> None:
        """SIGHUP: validate the config file, reinstall the kernel ruleset, have workers rebuild engines."""
        from agent.config import load_config

        self.reloads["requested"] += 1
        try:
            cfg = load_config(self.config_path)
            BridgeControl(cfg).install_ruleset()
        except Exception as exc:  # nothing changes on a bad config
            log.error("reload refused, the running configuration stays: %s", exc)
            self.reloads["failed"] += 1
            self.reloads["last_error"] = str(exc)
            if self._bundle_wait > 0 and self.updates is not None:
                self._bundle_wait = 0
                self.updates.on_reload_result(False, str(exc))
            return
        self.policy = firewall_policy(cfg)
        self.cfg = cfg  # what a restarted worker starts from
        self._reload_threat_intel(cfg)
        self._reload_center(cfg)
        for p in self.procs.values():
            if p.pid:
                os.kill(p.pid, signal.SIGHUP)
        log.info("reload: configuration valid, workers are rebuilding their engines")

    def _reload_threat_intel(self, cfg: AgentConfig) -> None:
        """Re-read the threat-intel feeds (a feed update) and swap the kernel sets."""
        from filters.atp import Atp

        section = cfg.engines.get("atp") or {}
        atp = None
        if section.get("enabled", False):
            atp = Atp()
            atp.configure(section, self._engine_context(cfg))
            atp.prepare()
        self.engines = [e for e in self.engines if not isinstance(e, Atp)] + ([atp] if atp else [])
        self._sync_threat_sets(atp)

    @staticmethod
    def _engine_context(cfg: AgentConfig) -> Any:
        from filters.registry import engine_context

        return engine_context(cfg)

    def _shutdown(self) -> None:
        sdnotify.notify("STOPPING=1")
        if self.updates is not None:
            self.updates.stop()
        if self.upgrader is not None:
            self.upgrader.stop()
        if self.blockpage is not None:
            self.blockpage.stop()
        for p in self.procs.values():
            p.terminate()
        deadline = time.time() + 5
        for p in self.procs.values():
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
        self._write_status()
        self.eve.close()
        log.info("agent stopped; the bridge keeps forwarding (%s)", "fail-open" if self.spec.fail_open else "fail-closed")

