"""Offline mode (``vcr-agent pcap``): the inline pipeline run over a capture file, like ``suricata -r``."""
from __future__ import annotations

import gc
import json
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from agent.config import AgentConfig, parse_config
from agent.offline.pcapfile import PcapReader
from agent.dataplane.performers import perform
from agent.dataplane.ruleset import EmptyAckSkip
from agent.dataplane.worker import pipeline_from_config
from filters import eve
from filters.engine import ConfigError
from filters.packet import Side, parse_linktype
from filters.pipeline import Outcome, Pipeline
from filters.registry import dataplane_needs

log = logging.getLogger(__name__)

# ``--set`` keys understood (Suricata's names) and where they go in our config.
SET_KEYS = {
    "stream.midstream": ("dataplane", "flows", "midstream"),
    "stream.reassembly.depth": ("dataplane", "flows", "stream_depth"),
    "app-layer.protocols.http.libhtp.default-config.response-body-decompress-layer-limit": ("app_layer", "http", "decompress_layers"),
    "app-layer.protocols.http.libhtp.default-config.request-body-limit": ("app_layer", "http", "request_body_limit"),
    "app-layer.protocols.http.libhtp.default-config.response-body-limit": ("app_layer", "http", "response_body_limit"),
    "app-layer.protocols.tls.encryption-handling": ("engines", "ips", "encryption_handling"),
}
MAX_SIDES = 65536  # source addresses whose side is remembered in a pcap run
SURICATA_HOME_NET = ["192.168.0.0/16", "10.0.0.0/8", "172.16.0.0/12"]
IGNORED_SET_KEYS = ("stream.inline", "stream.async-oneside")


@dataclass
class OfflineOptions:
    pcap: Path
    config: AgentConfig | None = None
    log_dir: Path | None = None
    simulate_ips: bool = False
    checksum_mode: str = "none"
    sets: list[str] = field(default_factory=list)


def _parse_value(text: str) -> Any:
    low = text.lower()
    if low in ("true", "yes", "on"):
        return True
    if low in ("false", "no", "off"):
        return False
    try:
        return int(text)
    except ValueError:
        return text


def apply_sets(cfg_data: dict[str, Any], sets: list[str]) -> dict[str, Any]:
    """Apply Suricata-style ``--set key=value`` options to a raw config mapping."""
    for item in sets:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError("expected key=value", path="--set", key=item)
        if key in IGNORED_SET_KEYS:
            log.info("--set %s: inline stream handling is always on here", key)
            continue
        path = SET_KEYS.get(key)
        if path is None:
            raise ConfigError(f"unsupported --set key (supported: {', '.join(sorted(SET_KEYS) + list(IGNORED_SET_KEYS))})", path="--set", key=key)
        node = cfg_data
        for p in path[:-1]:
            node = node.setdefault(p, {})
        node[path[-1]] = _parse_value(value)
    return cfg_data


def offline_config(base: dict[str, Any] | None, sets: list[str], rule_files: list[str] | None = None,
                   clamd: str | None = None) -> AgentConfig:
    """The config for a pcap run: the given file's, or (without -c) no firewall and Suricata's
    default variables; ``-S`` rule files replace the IPS engine's rule files; ``clamd`` (a socket)
    turns the antivirus on with that clamd; as inline, downloads up to its ``max_size`` are scanned
    whole past the IPS body limit and stream depth, which stay as configured (``Engine.file_depth``)."""
    # Without a config: what `suricata -r` does by default (no firewall, no midstream pickup,
    # Suricata's default HOME_NET).
    data = dict(base or {
        "engines": {"firewall": {"enabled": False}},
        "dataplane": {"flows": {"midstream": False}},
        "home_net": SURICATA_HOME_NET,
    })
    if rule_files:
        engines = data.setdefault("engines", {})
        ips = dict(engines.get("ips") or {})
        ips.update(enabled=True, rule_files=[str(Path(f).resolve()) for f in rule_files])
        engines["ips"] = ips
    if clamd:
        engines = data.setdefault("engines", {})
        av = dict(engines.get("av") or {})
        av.update(enabled=True, clamd_socket=str(Path(clamd).resolve()))
        engines["av"] = av
        # as inline: downloads are followed up to av.max_size past the IPS body limit (Engine.file_depth)
    return parse_config(apply_sets(data, sets), path="<pcap options>")


def _side(home: list[Any], addr: bytes) -> Side:
    import ipaddress

    ip = ipaddress.ip_address(addr) if addr else None
    if ip is None:
        return Side.UNKNOWN
    return Side.LAN if any(ip.version == n.version and ip in n for n in home) else Side.WAN


def run_pcap(opts: OfflineOptions, cfg: AgentConfig, out: IO[str] | None = None) -> dict[str, Any]:
    """Run the pipeline over ``opts.pcap``; EVE lines go to ``out`` (or LOGDIR/eve.json)."""
    import ipaddress

    home = [ipaddress.ip_network(n, strict=False) for n in cfg.home_net]
    fh: IO[str]
    if opts.log_dir is not None:
        opts.log_dir.mkdir(parents=True, exist_ok=True)
        fh = open(opts.log_dir / "eve.json", "w", encoding="utf-8")
    else:
        fh = out or sys.stdout
    pcap_cnt = 0
    sides: dict[bytes, Side] = {}  # source address -> LAN or WAN (home_net), worked out once per address
    current: dict[str, Any] = {}

    def emit(rec: dict[str, Any]) -> None:
        rec.setdefault("pcap_cnt", current.get("pcap_cnt", 0))
        fh.write(json.dumps(rec, ensure_ascii=False, separators=(",", ":")) + "\n")

    pipeline = pipeline_from_config(cfg, emit, ips=opts.simulate_ips)
    skip = empty_ack_skip(pipeline, opts.simulate_ips)
    frozen = _freeze()
    outcomes = {o: 0 for o in Outcome}
    last_ts = 0.0

    def report(reader: PcapReader) -> None:
        """Records the reader skipped (bad lengths...): one EVE anomaly each, the run goes on."""
        for offset, code, detail in reader.take_problems():
            rec = eve.anomaly_record(code, last_ts, None)
            rec["anomaly"].update(offset=offset, detail=detail)
            emit(rec)

    try:
        with PcapReader(opts.pcap) as reader:
            for rec in reader:
                report(reader)
                pcap_cnt += 1
                current["pcap_cnt"] = pcap_cnt
                last_ts = rec.ts
                pkt = parse_linktype(rec.data, rec.linktype, rec.ts)
                if pkt.version:
                    side = sides.get(pkt.src_addr)
                    if side is None:
                        side = _side(home, pkt.src_addr)
                        if len(sides) < MAX_SIDES:
                            sides[pkt.src_addr] = side
                    pkt.side = side
                if skip is not None and not skip.queued(pkt):
                    outcomes[Outcome.ACCEPT] += 1  # the kernel's accept
                    continue
                for rel in _process(pipeline, pkt, pcap_cnt):
                    outcomes[rel.outcome] += 1
            report(reader)
            for rel in pipeline.tick(float("inf")):
                outcomes[rel.outcome] += 1
            for rel in _finish_io(pipeline, last_ts):  # I/O asked for as the last flows ended
                outcomes[rel.outcome] += 1
            truncated = getattr(reader, "truncated", False)
            skipped = dict(reader.anomalies)
    finally:
        if frozen:
            gc.unfreeze()
        if fh is not out and fh is not sys.stdout:
            fh.close()
        else:
            fh.flush()
    return {
        "packets": pcap_cnt,
        "accepted": outcomes[Outcome.ACCEPT],
        "dropped": outcomes[Outcome.DROP] + outcomes[Outcome.REJECT],
        "truncated_file": truncated,
        "skipped_records": skipped,
        "stats": dict(pipeline.stats(), pcap={"skipped": skipped, "truncated": truncated,
                                              "empty_acks_kept": skip.kept if skip is not None else 0}),
    }


def _freeze() -> bool:
    """Keep what exists before the run (the loaded rules, hundreds of thousands of objects with
    ET Open) out of the collector's scans for the run, as the daemon and workers do once their
    rules are loaded (agent/dataplane/daemon.py): otherwise each full collection the run's own
    allocations set off walks them all (about 0.3 s with ET Open, once every two or three
    passes over the bench's capture). True when this call froze them (nothing was frozen
    before: then the run unfreezes them at its end, so a process that runs many captures, the
    tests, still collects its earlier runs' garbage)."""
    if gc.get_freeze_count():
        return False
    gc.freeze()
    return True


def empty_ack_skip(pipeline: Pipeline, simulate_ips: bool) -> EmptyAckSkip | None:
    """The kernel's empty-ACK skip (agent/dataplane/ruleset.py ``EmptyAckSkip``) when inline the
    kernel would keep empty ACKs from these engines (``dataplane_needs``): the offline run then
    pays for the packets inline pays for. Not with ``--simulate-ips``: a dropped connection's
    packets are dropped in the kernel before the skip inline, and offline their verdicts come from
    the pipeline; in IDS mode every verdict is an accept, so a kept ACK is counted as one."""
    packets, empty_acks = dataplane_needs(pipeline.engines)
    return EmptyAckSkip() if packets and not empty_acks and not simulate_ips else None


def _finish_io(pipeline: Pipeline, now: float) -> list[Any]:
    releases: list[Any] = []
    while requests := pipeline.take_io():
        for hold_id, req in requests:
            result, error = perform(req)
            releases += pipeline.io_done(hold_id, result, error, now)
    return releases


def _process(pipeline: Pipeline, pkt: Any, token: int) -> list[Any]:
    """One packet; I/O asked for by engines is done at once (offline time does not pass)."""
    releases = pipeline.process(pkt, token, pkt.ts)
    while True:
        requests = pipeline.take_io()
        if not requests:
            return releases
        for hold_id, req in requests:
            result, error = perform(req)
            releases += pipeline.io_done(hold_id, result, error, pkt.ts)
