"""Probe engine: holds chosen flows while the agent asks an HTTP endpoint for their verdict.

A diagnostic for the deferred-verdict path (the same path the web filter's cloud lookups, the
antivirus and the sandbox use): flows to the configured ports are held until the endpoint
answers ``allow`` or ``block``, or the timeout fires.
"""
from __future__ import annotations

from typing import Annotated, Any, ClassVar, Iterable, Literal, Mapping

from pydantic import Field, model_validator

from filters.engine import Action, ConfigError, Decision, Engine, EngineConfig, EngineContext, Hold, IORequest, Verdict
from filters.packet import Packet

SID = 9_100_001


class ProbeConfig(EngineConfig):
    """``engines.probe``: a diagnostic of the deferred-verdict path."""

    ports: list[Annotated[int, Field(gt=0, lt=65536)]] = Field(
        default_factory=list, description="server ports whose new flows are held until the endpoint answers")
    url: str = Field("", description="http:// or https:// endpoint asked for each held flow (?server=IP&port=N); "
                                     "it answers allow or block. Required when enabled")
    timeout: float = Field(1.0, gt=0, le=60, description="seconds a flow is held at most")
    on_timeout: Literal["pass", "drop"] = Field("pass", description="verdict when the endpoint does not answer in time")

    @model_validator(mode="after")
    def _url(self) -> "ProbeConfig":
        if self.enabled and not self.url.startswith(("http://", "https://")):
            raise ConfigError("expected an http:// or https:// URL", key="url")
        return self


class Probe(Engine):
    Config = ProbeConfig
    name: ClassVar[str] = "probe"

    def __init__(self) -> None:
        super().__init__()
        self.ports: frozenset[int] = frozenset()
        self.url = ""
        self.timeout = 1.0
        self.on_timeout = Action.PASS

    def configure(self, section: Mapping[str, Any], ctx: EngineContext = EngineContext()) -> None:
        conf = self.check_section(section)
        self.ports, self.url, self.timeout = frozenset(conf.ports), conf.url, float(conf.timeout)
        self.on_timeout = Action.DROP if conf.on_timeout == "drop" else Action.PASS

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
