"""The heartbeat's health report: host metrics from psutil, the agent's counters, versions, spool, port check."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import psutil

from agent.config import AgentConfig

log = logging.getLogger(__name__)

IFACE_FIELDS = (("rx_bytes", "bytes_recv"), ("tx_bytes", "bytes_sent"), ("rx_packets", "packets_recv"),
                ("tx_packets", "packets_sent"), ("errin", "errin"), ("errout", "errout"),
                ("dropin", "dropin"), ("dropout", "dropout"))
# Engine summary keys that are large or only useful locally (kept out of the heartbeat); an
# engine's "signatures" go to the heartbeat's own signatures instead.
SUMMARY_SKIP = frozenset({"errors", "signatures"})


def agent_version() -> str:
    try:
        from importlib.metadata import version

        return version("vcr-agent")
    except Exception:  # noqa: BLE001 - running from a checkout without metadata
        return "0.0.0+unknown"


def prime_cpu() -> None:
    """psutil's CPU figure is "since the previous call": start the clock so the first heartbeat has one."""
    psutil.cpu_percent(interval=None)


def host_metrics(cfg: AgentConfig) -> dict[str, Any]:
    """CPU, memory, disk of the state folder, load, uptime and the bridge's interface counters."""
    state_dir = Path(cfg.center.state_file).parent
    while not state_dir.exists() and state_dir != state_dir.parent:
        state_dir = state_dir.parent
    out: dict[str, Any] = {
        "cpu_percent": psutil.cpu_percent(interval=None),  # since the previous call (first call: 0.0)
        "memory_percent": psutil.virtual_memory().percent,
        "disk_percent": psutil.disk_usage(str(state_dir)).percent,
        "load": [round(x, 2) for x in os.getloadavg()],
        "uptime_s": int(time.time() - psutil.boot_time()),
    }
    wanted = (cfg.bridge.lan_port, cfg.bridge.wan_port, cfg.bridge.name)
    counters = psutil.net_io_counters(pernic=True)
    out["interfaces"] = {
        name: {ours: int(getattr(counters[name], theirs)) for ours, theirs in IFACE_FIELDS}
        for name in wanted if name in counters
    }
    # which counters are which side: the center's installation check needs both ports' traffic
    out["bridge"] = {"name": cfg.bridge.name, "lan_port": cfg.bridge.lan_port, "wan_port": cfg.bridge.wan_port}
    return out


def read_status(cfg: AgentConfig) -> dict[str, Any]:
    """The daemon's last status.json (written every 2 s), or {} when there is none."""
    try:
        return json.loads((Path(cfg.logging.dir) / "status.json").read_text())
    except (OSError, ValueError):
        return {}


def engines_report(status: dict[str, Any]) -> dict[str, Any]:
    """Per engine: the loaded-rule summary and the workers' counters summed."""
    out: dict[str, Any] = {}
    for name, summary in (status.get("engines") or {}).items():
        out[name] = {"summary": {k: v for k, v in (summary or {}).items() if k not in SUMMARY_SKIP}}
    for section, counters in (status.get("counters") or {}).items():
        out.setdefault(section, {})["counters"] = counters
    return out


class Versions:
    """Agent, config and signature versions; the file digests are cached by modification time."""

    def __init__(self, cfg: AgentConfig, config_path: str = "") -> None:
        self.cfg = cfg
        self.config_path = config_path
        self._cache: dict[tuple[str, ...], tuple[tuple[float, ...], str]] = {}

    def _digest(self, files: list[str]) -> str:
        key = tuple(sorted(files))
        try:
            stamps = tuple(os.stat(f).st_mtime for f in key)
        except OSError:
            return ""
        hit = self._cache.get(key)
        if hit and hit[0] == stamps:
            return hit[1]
        h = hashlib.sha256()
        for f in key:
            try:
                h.update(Path(f).read_bytes())
            except OSError:
                return ""
        value = h.hexdigest()[:16]
        self._cache[key] = (stamps, value)
        return value

    def config(self) -> dict[str, Any]:
        digest = self._digest([self.config_path]) if self.config_path else ""
        return {"sha256": digest}

    def signatures(self, status: dict[str, Any]) -> dict[str, str]:
        """{label: version} that the running engines name in their summaries' ``signatures``."""
        sigs: dict[str, str] = {}
        for summary in (status.get("engines") or {}).values():
            named = summary.get("signatures") if isinstance(summary, dict) else None
            if isinstance(named, dict):
                for label, version in named.items():
                    if version:
                        sigs.setdefault(str(label), str(version))
        return sigs


def heartbeat_body(cfg: AgentConfig, versions: Versions, *, now_iso: str, spool: dict[str, Any],
                   portcheck: dict[str, Any] | None, link: dict[str, Any] | None = None,
                   bundles: dict[str, str] | None = None) -> dict[str, Any]:
    """The check-in body of the API (docs/opscenter-api.md); ``bundles``: live signed-bundle versions."""
    status = read_status(cfg)
    try:
        health = host_metrics(cfg)
    except Exception as exc:  # noqa: BLE001 - a heartbeat without metrics beats none
        log.warning("host metrics unavailable: %s", exc)
        health = {"error": str(exc)}
    body: dict[str, Any] = {
        "sent_at": now_iso,
        "agent_version": agent_version(),
        "config_revision": 0,
        "signatures": {**versions.signatures(status), **(bundles or {})},
        "health": health,
        "engines": engines_report(status),
        "spool": {"pending": spool.get("pending", 0), "dropped": spool.get("dropped", 0),
                  "dropped_by_severity": spool.get("dropped_by_severity", {})},
        "portcheck": portcheck,
    }
    extra: dict[str, Any] = {"config": versions.config(),
                             "agent": {k: status.get(k) for k in ("ready", "fail_mode", "alarms_written", "uptime") if k in status}}
    if link:
        extra["link"] = link
    body["health"]["agent"] = extra
    return body
