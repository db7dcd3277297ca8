"""Offline IPS throughput: the synthetic capture through the agent's offline pipeline with ET Open, against
hyperscan's raw scan rate over the same payload bytes.

``offline_throughput`` (in the bench's process) writes the capture (lab/bench/capture.py) and runs
the measurement in a child process of its own, ``python -m lab.bench.offline --pcap ... --eve ...``,
so that the RSS figures are those of a process that loaded only the rules; the child prints an
``OfflineResult``'s fields as JSON.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from lab import shared_dir
from lab.bench.capture import write_capture
from lab.bench.host import eve_alerts, helper_argv, helper_env, last_json
from lab.bench.report import median, ratio

ET_OPEN = shared_dir() / "peer" / "et-open" / "rules"  # beside the repo, as in CI, or $VCR_SHARED
ET_OPEN_MISSING = "skipped: ET Open not found"
OFFLINE_TIMEOUT = 900
PIPELINE_REPEATS = 3  # offline pipeline passes over the capture (about 10 s each with ET Open)
SCAN_REPEATS = 5  # hyperscan passes (well under a second each)


def et_open_files(folder: Path = ET_OPEN) -> tuple[list[Path], Path | None]:
    """The ET Open rule files (sorted) and classification.config; ([], None) when the folder is missing."""
    rules = sorted(folder.glob("*.rules")) if folder.is_dir() else []
    classification = folder / "classification.config"
    return rules, classification if rules and classification.is_file() else None


def _hs_escape(pattern: bytes) -> bytes:
    return b"".join(b"\\x%02x" % c for c in pattern)


def capture_payloads(pcap: Path) -> tuple[list[bytes], int]:
    """The L4 payload of every packet of ``pcap`` (non-empty ones) and the total frame bytes."""
    from agent.offline.pcapfile import PcapReader
    from filters.packet import parse_linktype

    payloads, frame_bytes = [], 0
    with PcapReader(pcap) as reader:
        for rec in reader:
            frame_bytes += len(rec.data)
            pkt = parse_linktype(rec.data, rec.linktype, rec.ts)
            if pkt.payload:
                payloads.append(pkt.payload)
    return payloads, frame_bytes


def _timed(fn: Callable[[], Any], repeats: int, clock: Callable[[], float] = time.perf_counter) -> list[float]:
    """Seconds of ``repeats`` calls of ``fn`` (wall clock, or ``clock``)."""
    out = []
    for _ in range(repeats):
        t0 = clock()
        fn()
        out.append(clock() - t0)
    return out


def fast_pattern_scan(detector: Any, payloads: Sequence[bytes],
                      clock: Callable[[], float] = time.perf_counter) -> dict[str, Any]:
    """The limit: one hyperscan database of every fast pattern the detector prefilters on, block-scanning
    each payload; timed without a match callback (the engine alone) and with a counting one."""
    import hyperscan as hs

    pats = [(i.idx, i.rule.fast_pattern.pattern, i.rule.fast_pattern.nocase) for i in detector.infos
            if i.group != "iponly" and i.rule.fast_pattern is not None and i.rule.fast_pattern.pattern]
    t0 = time.perf_counter()
    db = hs.Database(mode=hs.HS_MODE_BLOCK)
    db.compile(expressions=[_hs_escape(p) for _, p, _ in pats], ids=[i for i, _, _ in pats], elements=len(pats),
               flags=[hs.HS_FLAG_SINGLEMATCH | (hs.HS_FLAG_CASELESS if nc else 0) for _, _, nc in pats])
    compile_s = time.perf_counter() - t0
    hits = [0]

    def on_match(rule_id: int, start: int, end: int, flags: int, ctx: Any) -> None:
        hits[0] += 1

    def scan() -> None:
        for data in payloads:
            db.scan(data)

    def scan_counting() -> None:
        hits[0] = 0
        for data in payloads:
            db.scan(data, match_event_handler=on_match)

    return {"patterns": len(pats), "compile_seconds": compile_s, "scan_samples": _timed(scan, SCAN_REPEATS, clock),
            "scan_callback_samples": _timed(scan_counting, SCAN_REPEATS, clock), "matches": hits[0]}


@contextlib.contextmanager
def gc_pauses() -> Iterator[dict[int, list[float]]]:
    """Collect the garbage collector's pauses (ms) per generation while the block runs."""
    import gc

    pauses: dict[int, list[float]] = {}
    started = [0.0]

    def callback(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            pauses.setdefault(info["generation"], []).append((time.perf_counter() - started[0]) * 1e3)

    gc.callbacks.append(callback)
    try:
        yield pauses
    finally:
        gc.callbacks.remove(callback)


def _pipeline(rules_dir: Path, pcap: Path, eve: Path, summary: dict[str, Any]) -> tuple[Callable[[], None], Any]:
    """``vcr-agent pcap -r PCAP -S RULES`` with the rules loaded once: (a pass over the capture, the IPS).
    A pass writes EVE to ``eve`` and the run's summary into ``summary``."""
    import functools
    from unittest import mock

    from agent.offline import replay as offline
    from agent.dataplane.worker import pipeline_from_config
    from agent.engines import build_engines

    rules, _ = et_open_files(rules_dir)
    cfg = offline.offline_config(None, [], rule_files=[str(f) for f in rules])  # what `-S` builds
    engines = build_engines(cfg)
    # run_pcap builds its pipeline with pipeline_from_config(cfg, ...): hand it the engines loaded above
    prepared = functools.partial(pipeline_from_config, engines=engines)

    def run() -> None:
        with mock.patch.object(offline, "pipeline_from_config", prepared), open(eve, "w", encoding="utf-8") as fh:
            summary.update(offline.run_pcap(offline.OfflineOptions(pcap=pcap), cfg, out=fh))

    return run, next(e for e in engines if e.name == "ips")


def offline_ips(pcap: Path, rules_dir: Path, eve: Path) -> dict[str, Any]:
    """``vcr-agent pcap -r PCAP -S RULES`` timed without its rule load, then the hyperscan limit."""
    import gc

    import psutil

    proc = psutil.Process()
    summary: dict[str, Any] = {}
    rss0 = proc.memory_info().rss
    t0 = time.perf_counter()
    run, ips = _pipeline(rules_dir, pcap, eve, summary)
    load_s = time.perf_counter() - t0
    rss1 = proc.memory_info().rss
    with gc_pauses() as pauses:
        pipeline = _timed(run, PIPELINE_REPEATS)
    full_gc = _timed(gc.collect, 1)[0]
    payloads, frame_bytes = capture_payloads(pcap)
    alerts, top = eve_alerts(eve)
    load = ips.summary()
    return {
        "packets": summary["packets"], "frame_bytes": frame_bytes, "payload_bytes": sum(map(len, payloads)),
        "payload_packets": len(payloads), "load_seconds": load_s, "rules_active": load.get("rules_active", 0),
        "rules_loaded": load.get("rules_loaded", 0), "rules_unsupported": load.get("rules_unsupported", 0),
        "rules_bad": load.get("rules_bad", 0), "rss_before_mib": rss0 / (1 << 20), "rss_after_mib": rss1 / (1 << 20),
        "pipeline_samples": pipeline, "alerts": alerts, "top_alerts": top,
        "pipeline_counters": summary["stats"].get("pipeline", {}),
        "gc": {str(g): [len(v), max(v), sum(v)] for g, v in sorted(pauses.items())},
        "gc_full_ms": full_gc * 1e3, "gc_objects": len(gc.get_objects()),
        **fast_pattern_scan(ips.detector, payloads),
    }


@dataclass(frozen=True)
class OfflineResult:
    """What ``python -m lab.bench.offline`` measured, plus what the capture holds."""

    packets: int
    frame_bytes: int
    payload_bytes: int
    payload_packets: int
    load_seconds: float
    rules_active: int
    rules_loaded: int
    rules_unsupported: int
    rules_bad: int
    rss_before_mib: float
    rss_after_mib: float
    pipeline_samples: list[float]  # seconds per pass over the capture
    alerts: int
    top_alerts: list[tuple[str, int]]
    pipeline_counters: dict[str, int]
    patterns: int
    compile_seconds: float
    scan_samples: list[float]  # seconds per hyperscan pass over the payloads, no match callback
    scan_callback_samples: list[float]  # the same with a counting match callback
    matches: int
    gc: dict[str, list[float]] = field(default_factory=dict)  # generation -> [collections, max ms, total ms]
    gc_full_ms: float = 0.0  # one full collection with the rules loaded
    gc_objects: int = 0  # objects the collector tracks then
    capture: dict[str, int] = field(default_factory=dict)

    @property
    def pipeline_seconds(self) -> float:
        return median(self.pipeline_samples) or 0.0

    @property
    def scan_seconds(self) -> float:
        return median(self.scan_samples) or 0.0

    @property
    def scan_callback_seconds(self) -> float:
        return median(self.scan_callback_samples) or 0.0

    @staticmethod
    def mbps(nbytes: int, seconds: float) -> float | None:
        return nbytes * 8 / seconds / 1e6 if seconds > 0 else None

    @property
    def pipeline_mbps(self) -> float | None:
        return self.mbps(self.frame_bytes, self.pipeline_seconds)

    @property
    def pipeline_payload_mbps(self) -> float | None:
        return self.mbps(self.payload_bytes, self.pipeline_seconds)

    @property
    def pipeline_pps(self) -> float | None:
        return self.packets / self.pipeline_seconds if self.pipeline_seconds > 0 else None

    @property
    def scan_mbps(self) -> float | None:
        return self.mbps(self.payload_bytes, self.scan_seconds)

    @property
    def scan_callback_mbps(self) -> float | None:
        return self.mbps(self.payload_bytes, self.scan_callback_seconds)

    @property
    def share_of_limit(self) -> float | None:
        """Pipeline over hyperscan on the same payload bytes (= scan time / pipeline time)."""
        return ratio(self.pipeline_payload_mbps, self.scan_mbps)


def offline_throughput(workdir: Path) -> tuple[OfflineResult | None, str]:
    """Write the capture and measure it in a child process; (result, "") or (None, why not)."""
    rules, classification = et_open_files()
    if not rules:
        return None, f"{ET_OPEN_MISSING} ({ET_OPEN}): offline IPS throughput skipped"
    folder = workdir / "offline"
    folder.mkdir(parents=True, exist_ok=True)
    pcap = folder / "office-mix.pcap"
    print(f"offline: writing the capture to {pcap}", flush=True)
    capture = write_capture(pcap)
    print(f"offline: {capture['packets']:,} packets, {capture['bytes'] / 1e6:.1f} MB; ET Open over it", flush=True)
    argv = helper_argv("lab.bench.offline", "--pcap", str(pcap), "--rules-dir", str(ET_OPEN), "--eve", str(folder / "eve.json"))
    try:
        res = subprocess.run(argv, env=helper_env(), capture_output=True, text=True, timeout=OFFLINE_TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        return None, f"error: offline-ips did not finish in {OFFLINE_TIMEOUT} s"
    try:
        data = last_json(res.stdout)
    except (ValueError, IndexError):
        return None, f"error: offline-ips failed: {res.stderr[-400:]}"
    data["top_alerts"] = [tuple(x) for x in data.get("top_alerts", [])]
    pcap.unlink(missing_ok=True)
    return OfflineResult(**data, capture=capture), ""


def offline_cpu(pcap: Path, rules_dir: Path, eve: Path, passes: int, profile: int = 0) -> None:
    """Print the CPU time (``time.process_time``) of ``passes`` pipeline passes over ``pcap`` and
    of hyperscan's scan of the same payloads (best of SCAN_REPEATS): steadier than the wall clock
    on a shared machine, for before/after comparisons. ``profile``: cProfile's top entries (by own
    time) of one more pass."""
    import cProfile
    import io
    import pstats

    run, ips = _pipeline(rules_dir, pcap, eve, {})
    for secs in _timed(run, passes, time.process_time):
        print(f"pipeline pass: {secs:.2f} s CPU", flush=True)
    if profile:
        prof = cProfile.Profile()
        prof.runcall(run)
        out = io.StringIO()
        pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(profile)
        print(out.getvalue())
    payloads, _ = capture_payloads(pcap)
    scan = fast_pattern_scan(ips.detector, payloads, time.process_time)
    print(f"hyperscan, {scan['patterns']:,} fast patterns over {sum(map(len, payloads)):,} payload bytes:"
          f" {min(scan['scan_samples']):.3f} s CPU (best of {SCAN_REPEATS})")


def main(argv: Sequence[str] | None = None) -> int:
    """The child: ``python -m lab.bench.offline --pcap FILE [--rules-dir DIR] --eve FILE``; with
    ``--cpu N`` (and ``--profile K``) the CPU-time comparison of ``offline_cpu`` instead of the JSON.
    A --pcap that does not exist is written first (the bench's capture)."""
    parser = argparse.ArgumentParser(prog="python -m lab.bench.offline",
                                     description="IPS throughput over a capture with ET Open, and the hyperscan limit")
    parser.add_argument("--pcap", required=True, type=Path)
    parser.add_argument("--rules-dir", type=Path, default=ET_OPEN)
    parser.add_argument("--eve", required=True, type=Path)
    parser.add_argument("--cpu", type=int, default=0, metavar="N", help="print the CPU seconds of N pipeline passes")
    parser.add_argument("--profile", type=int, default=0, metavar="K", help="with --cpu: cProfile's top K of a pass")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if not args.pcap.exists():
        write_capture(args.pcap)
    if args.cpu:
        offline_cpu(args.pcap, args.rules_dir, args.eve, args.cpu, args.profile)
        return 0
    print(json.dumps(offline_ips(args.pcap, args.rules_dir, args.eve)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
