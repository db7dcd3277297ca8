"""Probe engine: holds chosen flows while the agent asks an HTTP endpoint for their verdict.

A diagnostic for the deferred-verdict path (the same path the web filter's cloud lookups, the
antivirus and the sandbox use): flows to the configured ports are held until the endpoint
answers ``allow`` or ``block``, or the timeout fires.
"""
from __future__ import annotations

from typing import Any, ClassVar, Iterable, Mapping

from filters.engine import EngineContext, Action, ConfigError, Decision, Engine, Hold, Hook, IORequest, Verdict
from filters.packet import Packet

SID = 9_100_001


class Probe(Engine):
    name: ClassVar[str] = "probe"
    hooks: ClassVar[frozenset[Hook]] = frozenset({Hook.FLOW_START})

    def __init__(self) -> None:
        super().__init__()
        self.ports: frozenset[int] = frozenset()
        self.url = ""
        self.timeout = 1.0
        self.on_timeout = Action.PASS

    def configure(self, section: Mapping[str, Any], ctx: EngineContext = EngineContext()) -> None:
        unknown = set(section) - {"enabled", "ports", "url", "timeout", "on_timeout"}
        if unknown:
            raise ConfigError("unknown key", key=sorted(unknown)[0])
        ports = section.get("ports", [])
        if not isinstance(ports, list) or not all(isinstance(p, int) and 0 < p < 65536 for p in ports):
            raise ConfigError("expected a list of port numbers (1-65535)", key="ports")
        url = section.get("url", "")
        if section.get("enabled", False) and not (isinstance(url, str) and url.startswith(("http://", "https://"))):
            raise ConfigError("expected an http:// or https:// URL", key="url")
        timeout = section.get("timeout", 1.0)
        if not isinstance(timeout, (int, float)) or not 0 < timeout <= 60:
            raise ConfigError("expected seconds between 0 and 60", key="timeout")
        on_timeout = section.get("on_timeout", "pass")
        if on_timeout not in ("pass", "drop"):
            raise ConfigError("expected pass or drop", key="on_timeout")
        self.ports, self.url, self.timeout = frozenset(ports), url, float(timeout)
        self.on_timeout = Action.DROP if on_timeout == "drop" else Action.PASS

    def on_flow_start(self, flow: Any, pkt: Packet) -> Iterable[Decision] | None:
        if flow.server_port not in self.ports:
            return None
        self.count("holds")
        req = IORequest("http_get", {"url": self.url, "params": {"server": flow.server_ip, "port": flow.server_port}})
        return [Hold(self.name, req, timeout=self.timeout, on_timeout=self.on_timeout, reason="probe verdict timeout")]

    def on_io_result(self, flow: Any, request: IORequest, result: Any, error: str | None) -> Iterable[Decision] | None:
        answer = (result or "").strip() if error is None else ""
        self.count(f"answers.{answer or 'error'}")
        if answer == "block":
            return [Verdict(Action.DROP, self.name, rule_id=SID, signature="VCR probe: endpoint said block", category="Probe")]
        if answer != "allow" and self.on_timeout.blocks:
            return [Verdict(Action.DROP, self.name, rule_id=SID, signature="VCR probe: no usable answer", category="Probe", reason=error or answer)]
        return None
