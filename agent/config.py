"""Agent configuration: the YAML schema, loading and validation (nothing is applied from a bad file)."""
from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from filters.engine import ConfigError

DEFAULT_CONFIG = Path("/etc/vcr-agent/vcr-agent.yaml")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SettingsSheet(_Strict):
    """What the customer filled in on the settings sheet (設定シート)."""

    management_ip: str = Field(description="the UTM's fixed IP with prefix, e.g. 192.0.2.2/24")
    gateway: str
    dns: list[str] = Field(default_factory=list)
    management_ipv6: str | None = None
    gateway_ipv6: str | None = None
    install_address: str = ""
    contact: str = ""

    @field_validator("management_ip", "management_ipv6")
    @classmethod
    def _iface(cls, v: str | None) -> str | None:
        if v is not None:
            if "/" not in v:
                raise ValueError("expected an address with prefix length, e.g. 192.0.2.2/24")
            ipaddress.ip_interface(v)
        return v

    @field_validator("gateway", "gateway_ipv6")
    @classmethod
    def _addr(cls, v: str | None) -> str | None:
        if v is not None:
            ipaddress.ip_address(v)
        return v

    @field_validator("dns")
    @classmethod
    def _dns(cls, v: list[str]) -> list[str]:
        for a in v:
            ipaddress.ip_address(a)
        return v


class Bridge(_Strict):
    name: str = "br0"
    lan_port: str = "lan0"
    wan_port: str = "wan0"
    resolv_conf: str = "/etc/resolv.conf"
    state_file: str = "/run/vcr-agent/bridge.json"  # what `bridge up` changed, for `bridge down`

    @field_validator("name", "lan_port", "wan_port")
    @classmethod
    def _ifname(cls, v: str) -> str:
        if not v or len(v) > 15 or any(c in v for c in " /\t\n:"):
            raise ValueError("expected a Linux interface name (1-15 characters, no spaces, '/' or ':')")
        return v


class FlowSettings(_Strict):
    max_flows: int = Field(200_000, ge=1000)
    stream_depth: int = Field(1 << 20, ge=0, description="bytes per direction inspected before offload")
    max_pending_bytes: int = Field(256 * 1024, ge=0)
    midstream: bool = True
    timeouts: dict[Literal["tcp_new", "tcp_established", "tcp_closed", "udp", "icmp", "other"], float] = Field(
        default_factory=dict
    )


class HoldSettings(_Strict):
    max_packets_per_flow: int = Field(64, ge=1)
    max_bytes: int = Field(8 << 20, ge=1024, description="all held packets of one worker, in bytes")
    default_timeout: float = Field(2.0, gt=0, le=60)
    overflow: Literal["drop", "pass"] = "drop"


class Dataplane(_Strict):
    fail_mode: Literal["open", "closed"] = "open"
    workers: int | Literal["auto"] = "auto"
    queue_base: int = Field(0, ge=0, le=65000)
    queue_maxlen: int = Field(4096, ge=64)
    nflog_group: int = Field(17, ge=1, le=65535)
    on_engine_error: Literal["pass", "drop"] = "pass"
    on_malformed: Literal["pass", "drop"] = "pass"
    flows: FlowSettings = FlowSettings()
    hold: HoldSettings = HoldSettings()

    def worker_count(self) -> int:
        return self.workers if isinstance(self.workers, int) else max(1, os.cpu_count() or 1)


class HttpSettings(_Strict):
    request_body_limit: int = Field(100 * 1024, ge=0, description="bytes of request body kept for inspection")
    response_body_limit: int = Field(100 * 1024, ge=0, description="bytes of response body kept for inspection")
    decompress_layers: int = Field(2, ge=0, le=8, description="nested Content-Encoding layers decoded")


class AppLayerSettings(_Strict):
    http: HttpSettings = HttpSettings()


class Logging(_Strict):
    dir: str = "/var/log/vcr-agent"
    eve_rotate_bytes: int = Field(10 << 20, ge=4096)
    eve_keep: int = Field(5, ge=1, le=100)
    level: Literal["debug", "info", "warning", "error"] = "info"


def _host_name(v: str) -> str:
    """A DNS name or an IP address (what the port check and the SNTP client connect to)."""
    v = v.strip()
    try:
        ipaddress.ip_address(v)
        return v
    except ValueError:
        pass
    labels = v.rstrip(".").split(".")
    if not v or len(v) > 253 or not all(0 < len(x) <= 63 and x.replace("-", "").isalnum() and x[0] != "-" for x in labels):
        raise ValueError(f"expected a host name or IP address, got {v!r}")
    return v


class CenterSpool(_Strict):
    path: str = "/var/lib/vcr-agent/spool.db"
    max_events: int = Field(100_000, ge=100, description="events kept while the center is unreachable")
    max_bytes: int = Field(64 << 20, ge=64 * 1024, description="bytes of event JSON kept")


class CenterDrain(_Strict):
    rate: float = Field(50.0, gt=0, le=100_000, description="events a second sent to the center at most")
    batch: int = Field(100, ge=1, le=5000, description="events per request")


class CenterPortcheck(_Strict):
    enabled: bool = True
    interval: float = Field(3600.0, ge=10, description="seconds between periodic port checks")
    timeout: float = Field(3.0, gt=0, le=60)
    endpoints: dict[int, str] = Field(default_factory=dict, description="port -> host (default: the center's host)")
    dns_name: str | None = None  # resolved for the UDP 53 test; default: the center's host name

    @field_validator("endpoints")
    @classmethod
    def _endpoints(cls, v: dict[int, str]) -> dict[int, str]:
        for port, host in v.items():
            if not 1 <= port <= 65535:
                raise ValueError(f"port {port} is not 1-65535")
            _host_name(host)
        return v

    @field_validator("dns_name")
    @classmethod
    def _dns_name(cls, v: str | None) -> str | None:
        return None if v is None else _host_name(v)


class Center(_Strict):
    """The operations-center link (issue 5): activation, check-ins, alarm delivery, port check."""

    enabled: bool = False
    url: str = Field("", validate_default=True, description="https://host[:port] of the operations center")
    ca_file: str = "/etc/vcr-agent/center-ca.pem"
    state_file: str = "/var/lib/vcr-agent/center.json"
    serial: str = ""  # the box's serial number; default: the DMI product serial
    heartbeat_interval: float = Field(60.0, ge=1, le=86400)
    jitter: float = Field(1.0, ge=0, le=1, description="1.0 = full jitter: uniform(0, 2 x interval)")
    backoff_base: float = Field(2.0, gt=0, le=3600)
    backoff_cap: float = Field(600.0, ge=1, le=86400)
    request_timeout: float = Field(15.0, gt=0, le=300)
    clock_tolerance: float = Field(300.0, gt=0, description="seconds of clock difference reported as a problem")
    ntp_servers: list[str] = Field(default_factory=lambda: ["ntp.nict.jp"])
    spool: CenterSpool = CenterSpool()
    drain: CenterDrain = CenterDrain()
    portcheck: CenterPortcheck = CenterPortcheck()
    clock_skew_s: float = 0.0  # TESTS ONLY: pretend the local clock is off by this much

    @field_validator("url")
    @classmethod
    def _url(cls, v: str, info: ValidationInfo) -> str:
        from urllib.parse import urlsplit

        if not v:
            if info.data.get("enabled"):
                raise ValueError("required when center.enabled is true, e.g. https://ops.example.jp")
            return v
        parts = urlsplit(v)
        if parts.scheme != "https":
            raise ValueError("must start with https:// (the link always uses TLS)")
        if not parts.hostname:
            raise ValueError("has no host name")
        try:
            parts.port
        except ValueError as exc:
            raise ValueError(str(exc)) from None
        if parts.query or parts.fragment or parts.username:
            raise ValueError("expected https://host[:port][/path] without user, query or fragment")
        _host_name(parts.hostname)
        return v.rstrip("/")

    @field_validator("ntp_servers")
    @classmethod
    def _ntp(cls, v: list[str]) -> list[str]:
        return [_host_name(h) for h in v]

    @field_validator("serial")
    @classmethod
    def _serial(cls, v: str) -> str:
        if v and (len(v) > 64 or not all(c.isalnum() or c in "-_." for c in v)):
            raise ValueError("expected up to 64 letters, digits, '-', '_' or '.'")
        return v

    @property
    def host(self) -> str:
        from urllib.parse import urlsplit

        return urlsplit(self.url).hostname or ""


class Updates(_Strict):
    """Signed bundle updates through the center's TUF repository (agent/updates.py)."""

    enabled: bool = False
    repository_url: str = ""  # default: <center.url>/tuf/
    ca_file: str = ""  # default: center.ca_file
    trusted_root: str = "/var/lib/vcr-agent/tuf/root.json"  # installed at activation / shipped with the box
    metadata_dir: str = "/var/lib/vcr-agent/tuf/metadata"
    download_dir: str = "/var/lib/vcr-agent/tuf/downloads"
    bundles_dir: str = "/var/lib/vcr-agent/bundles"  # <kind>/<version>/ and the <kind>/current symlink
    kinds: list[Literal["ips", "threatintel", "webcat", "av", "antispam"]] = Field(
        default_factory=lambda: ["ips", "threatintel", "webcat", "av", "antispam"])
    min_rule_ratio: float = Field(0.5, ge=0, le=1, description="a bundle with fewer rules than this x the live one is refused")
    check_interval: float = Field(3600.0, ge=10, le=7 * 86400)
    keep_versions: int = Field(3, ge=2, le=20)
    timeout: float = Field(30.0, gt=0, le=600)
    ntp_servers: list[str] | None = None  # host[:port]; default: center.ntp_servers
    max_clock_skew: float | None = Field(None, gt=0)  # seconds; default: center.clock_tolerance


class RemoteConfigSettings(_Strict):
    """Remote configuration by the center (agent/remoteconfig.py). Protected: not changeable remotely."""

    confirm_window: float = Field(300.0, ge=5, le=3600,
                                  description="seconds a new revision has to prove the link works (a check-in), else rollback")
    history: int = Field(30, ge=20, le=1000, description="revisions kept in the local history")
    reload_timeout: float = Field(60.0, gt=0, le=600, description="seconds the workers have to confirm a reload")


class Upgrade(_Strict):
    """Software upgrades: signed releases (TUF kind "release") installed A/B in the maintenance window
    (agent/upgrade.py; the version-independent start-up and rollback is agent/launcher.py)."""

    enabled: bool = False
    releases_dir: str = "/var/lib/vcr-agent/releases"  # <version>/, current, previous, upgrade.json
    min_free_mb: int = Field(200, ge=0, description="free space the releases folder must keep after unpacking")
    health_timeout: float = Field(300.0, ge=5, le=86400, description="seconds the new version has to check in")
    max_starts: int = Field(3, ge=1, le=20, description="starts of the new version before it is rolled back")
    keep_releases: int = Field(2, ge=2, le=10, description="releases kept on disk (the live and the previous one at least)")
    restart_command: list[str] = Field(default_factory=lambda: ["systemctl", "--no-block", "restart", "vcr-agent.service"],
                                       description="[] = exit with code 75 and let the launcher start the new version")
    restart_grace: float = Field(120.0, ge=5, le=3600, description="seconds the old process waits to be restarted")
    precheck: bool = True  # import the new release's code in a subprocess before switching to it


class AgentConfig(_Strict):
    settings_sheet: SettingsSheet | None = None
    bridge: Bridge = Bridge()
    dataplane: Dataplane = Dataplane()
    logging: Logging = Logging()
    app_layer: AppLayerSettings = AppLayerSettings()
    home_net: list[str] = Field(default_factory=lambda: ["192.0.2.0/24"])
    engines: dict[str, dict[str, Any]] = Field(default_factory=dict)
    center: Center = Center()
    updates: Updates = Updates()
    upgrade: Upgrade = Upgrade()
    remote_config: RemoteConfigSettings = RemoteConfigSettings()

    @field_validator("home_net")
    @classmethod
    def _nets(cls, v: list[str]) -> list[str]:
        for n in v:
            ipaddress.ip_network(n, strict=False)
        return v


def _loc(loc: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in loc)


def parse_config(data: Any, *, path: str = "<config>") -> AgentConfig:
    """Validate a parsed YAML document; raise ConfigError naming path, key and problem."""
    if not isinstance(data, dict):
        raise ConfigError("expected a mapping at the top level", path=path)
    try:
        return AgentConfig.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif err["type"] == "missing":
            msg = "required key is missing"
        more = len(exc.errors()) - 1
        if more:
            msg += f" (and {more} more problem{'s' if more > 1 else ''})"
        raise ConfigError(msg, path=path, key=_loc(err["loc"])) from None


def load_yaml(path: str | os.PathLike[str]) -> Any:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", path=str(p)) from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"not valid YAML{where}: {problem}", path=str(p)) from None


# Keys holding file paths; a relative path is taken relative to the config file's folder.
PATH_KEYS = (
    ("engines", "ips", "rule_files"),
    ("engines", "ips", "classification"),
    ("engines", "webfilter", "database"),
    ("center", "ca_file"),
    ("center", "state_file"),
    ("center", "spool", "path"),
    ("updates", "trusted_root"),
    ("engines", "atp", "feeds"),
)


def resolve_relative_paths(data: Any, base: Path) -> None:
    for keys in PATH_KEYS:
        node = data
        for k in keys[:-1]:
            node = node.get(k) if isinstance(node, dict) else None
        if not isinstance(node, dict) or keys[-1] not in node:
            continue
        value = node[keys[-1]]
        def fix(v: Any) -> Any:
            if isinstance(v, dict) and "path" in v:  # a feed given as {path: ..., format: ...}
                return {**v, "path": fix(v["path"])}
            return str(base / v) if isinstance(v, str) and v and not os.path.isabs(v) else v

        node[keys[-1]] = [fix(v) for v in value] if isinstance(value, list) else fix(value)


def load_config(path: str | os.PathLike[str]) -> AgentConfig:
    """Read and validate the agent's config file, including each engine's own section."""
    from filters.registry import build_engines  # late import: registry imports engines

    data = load_yaml(path)
    resolve_relative_paths(data, Path(path).resolve().parent)
    cfg = parse_config(data, path=str(path))
    if cfg.updates.enabled:  # the engines load the live signed bundles (agent/updates.py)
        from agent.updates import apply_live_bundles

        if apply_live_bundles(data, cfg.updates.bundles_dir):
            cfg = parse_config(data, path=str(path))
    build_engines(cfg, path=str(path), prepare=False)  # validates every engine section; raises ConfigError
    return cfg
