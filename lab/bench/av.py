"""Benchmark of the web antivirus (``python -m lab av-bench``), written to the ``antivirus``
section of docs/benchmarks.md (lab/bench/doc.py).

* **clamd's own INSTREAM rate** (the limit): a private clamd (lab/clamd.py, starter database)
  scans the same 20 MB file over its unix socket (filters/av/clamd.py, as the agent does),
  ``--runs`` times; the rate is bytes / scan time.
* **In the lab** (lab/netns.py): pc1 downloads the 20 MB file and a 50 KB file from ``web`` with
  curl through the bare bridge and through the agent with the web antivirus on (the shipped config
  with ``engines.av`` on this clamd and the HTTP body limits raised to scan 20 MB), in alternating
  blocks. Throughput is size / curl's ``time_total``; time to first byte is ``time_starttransfer``.
* **clamd memory**: VmRSS / VmHWM of clamd with the starter database, and with a generated database
  the size of ClamAV's main+daily (``--signatures``, default 8 million: MD5 and SHA-256 file hashes,
  PE section hashes and random body signatures; the method section says how many of each), with
  its load time and its INSTREAM rate on the same 20 MB file.

The file is random bytes (a binary download clamd cannot skip as text). The download server
(``python -m lab.bench.av serve PORT FOLDER``) answers each GET with the file from memory, with a
Content-Length, in 256 KiB writes.
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from lab.bench.blocks import bare_bridge, rotated, running_agent
from lab.bench.doc import write_section
from lab.bench.host import agent_cpu_seconds, machine, machine_noise

BIG = 20 * 1000 * 1000
SMALL = 50 * 1000
PORT = 8088
SECTION = "antivirus"
# What the generated database holds, by share of --signatures: (file suffix, share, what)
SYNTHETIC = (
    (".hdb", 0.5625, "MD5 file hashes (md5:size:name)"),
    (".hsb", 0.1875, "SHA-256 file hashes (sha256:size:name)"),
    (".mdb", 0.2375, "PE section MD5 hashes (size:md5:name)"),
    (".ndb", 0.0125, "body signatures (20 random bytes, any file type, any offset)"),
)


# -- the download server (in the lab's web namespace) ----------------------------------------------
def serve(port: int, folder: Path) -> None:
    files = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}

    def one(conn: socket.socket) -> None:
        with conn:
            conn.settimeout(30)
            buf = b""
            try:
                while True:
                    while b"\r\n\r\n" not in buf:
                        got = conn.recv(4096)
                        if not got:
                            return
                        buf += got
                    head, buf = buf.split(b"\r\n\r\n", 1)
                    name = head.split(b" ", 2)[1].decode().rsplit("/", 1)[-1]
                    body = files.get(name)
                    if body is None:
                        conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                        continue
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                                 b"Content-Length: %d\r\n\r\n" % len(body))
                    view = memoryview(body)
                    for i in range(0, len(view), 256 * 1024):
                        conn.sendall(view[i:i + 256 * 1024])
            except OSError:
                return

    srv = socket.create_server(("0.0.0.0", port), backlog=64)
    while True:
        c, _ = srv.accept()
        threading.Thread(target=one, args=(c,), daemon=True).start()


# -- clamd -----------------------------------------------------------------------------------------
def proc_memory(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of a process in MiB."""
    vals = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        k, _, v = line.partition(":")
        if k in ("VmRSS", "VmHWM"):
            vals[k] = int(v.split()[0]) / 1024
    return vals.get("VmRSS", 0.0), vals.get("VmHWM", 0.0)


def instream_rates(sock: str, data: bytes, runs: int) -> list[tuple[float, str]]:
    """(MB/s, clamd's answer) of ``runs`` INSTREAM scans of ``data``."""
    from filters.av.clamd import command

    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        reply = command(sock, b"INSTREAM", 120.0, data)
        out.append((len(data) / (time.perf_counter() - t0) / 1e6, reply))
    return out


def synthetic_database(folder: Path, total: int, seed: int = 13) -> dict[str, int]:
    """A clamd database folder of ``total`` generated signatures (see ``SYNTHETIC``); count per file."""
    import random

    rnd = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    counts: dict[str, int] = {}
    for suffix, share, _what in SYNTHETIC:
        n = int(total * share)
        counts[f"synthetic{suffix}"] = n
        with open(folder / f"synthetic{suffix}", "w", encoding="ascii") as fh:
            step = 50_000
            for start in range(0, n, step):
                k = min(step, n - start)
                lines = []
                if suffix == ".ndb":
                    blob = rnd.randbytes(20 * k)
                    for i in range(k):
                        lines.append(f"Synth.Body.{start + i}:0:*:{blob[20 * i:20 * i + 20].hex()}\n")
                else:
                    width = 32 if suffix in (".hdb", ".mdb") else 64
                    blob = rnd.randbytes(width // 2 * k).hex()
                    sizes = [rnd.randrange(1000, 5_000_000) for _ in range(k)]
                    for i in range(k):
                        h = blob[width * i:width * (i + 1)]
                        if suffix == ".mdb":
                            lines.append(f"{sizes[i] % 200_000 + 512}:{h}:Synth.Sect.{start + i}\n")
                        else:
                            lines.append(f"{h}:{sizes[i]}:Synth.Hash{suffix[1:]}.{start + i}\n")
                fh.write("".join(lines))
    return counts


# -- the lab ---------------------------------------------------------------------------------------
def curl_times(lab: Any, url: str, timeout: float = 120.0) -> tuple[float, float, int]:
    """(time to first byte, time to last byte, bytes) of one download by curl at pc1."""
    res = lab.exec("pc1", ["curl", "-sS", "--max-time", str(int(timeout)), "-o", "/dev/null", "-w",
                           "%{time_starttransfer} %{time_total} %{size_download} %{http_code}", url])
    parts = res.stdout.split()
    if res.returncode != 0 or len(parts) != 4 or parts[3] != "200":
        raise RuntimeError(f"curl {url}: exit {res.returncode} {res.stderr.strip()} {res.stdout.strip()}")
    return float(parts[0]), float(parts[1]), int(parts[2])


def _cpu(pid: int) -> float:
    """User + system CPU seconds of a process (its threads included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def run_lab(args: argparse.Namespace, files: Path, clamd: Any, work: Path) -> dict[str, Any]:
    from lab.netns import Lab

    lab = Lab(args.prefix, log_dir=work / "lab")
    samples: dict[str, dict[str, list[float]]] = {"bare": {}, "agent": {}, "clamd": {}}
    starts: list[str] = []
    overrides = {
        "engines.av": {"enabled": True, "clamd_socket": clamd.socket, "database": str(clamd.database),
                       "max_size": 32 << 20, "scan_timeout": 30.0},
        # the IPS body limit and stream depth as shipped: the antivirus follows the file to max_size
    }
    counters: dict[str, Any] = {}
    with lab:
        lab.popen("web", [sys.executable, "-m", "lab.bench.av", "serve", str(PORT), str(files)], name="avserve")
        if not lab.wait_tcp("web", "127.0.0.1", PORT, 15):
            raise RuntimeError("the download server did not start")
        web = lab.hosts["web"].ipv4
        urls = {"big": f"http://{web}:{PORT}/big.bin", "small": f"http://{web}:{PORT}/small.bin"}

        def block(mode: str) -> None:
            if not lab.wait_tcp("pc1", web, PORT, 30):
                raise RuntimeError(f"{mode}: no path from pc1 to web")
            for _ in range(args.downloads):
                for kind in ("small", "big"):
                    ttfb, ttlb, size = curl_times(lab, urls[kind])
                    expect = BIG if kind == "big" else SMALL
                    if size != expect:
                        raise RuntimeError(f"{mode}: {kind} download gave {size} bytes, not {expect}")
                    s = samples[mode]
                    s.setdefault(f"{kind}.ttfb", []).append(ttfb * 1000)
                    s.setdefault(f"{kind}.ttlb", []).append(ttlb * 1000)
                    if kind == "big":
                        s.setdefault("big.rate", []).append(size / ttlb / 1e6)
            s = samples[mode]
            print(f"  {mode:5s} 20 MB {_median(s['big.rate'][-args.downloads:]):.1f} MB/s, "
                  f"50 KB last byte {_median(s['small.ttlb'][-args.downloads:]):.1f} ms", flush=True)

        for run in range(args.runs):
            # clamd's own rate in the same run, right before its blocks: the machine's load moves
            rates = instream_rates(clamd.socket, (files / "big.bin").read_bytes(), 2)
            samples.setdefault("clamd", {}).setdefault("rate", []).extend(r for r, _ in rates)
            samples["clamd"].setdefault("run_rate", []).append(_median([r for r, _ in rates]))
            print(f"run {run + 1}/{args.runs}: clamd INSTREAM {_median([r for r, _ in rates]):.1f} MB/s", flush=True)
            for mode in rotated(["bare", "agent"], run):
                print(f"run {run + 1}/{args.runs}: {mode} (load average {os.getloadavg()[0]:.2f})", flush=True)
                if mode == "bare":
                    with bare_bridge(lab):
                        block(mode)
                else:
                    with running_agent(lab, work / f"agent{run}", overrides, 60.0) as (agent, started):
                        starts.append(started)
                        cpu0, clam0 = agent_cpu_seconds(agent.proc.pid), _cpu(clamd.proc.pid)
                        block(mode)
                        # CPU the agent and clamd spent per 20 MB download (the 50 KB ones are noise)
                        s = samples["agent"]
                        s.setdefault("cpu_per_big", []).append(
                            (agent_cpu_seconds(agent.proc.pid) - cpu0) / args.downloads)
                        s.setdefault("clamd_cpu_per_big", []).append((_cpu(clamd.proc.pid) - clam0) / args.downloads)
                        samples["agent"].setdefault("run_rate", []).append(
                            _median(samples["agent"]["big.rate"][-args.downloads:]))
                        status = agent.status() or {}
                        counters = {k: v for k, v in (status.get("engines", {}).get("av", {}) or {}).items()
                                    if isinstance(v, (int, float))} or status.get("counters", {})
    return {"samples": samples, "starts": starts, "counters": counters}


# -- report ----------------------------------------------------------------------------------------
def report(args: argparse.Namespace, res: dict[str, Any], started: float, noise: list[str]) -> str:
    m = machine()
    s = res["lab"]["samples"] if res.get("lab") else {"bare": {}, "agent": {}}
    clam_all = s.get("clamd", {}).get("rate") or [r for r, _ in res["instream"]]
    clam = _median(clam_all)
    big_db = res.get("big_db") or {}
    bare_rate, av_rate = _median(s["bare"].get("big.rate", [])), _median(s["agent"].get("big.rate", []))
    per_run = [a / c for a, c in zip(s["agent"].get("run_rate", []), s.get("clamd", {}).get("run_rate", [])) if c]
    ratio = _median(per_run) if per_run else (av_rate / clam if clam else float("nan"))
    lines = [
        "# Benchmarks: web antivirus (clamd)",
        "",
        "Generated by `python -m lab av-bench` (lab/bench/av.py); do not edit by hand, run it again.",
        "",
        f"- Date: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC (the bench took "
        f"{(time.monotonic() - started) / 60:.1f} min)",
        f"- Machine: {m.get('nproc', '?')} CPUs ({m.get('cpu', '?')}), {m.get('memory', '?')} RAM, kernel {m.get('kernel', '?')}",
        f"- Command: `python -m lab av-bench --runs {args.runs} --downloads {args.downloads} "
        f"--signatures {args.signatures}`",
        f"- clamd: {res.get('clamd_version', '?')}",
        *[f"- {n}" for n in noise],
        "",
        "## 20 MB download: web antivirus against the bare bridge and clamd's own rate",
        "",
        "| Measure | Median | Goal | Result |",
        "|---|---|---|---|",
        f"| clamd INSTREAM, the 20 MB file, starter database (the limit; all runs) | {clam:.1f} MB/s | — | reported |",
        f"| Download through the bare bridge | {bare_rate:.1f} MB/s | — | reported |",
        f"| Download through the agent, web antivirus on | {av_rate:.1f} MB/s | — | reported |",
        f"| Antivirus download / clamd INSTREAM (median of the runs' ratios, each run's clamd rate measured just "
        f"before its blocks: {', '.join(f'{r:.2f}' for r in per_run) or '-'}) | {ratio:.2f}× | ≥ 0.8× | "
        f"{'pass' if ratio >= 0.8 else 'FAIL'} |",
        f"| Antivirus download / bare bridge | {av_rate / bare_rate if bare_rate else float('nan'):.3f}× | — | reported |",
        "",
        "## Added time to first and last byte",
        "",
        "| Download | Bare: first / last byte | Antivirus: first / last byte | Added first / last byte |",
        "|---|---|---|---|",
    ]
    for kind, label in (("small", "50 KB"), ("big", "20 MB")):
        b1, b2 = _median(s["bare"].get(f"{kind}.ttfb", [])), _median(s["bare"].get(f"{kind}.ttlb", []))
        a1, a2 = _median(s["agent"].get(f"{kind}.ttfb", [])), _median(s["agent"].get(f"{kind}.ttlb", []))
        lines.append(f"| {label} | {b1:.1f} / {b2:.1f} ms | {a1:.1f} / {a2:.1f} ms | +{a1 - b1:.1f} / +{a2 - b2:.1f} ms |")
    cpu, clam_cpu = _median(s["agent"].get("cpu_per_big", [])), _median(s["agent"].get("clamd_cpu_per_big", []))
    if cpu == cpu:  # not nan
        lines += [
            "",
            "## Where the time goes",
            "",
            f"- CPU per 20 MB download through the agent: the agent {cpu:.2f} s, clamd {clam_cpu:.2f} s (medians of "
            f"the blocks), against {BIG / 1e6 / clam:.2f} s for clamd's own INSTREAM of the file. Even with a whole "
            f"CPU to itself the agent's Python data path (NFQUEUE, reassembly, HTTP parsing, the feed) would pass "
            f"{BIG / 1e6 / cpu:.0f} MB/s, and the scan of the tail comes on top: "
            + ("that alone keeps it under 0.8× of clamd's rate; what is left to win is in the per-packet Python "
               "work, not in the antivirus." if BIG / 1e6 / cpu < 0.8 * clam else
               "enough for the goal on an idle machine; the measured rate is lower because the machine was shared "
               "(load average in the noise lines above) and the agent's worker got a share of a CPU."),
            "- What streaming cannot hide: clamd writes an INSTREAM to a temporary file and scans it only "
            "once the stream ends, so the last packet of a large download still waits for the whole file's "
            "scan (the clamd CPU above); streaming saves the sending, and the parser no longer copies the "
            "growing body on every packet (that made a 20 MB download quadratic: 5.9 MB/s before, in this lab).",
        ]
    lines += [
        "",
        "## clamd memory",
        "",
        "| Database | Signatures | Load time | VmRSS after load | VmHWM (peak) | INSTREAM, the 20 MB file |",
        "|---|---|---|---|---|---|",
        f"| Starter (config/av/build-starter-db.sh) | {res['starter']['signatures']:,} | {res['starter']['load']:.1f} s | "
        f"{res['starter']['rss']:.0f} MiB | {res['starter']['hwm']:.0f} MiB | "
        f"{_median([r for r, _ in res['instream']]):.1f} MB/s |",
    ]
    if big_db:
        lines.append(f"| Generated, the size of main+daily | {big_db['signatures']:,} | {big_db['load']:.1f} s | "
                     f"{big_db['rss']:.0f} MiB | {big_db['hwm']:.0f} MiB | {big_db['rate']:.1f} MB/s |")
    lines += [
        "",
        "## Method",
        "",
        f"- The file: {BIG:,} random bytes (and {SMALL:,} for the small download), served from memory by "
        "`python -m lab.bench.av serve` in the lab's web host with a Content-Length, fetched by curl at pc1 "
        f"(`-o /dev/null`); {args.downloads} downloads of each per block, {args.runs} runs, each run one block "
        "per mode in alternating order. Medians over all downloads of a mode.",
        "- Agent: the shipped config with `engines.av` on (`max_size` 32 MiB, `scan_timeout` 30 s); the IPS "
        "body limit and stream depth as shipped (the antivirus follows the 20 MB file to its `max_size` on its "
        "own, docs/engines.md#av); the same private clamd (lab/clamd.py: the shipped config/av/clamd.conf with its own "
        "paths, starter database).",
        "- clamd INSTREAM: the same 20 MB file over the unix socket with the agent's own client code "
        "(agent/dataplane/clamd.py), 64 KiB chunks; rate = bytes / (send + verdict); twice at the start of each "
        "run (the baseline of that run's ratio) and, for the memory table, before the lab.",
        "- The agent streams downloads from 256 KiB on to clamd while they arrive and holds the last packet "
        "until clamd's verdict (docs/engines.md#av); the download time includes that wait.",
    ]
    if big_db:
        lines.append("- Generated database (`--signatures " + f"{args.signatures}`), written by "
                     "lab/bench/av.py `synthetic_database` (seeded): "
                     + "; ".join(f"{n:,} {what}" for (suf, _s, what), n in
                                 zip(SYNTHETIC, big_db["counts"].values())) + ". "
                     "ClamAV's main+daily hold about that many signatures, most of them hashes; the body "
                     "signatures are what costs clamd memory and scan time (Aho-Corasick trie), so their "
                     "share here is the uncertain part. With `ConcurrentDatabaseReload` (on) a reload "
                     "briefly holds the old and the new database: count twice the VmRSS for the peak.")
    lines += ["", "## Samples", ""]
    for mode in ("clamd", "bare", "agent"):
        for key, vals in sorted(s.get(mode, {}).items()):
            lines.append(f"- {mode} {key}: " + ", ".join(f"{v:.1f}" for v in vals))
    lines.append(f"- clamd INSTREAM MB/s: " + ", ".join(f"{r:.1f}" for r, _ in res["instream"]))
    if res.get("lab"):
        lines.append(f"- Agent starts: {'; '.join(res['lab']['starts'])}")
    if res.get("notes"):
        lines += ["", "## Notes on this run", "", *[f"- {n}" for n in res["notes"]]]
    return "\n".join(lines) + "\n"


def run_av_bench(args: argparse.Namespace) -> int:
    from lab.clamd import PrivateClamd, missing

    why = missing()
    if why:
        print(f"av-bench: {why}", file=sys.stderr)
        return 1
    started = time.monotonic()
    noise = [machine_noise("before the bench")]
    work = Path(tempfile.mkdtemp(prefix="vcr-avbench-"))
    res: dict[str, Any] = {"notes": list(args.note or [])}
    try:
        files = work / "files"
        files.mkdir()
        big = os.urandom(BIG)
        (files / "big.bin").write_bytes(big)
        (files / "small.bin").write_bytes(os.urandom(SMALL))
        t0 = time.monotonic()
        with PrivateClamd(work / "clamd") as clamd:
            load = time.monotonic() - t0
            from agent.dataplane.clamd import version

            res["clamd_version"] = version(clamd.socket)
            assert clamd.proc is not None
            rss, hwm = proc_memory(clamd.proc.pid)
            sigs = sum(len(p.read_text().splitlines()) for p in Path(clamd.database).iterdir() if p.is_file())
            res["starter"] = {"signatures": sigs, "load": load, "rss": rss, "hwm": hwm}
            res["instream"] = instream_rates(clamd.socket, big, args.runs * 2)
            res["starter"]["hwm"] = max(hwm, proc_memory(clamd.proc.pid)[1])
            print(f"clamd INSTREAM: {_median([r for r, _ in res['instream']]):.1f} MB/s; {rss:.0f} MiB", flush=True)
            if not args.no_lab:
                res["lab"] = run_lab(args, files, clamd, work)
        if args.signatures:
            print(f"generating {args.signatures:,} signatures", flush=True)
            counts = synthetic_database(work / "bigdb", args.signatures)
            t0 = time.monotonic()
            c2 = PrivateClamd(work / "clamd-big", database=work / "bigdb")
            try:
                c2.start(wait=1800)
                load = time.monotonic() - t0
                assert c2.proc is not None
                rss, hwm = proc_memory(c2.proc.pid)
                rates = instream_rates(c2.socket, big, 3)
                rate = _median([r for r, _ in rates])
                rss_after, hwm_after = proc_memory(c2.proc.pid)
                res["big_db"] = {"signatures": sum(counts.values()), "counts": counts, "load": load, "rss": rss,
                                 "hwm": max(hwm, hwm_after), "rate": rate, "rss_scanning": rss_after}
                print(f"generated database: {rss:.0f} MiB after {load:.0f} s, {rate:.1f} MB/s", flush=True)
            finally:
                c2.stop()
        noise.append(machine_noise("after the bench"))
        text = report(args, res, started, noise)
        print(text)
        if args.out:
            write_section(Path(args.out), SECTION, text)
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--downloads", type=int, default=3, help="downloads of each size per block")
    p.add_argument("--signatures", type=int, default=8_000_000,
                   help="signatures of the generated main+daily-sized database (0: skip)")
    p.add_argument("--out", default="docs/benchmarks.md", help="write the antivirus section here ('' to only print)")
    p.add_argument("--prefix", default="vav", help="lab prefix")
    p.add_argument("--no-lab", action="store_true", help="only clamd (no lab downloads)")
    p.add_argument("--note", action="append", help="a line for the notes of the report (repeatable)")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "serve":
        serve(int(sys.argv[2]), Path(sys.argv[3]))
    else:
        ap = argparse.ArgumentParser(prog="python -m lab.bench.av")
        add_arguments(ap)
        sys.exit(run_av_bench(ap.parse_args()))
