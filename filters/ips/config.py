"""The IPS engine's config section (``engines.ips``) as a pydantic model: its keys, types and ranges.

What needs the disk (rule files matching their globs, a readable classification file) is checked
by ``Ips.configure``.
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from filters.engine import EngineConfig

STREAM_TAIL = 4096  # bytes of a stream kept to find matches spanning two chunks


class IpsVars(BaseModel):
    """Suricata's ``vars``: address and port groups the rules name ($HOME_NET, $HTTP_PORTS...)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    address_groups: dict[str, str] | None = Field(
        None, alias="address-groups",
        description="name -> addresses, e.g. EXTERNAL_NET: '!$HOME_NET'; HOME_NET defaults to home_net")
    port_groups: dict[str, str] | None = Field(None, alias="port-groups", description="name -> ports, e.g. HTTP_PORTS: '80'")

    @field_validator("address_groups", "port_groups", mode="before")
    @classmethod
    def _text(cls, v: Any) -> Any:
        return {k: str(x) for k, x in v.items()} if isinstance(v, dict) else v


class IpsConfig(EngineConfig):
    """``engines.ips``: Suricata-compatible rules run inline."""

    rule_files: list[str] = Field(default_factory=list,
                                  description="rule files, globs allowed (each must match a file); the live ips "
                                              "bundle's rules are added to them")
    vars: IpsVars | None = Field(None, description="address-groups and port-groups, as in suricata.yaml")
    classification: str | None = Field(None, description="classification.config: classtype -> description and priority")
    stream_tail: int = Field(STREAM_TAIL, ge=0, le=1 << 20,
                             description="bytes of each stream direction kept to match content spanning two segments")
    encryption_handling: Literal["bypass", "full"] = Field(
        "bypass",
        description="once a TLS (or STARTTLS) handshake is over and its SNI, certificate and JA3/JA4 were "
                    "inspected: bypass = the rest of the flow is passed in the kernel, uninspected (Suricata's "
                    "encryption-handling: bypass); full = packet and stream rules keep reading the encrypted bytes "
                    "up to the stream depth")
    unmatchable_flows: Literal["bypass", "inspect"] = Field(
        "bypass",
        description="a flow no loaded rule can match any more (no packet, stream or IP-only rule fits its "
                    "protocol, addresses and ports, or only rules needing a flowbit nothing on it can set; no "
                    "app-layer rule for its app protocol, once that is known): bypass = the rest of the flow is "
                    "passed in the kernel; inspect = it stays in Python until it ends or reaches the stream "
                    "depth (a rule reload then reaches it)")
    kernel_prefilter: Literal["on", "off"] = Field(
        "on",
        description="inline: once a UDP or ICMP flow was seen both ways and every rule that could match a later "
                    "packet of it has a fast pattern in the packet payload, its packets holding none of those "
                    "patterns stay in the kernel (an xt_string chain per pattern set); off = every packet of "
                    "such a flow goes to a worker")
