"""Agent configuration: the YAML schema, loading and validation (nothing is applied from a bad file)."""
from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from filters.engine import ConfigError, EngineContext

DEFAULT_CONFIG = Path("/etc/vcr-agent/vcr-agent.yaml")
BUSY_POLL_DEFAULT = 100  # µs; why this value: docs/dataplane.md ("Busy-poll")
BULK_QUEUE_DEFAULT_KIB = 64  # why this value: docs/dataplane.md ("The bulk queue")
BUSY_POLL_MAX = 1000  # a longer window is a worker that spins, not one that bridges a gap


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SettingsSheet(_Strict):
    """What the customer filled in on the settings sheet (設定シート)."""

    management_ip: str = Field(description="the UTM's fixed IP with prefix, e.g. 192.0.2.2/24")
    gateway: str = Field(description="default gateway: the customer's router")
    dns: list[str] = Field(default_factory=list, description="DNS servers, written to bridge.resolv_conf")
    management_ipv6: str | None = Field(None, description="optional IPv6 management address with prefix")
    gateway_ipv6: str | None = Field(None, description="optional IPv6 default gateway")
    install_address: str = Field("", description="where the box is installed (informational)")
    contact: str = Field("", description="the customer's contact (informational)")

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
    name: str = Field("br0", description="the bridge interface")
    lan_port: str = Field("lan0", description="the port on the office side")
    wan_port: str = Field("wan0", description="the port on the router side")
    resolv_conf: str = Field("/etc/resolv.conf", description="where the settings sheet's DNS servers are written")
    state_file: str = Field("/run/vcr-agent/bridge.json",
                            description="what `bridge up` changed, so `bridge down` removes exactly that")

    @field_validator("name", "lan_port", "wan_port")
    @classmethod
    def _ifname(cls, v: str) -> str:
        if not v or len(v) > 15 or any(c in v for c in " /\t\n:"):
            raise ValueError("expected a Linux interface name (1-15 characters, no spaces, '/' or ':')")
        return v


class FlowSettings(_Strict):
    max_flows: int = Field(200_000, ge=1000,
                           description="flow table size per worker; the least recently used flow is evicted beyond it")
    stream_depth: int = Field(1 << 20, ge=0,
                              description="bytes per direction inspected before offload (also enforced in the "
                                          "kernel with connbytes)")
    max_pending_bytes: int = Field(256 * 1024, ge=0, description="out-of-order bytes buffered per stream")
    memcap: int = Field(128 << 20, ge=0,
                        description="bytes one worker holds for all its flows: TCP reassembly (at most half) and "
                                    "app-layer parser state (buffers, headers, decoded bodies); past it the flows "
                                    "holding the most lose app-layer inspection (an EVE anomaly each); 0 = no cap")
    memcap_policy: Literal["pass", "drop"] = Field(
        "pass", description="a flow cut at the memcap: pass (fail open: packet and stream rules still run, no "
                            "app-layer events) or drop the flow")
    midstream: bool = Field(True, description="pick up TCP flows whose handshake was not seen")
    timeouts: dict[Literal["tcp_new", "tcp_established", "tcp_closed", "udp", "icmp", "other"], float] = Field(
        default_factory=dict,
        description="idle timeouts in seconds by flow state; unset ones keep filters/flow.py's DEFAULT_TIMEOUTS "
                    "(tcp_new 30, tcp_established 3600, tcp_closed 10, udp 120, icmp 30, other 60)"
    )


class HoldSettings(_Strict):
    max_packets_per_flow: int = Field(64, ge=1,
                                      description="packets held per flow while an engine's I/O decides its verdict")
    max_bytes: int = Field(8 << 20, ge=1024, description="all held packets of one worker, in bytes")
    default_timeout: float = Field(2.0, gt=0, le=60, description="seconds a flow is held when the engine gives no timeout")
    overflow: Literal["drop", "pass"] = Field(
        "drop", description="packets beyond the hold bounds: drop (TCP retransmits) or pass uninspected")


class DefragConfig(_Strict):
    policy: Literal["bsd", "linux", "first", "last", "windows", "solaris"] = Field(
        "bsd", description="whose bytes win where IP fragments overlap (target-based, as Suricata's host-os-policy; "
                           "bsd is Suricata's default)")
    timeout: float = Field(60.0, gt=0, le=600, description="seconds a datagram's fragments wait for the rest")
    timeout_action: Literal["drop", "pass"] = Field(
        "drop", description="fragments of a datagram that never completed: drop (the receiver could not have "
                            "rebuilt it either) or pass uninspected")
    max_trackers: int = Field(16384, ge=1, description="datagrams being reassembled at once, per worker")
    max_frags: int = Field(256, ge=1, le=8192, description="fragments of one datagram; beyond it the datagram is "
                                                            "given up (dataplane.hold.overflow applies)")
    memcap: int = Field(32 << 20, ge=65536, description="bytes of held fragments, per worker")


class Dataplane(_Strict):
    fail_mode: Literal["open", "closed"] = Field(
        "open", description="open: traffic passes while the agent is down or its queue is full; "
                            "closed: new flows are blocked and a full queue drops")
    workers: int | Literal["auto"] = Field("auto", description="NFQUEUE workers; auto = one per core")
    queue_base: int = Field(0, ge=0, le=65000, description="first NFQUEUE number; worker i uses queue_base + i and, for its bulk queue, queue_base + workers + i")
    queue_maxlen: int = Field(4096, ge=64, description="kernel queue length per worker, in packets")
    busy_poll_us: int = Field(
        BUSY_POLL_DEFAULT, ge=0, le=BUSY_POLL_MAX,
        description="microseconds a worker keeps looking at its queue after a packet before it sleeps (0: off); "
                    "saves the wake-up of an idle CPU when the next packet comes that soon, costs CPU otherwise")
    bulk_queue_kib: int = Field(
        BULK_QUEUE_DEFAULT_KIB, ge=0, le=1 << 20,
        description="KiB (both directions, headers included) after which a connection's packets go to its worker's "
                    "second queue, served after the first (in rounds that leave it a fifth of the worker when the first never "
                    "empties): new connections and small exchanges are not kept waiting behind downloads (0: one queue)")
    nflog_group: int = Field(17, ge=1, le=65535, description="NFLOG group of the kernel's firewall and blocklist alarms")
    on_engine_error: Literal["pass", "drop"] = Field("pass", description="verdict for a flow whose engine raised")
    on_malformed: Literal["pass", "drop"] = Field("pass", description="verdict for packets that cannot be parsed")
    flows: FlowSettings = Field(FlowSettings(), description="the flow table and stream reassembly of each worker")
    hold: HoldSettings = Field(HoldSettings(), description="packets held while an engine waits for I/O (a lookup)")
    defrag: DefragConfig = Field(DefragConfig(), description="IP fragments: how they are held and reassembled")

    def worker_count(self) -> int:
        return self.workers if isinstance(self.workers, int) else max(1, os.cpu_count() or 1)


class HttpSettings(_Strict):
    request_body_limit: int = Field(100 * 1024, ge=0, description="bytes of request body kept for inspection")
    response_body_limit: int = Field(100 * 1024, ge=0, description="bytes of response body kept for inspection")
    decompress_layers: int = Field(2, ge=0, le=8, description="nested Content-Encoding layers decoded")


class AppLayerSettings(_Strict):
    http: HttpSettings = Field(HttpSettings(), description="the HTTP parser: body limits and decompression")


class Logging(_Strict):
    dir: str = Field("/var/log/vcr-agent", description="folder of eve.json and status.json")
    eve_rotate_bytes: int = Field(10 << 20, ge=4096, description="eve.json is rotated at this size, in bytes")
    eve_keep: int = Field(5, ge=1, le=100, description="rotated eve.json files kept")
    level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="log level of the agent's own log (journal)")


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
    path: str = Field("/var/lib/vcr-agent/spool.db", description="the alarm spool (SQLite, WAL)")
    max_events: int = Field(100_000, ge=100,
                            description="events kept while the center is unreachable; beyond it the "
                                        "lowest-severity events go first and a gap event is sent")
    max_bytes: int = Field(64 << 20, ge=64 * 1024, description="bytes of event JSON kept")


class CenterDrain(_Strict):
    rate: float = Field(50.0, gt=0, le=100_000, description="events a second sent to the center at most")
    batch: int = Field(100, ge=1, le=5000, description="events per request")


class CenterPortcheck(_Strict):
    enabled: bool = Field(True, description="run the port check at start-up and every interval inside vcr-agent run")
    interval: float = Field(3600.0, ge=10, description="seconds between periodic port checks")
    timeout: float = Field(3.0, gt=0, le=60, description="seconds per test")
    endpoints: dict[int, str] = Field(default_factory=dict,
                                      description="port -> host for the TCP tests (443, 80, 22, 6060, 6061); "
                                                  "default: the center's host")
    dns_name: str | None = Field(None,
                                 description="the name the DNS test (UDP 53) resolves; default: the center's host name")

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

    enabled: bool = Field(False, description="run the link inside vcr-agent run")
    url: str = Field("", validate_default=True,
                     description="https://host[:port] of the operations center (https only); required when enabled")
    ca_file: str = Field("/etc/vcr-agent/center-ca.pem",
                         description="the CA the center's certificate must chain to (nothing else is trusted)")
    state_file: str = Field("/var/lib/vcr-agent/center.json",
                            description="the device credential, written by vcr-agent activate (mode 0600)")
    serial: str = Field("", description="the box's serial number for activation; default: the DMI product serial")
    heartbeat_interval: float = Field(60.0, ge=1, le=86400,
                                      description="seconds between check-ins when the center does not say (next_checkin)")
    jitter: float = Field(1.0, ge=0, le=1,
                          description="check-in spread: uniform(interval x (1 - jitter), interval x (1 + "
                                      "jitter)); 1.0 = full jitter")
    backoff_base: float = Field(2.0, gt=0, le=3600,
                                description="seconds; after n failures the wait is uniform(0, min(backoff_cap, "
                                            "backoff_base x 2^n))")
    backoff_cap: float = Field(600.0, ge=1, le=86400, description="longest backoff, in seconds")
    request_timeout: float = Field(15.0, gt=0, le=300, description="seconds per request")
    clock_tolerance: float = Field(300.0, gt=0, description="seconds of clock difference reported as a problem")
    ntp_servers: list[str] = Field(default_factory=lambda: ["ntp.nict.jp"],
                                   description="SNTP servers: the port check (UDP 123) and the clock check after TLS failures")
    spool: CenterSpool = Field(CenterSpool(), description="where alarms wait while the center is unreachable")
    drain: CenterDrain = Field(CenterDrain(), description="how fast the spooled alarms are sent to the center")
    portcheck: CenterPortcheck = Field(CenterPortcheck(), description="the check of the ports the box needs open to the center")
    clock_skew_s: float = Field(0.0, description="TESTS ONLY: pretend the local clock is off by this many seconds")

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
    """Signed bundle updates through the center's TUF repository (agent/lifecycle/updates.py)."""

    enabled: bool = Field(False, description="check, install and load signed bundles; config loads use the live bundles")
    repository_url: str = Field("",
                                description="the TUF repository (metadata/ and targets/ below it); default: "
                                            "<center.url>/tuf/")
    ca_file: str = Field("", description="CA of the repository server's certificate; default: center.ca_file")
    trusted_root: str = Field("/var/lib/vcr-agent/tuf/root.json",
                              description="the trusted root metadata, installed at activation or shipped with the box")
    metadata_dir: str = Field("/var/lib/vcr-agent/tuf/metadata", description="the TUF client's metadata cache")
    download_dir: str = Field("/var/lib/vcr-agent/tuf/downloads",
                              description="where bundles are downloaded before they are checked")
    bundles_dir: str = Field("/var/lib/vcr-agent/bundles",
                             description="<kind>/<version>/, the <kind>/current symlink and <kind>/state.json")
    kinds: list[Literal["ips", "threatintel", "webcat", "av", "antispam"]] = Field(
        default_factory=lambda: ["ips", "threatintel", "webcat", "av", "antispam"],
        description="bundle kinds the periodic check updates (releases are the upgrade's)")
    min_rule_ratio: float = Field(0.5, ge=0, le=1,
                                  description="a bundle with fewer rules than this x the live one is refused")
    check_interval: float = Field(3600.0, ge=10, le=7 * 86400, description="seconds between checks (with jitter)")
    keep_versions: int = Field(3, ge=2, le=20,
                               description="versions kept on disk per kind (the live and the previous one at least)")
    timeout: float = Field(30.0, gt=0, le=600, description="seconds per HTTP request")
    ntp_servers: list[str] | None = Field(None,
                                          description="host[:port], asked before metadata expiry is trusted; "
                                                      "default: center.ntp_servers")
    max_clock_skew: float | None = Field(None, gt=0,
                                         description="seconds of clock offset beyond which updates wait with a "
                                                     "clock alarm; default: center.clock_tolerance")


class RemoteConfigSettings(_Strict):
    """Remote configuration by the center (agent/lifecycle/remoteconfig.py). Protected: not changeable remotely."""

    confirm_window: float = Field(300.0, ge=5, le=3600,
                                  description="seconds a new revision has to prove the link works (a check-in), else rollback")
    history: int = Field(30, ge=20, le=1000, description="revisions kept in the local history")
    reload_timeout: float = Field(60.0, gt=0, le=600, description="seconds a reload may go without progress before it counts as failed (and the revision is rolled back); a reload whose new workers are still building their engines is waited for, up to 15 minutes")


class Upgrade(_Strict):
    """Software upgrades: signed releases (TUF kind "release") installed A/B in the maintenance window
    (agent/lifecycle/upgrade.py; the version-independent start-up and rollback is agent/launcher.py)."""

    enabled: bool = Field(False, description="accept upgrade tasks from the center")
    releases_dir: str = Field("/var/lib/vcr-agent/releases",
                              description="<version>/, current, previous, upgrade.json, state.json; the launcher's --root")
    min_free_mb: int = Field(200, ge=0,
                             description="MB of free space the releases folder must keep, checked before and "
                                         "after the download")
    health_timeout: float = Field(300.0, ge=5, le=86400,
                                  description="seconds the new version has to check in with the center, from "
                                              "its first start")
    max_starts: int = Field(3, ge=1, le=20,
                            description="starts of the new version (crash, import error) before the launcher rolls back")
    keep_releases: int = Field(2, ge=2, le=10, description="releases kept on disk (the live and the previous one at least)")
    restart_command: list[str] = Field(default_factory=lambda: ["systemctl", "--no-block", "restart", "vcr-agent.service"],
                                       description="[] = exit with code 75 and let the launcher start the new version")
    restart_grace: float = Field(120.0, ge=5, le=3600,
                                 description="seconds the old process waits to be restarted before it switches "
                                             "back (restart_failed)")
    precheck: bool = Field(True, description="import the new release's code in a subprocess before switching to it")


class AgentConfig(_Strict):
    settings_sheet: SettingsSheet | None = Field(None, description="what the customer filled in on the settings sheet (設定シート)")
    bridge: Bridge = Field(Bridge(), description="the bridge and its two ports")
    dataplane: Dataplane = Field(Dataplane(), description="NFQUEUE workers, fail mode, flow table and holds")
    logging: Logging = Field(Logging(), description="eve.json, status.json and the agent's own log")
    app_layer: AppLayerSettings = Field(AppLayerSettings(), description="the application-layer parsers")
    home_net: list[str] = Field(default_factory=lambda: ["192.0.2.0/24"],
                                description="the office networks: the IPS's $HOME_NET, and how pcap mode tells LAN from WAN")
    engines: dict[str, dict[str, Any]] = Field(default_factory=dict,
                                               description="engine name -> its section, each validated by the engine's own model "
                                                           "(filters/registry.py: firewall, atp, ips, webfilter, probe)")
    center: Center = Field(Center(), description="the link to the operations center")
    updates: Updates = Field(Updates(), description="signed signature-bundle updates")
    upgrade: Upgrade = Field(Upgrade(), description="signed software upgrades")
    remote_config: RemoteConfigSettings = Field(RemoteConfigSettings(), description="configuration changes sent by the center")

    @field_validator("home_net")
    @classmethod
    def _nets(cls, v: list[str]) -> list[str]:
        for n in v:
            ipaddress.ip_network(n, strict=False)
        return v

    def engine_context(self) -> EngineContext:
        """What engines may use from outside their own sections: home_net, the management addresses."""
        sheet = self.settings_sheet
        return EngineContext(
            home_net=tuple(self.home_net),
            management_ipv4=sheet.management_ip.split("/")[0] if sheet else "",
            management_ipv6=(sheet.management_ipv6 or "").split("/")[0] if sheet else "",
        )


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
    """Read and validate the agent's config file, each engine's section through its own model.

    Nothing else: the live signed bundles and the engines' own checks against the disk (rule files,
    category folders) are the explicit next steps of agent/engines.py (``load_effective_config``)."""
    from filters.registry import check_sections  # late import: the registry imports every engine

    data = load_yaml(path)
    resolve_relative_paths(data, Path(path).resolve().parent)
    cfg = parse_config(data, path=str(path))
    check_sections(cfg.engines, path=str(path))
    return cfg
