"""The machine under measurement and the processes a bench starts on it.

What /proc says (CPU model and memory, CPU ticks, the NFQUEUE statistics), the CPU time and memory
of a process tree (the agent and its workers) measured with psutil, the noise of other processes on
the shared machine, the agent's EVE file, nginx (installed when missing, started in a namespace with
a configuration of the bench's), and the bench's own helper processes: ``python -m MODULE ...`` with
the repository on the path, whose last line of output is a JSON result.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
NOISE_SECONDS = 3.0
NFQUEUE_PROC = "/proc/net/netfilter/nfnetlink_queue"
NGINX_PACKAGE = "nginx-light"
NGINX_HEAD = """daemon off;
worker_processes {workers};
pid {dir}/nginx.pid;
error_log {dir}/error.log;
events {{ worker_connections 8192; multi_accept on; }}
http {{
  access_log off;
  keepalive_timeout 0;
  client_body_temp_path {dir}/tmp; proxy_temp_path {dir}/tmp; fastcgi_temp_path {dir}/tmp;
  uwsgi_temp_path {dir}/tmp; scgi_temp_path {dir}/tmp;
"""


class BenchError(RuntimeError):
    """One measurement could not be taken."""


# ----------------------------------------------------------------------------- /proc
def read_text(path: str) -> str:
    """The text of a (/proc) file, "" when it cannot be read."""
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return ""


def machine_info(cpuinfo: str, meminfo: str, nproc: int, kernel: str) -> dict[str, str]:
    """nproc, kernel, CPU model and memory from /proc text."""
    model = next((ln.split(":", 1)[1].strip() for ln in cpuinfo.splitlines() if ln.startswith("model name")), "unknown")
    mem = next((ln.split()[1] for ln in meminfo.splitlines() if ln.startswith("MemTotal:")), "")
    return {
        "nproc": str(nproc),
        "kernel": kernel,
        "cpu": model,
        "memory": f"{int(mem) / (1 << 20):.1f} GiB" if mem.isdigit() else "unknown",
    }


def machine() -> dict[str, str]:
    """``machine_info`` of this machine."""
    return machine_info(read_text("/proc/cpuinfo"), read_text("/proc/meminfo"), os.cpu_count() or 0, platform.release())


def cpu_ticks(stat: str) -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs from the first line of /proc/stat."""
    for line in stat.splitlines():
        if line.startswith("cpu "):
            ticks = [int(x) for x in line.split()[1:]]
            idle = sum(ticks[3:5])  # idle + iowait
            return sum(ticks) - idle, sum(ticks)
    return 0, 0


def busy_share(before: tuple[int, int], after: tuple[int, int]) -> float:
    """Share of CPU time that was busy between two cpu_ticks() readings (0..1)."""
    total = after[1] - before[1]
    return (after[0] - before[0]) / total if total > 0 else 0.0


@dataclass(frozen=True)
class QueueStats:
    """One line of /proc/net/netfilter/nfnetlink_queue."""

    queue: int
    waiting: int
    dropped: int
    user_dropped: int
    id_sequence: int


def parse_nfqueue(text: str) -> dict[int, QueueStats]:
    """Columns: queue_num portid queue_total copy_mode copy_range queue_dropped user_dropped id_sequence 1."""
    out = {}
    for line in text.splitlines():
        cols = line.split()
        if len(cols) >= 8 and all(c.isdigit() for c in cols[:8]):
            q = int(cols[0])
            out[q] = QueueStats(q, int(cols[2]), int(cols[5]), int(cols[6]), int(cols[7]))
    return out


# ----------------------------------------------------------------------------- noise of other processes
def noise_line(when: str, busy: float, loads: Sequence[float], top: Sequence[tuple[float, str]]) -> str:
    """How busy the machine was with other work: CPU share, load averages and the busiest processes."""
    procs = ", ".join(f"{name} {pct:.0f}%" for pct, name in top) or "none above 1% of a CPU"
    return (f"{when}: {busy * 100:.0f}% of the CPUs busy over {NOISE_SECONDS:g} s with nothing of the bench running; "
            f"load average {' / '.join(f'{v:.2f}' for v in loads)} (1/5/15 min); busiest processes: {procs}.")


def _proc_name(info: dict[str, Any]) -> str:
    """A process's first words of command line on one line (``python -c`` scripts hold newlines)."""
    words = " ".join((info.get("cmdline") or [info.get("name") or "?"])[:4]).split()
    return " ".join(words)[:70]


def foreign_cpu() -> dict[int, tuple[str, float]]:
    """CPU seconds so far of every user process outside this bench's process tree (other people's work)."""
    import psutil

    me = psutil.Process()
    ours = {me.pid, *(c.pid for c in me.children(recursive=True))}
    out = {}
    for p in psutil.process_iter(["name", "cmdline", "cpu_times", "ppid", "status"]):
        info = p.info
        # 2 is kthreadd (kernel threads); a zombie is most likely a killed agent's worker, reparented
        if p.pid in ours or info.get("ppid") in (0, 2) or info.get("cpu_times") is None or info.get("status") == "zombie":
            continue
        out[p.pid] = (_proc_name(info), info["cpu_times"].user + info["cpu_times"].system)
    return out


def foreign_use(before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]],
                cpu_seconds: float, top: int = 3) -> tuple[float, list[tuple[float, str]]]:
    """(share of ``cpu_seconds`` the other processes used between two foreign_cpu() readings, the
    biggest users as (seconds, name)); a process new since ``before`` counts with all its time."""
    used = [(sec - before.get(pid, (name, 0.0))[1], name) for pid, (name, sec) in after.items()]
    used = [(sec, name) for sec, name in used if sec > 0]
    share = sum(sec for sec, _ in used) / cpu_seconds if cpu_seconds > 0 else 0.0
    return share, [u for u in sorted(used, reverse=True)[:top] if u[0] >= 0.1]


def machine_noise(when: str) -> str:
    """A noise_line for now: CPU busy share over NOISE_SECONDS and the busiest processes (psutil)."""
    import psutil

    before = cpu_ticks(read_text("/proc/stat"))
    procs = list(psutil.process_iter(["name", "cmdline"]))
    for p in procs:
        with contextlib.suppress(psutil.Error):
            p.cpu_percent(None)
    time.sleep(NOISE_SECONDS)
    busy = busy_share(before, cpu_ticks(read_text("/proc/stat")))
    top = []
    for p in procs:
        with contextlib.suppress(psutil.Error):
            pct = p.cpu_percent(None)
            if pct >= 1 and p.pid != os.getpid():
                top.append((pct, _proc_name(p.info)))
    return noise_line(when, busy, os.getloadavg(), sorted(top, reverse=True)[:4])


# ----------------------------------------------------------------------------- process trees
def process_tree(pid: int) -> list[Any]:
    """psutil.Process of ``pid`` and all its descendants (psutil.Error when ``pid`` is gone)."""
    import psutil

    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def _cpu_of(procs: Iterable[Any]) -> float:
    import psutil

    total = 0.0
    for p in procs:
        with contextlib.suppress(psutil.Error):
            t = p.cpu_times()
            total += t.user + t.system
    return total


def agent_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of the agent and its workers so far."""
    return _cpu_of(process_tree(pid))


def cpu_seconds(pids: Iterable[int]) -> float:
    """User + system CPU seconds so far of the process trees of ``pids`` (a tree that is gone counts 0)."""
    import psutil

    total = 0.0
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            total += _cpu_of(process_tree(pid))
    return total


def agent_memory(pid: int) -> tuple[float, float]:
    """(RSS, PSS) in MiB summed over the agent and its workers."""
    import psutil

    rss = pss = 0
    for p in process_tree(pid):
        with contextlib.suppress(psutil.Error):
            info = p.memory_full_info()
            rss += info.rss
            pss += getattr(info, "pss", info.rss)
    return rss / (1 << 20), pss / (1 << 20)


def eve_alerts(path: Path, top: int = 5) -> tuple[int, list[tuple[str, int]]]:
    """Alert count and the most frequent signatures of an EVE file."""
    sigs: Counter[str] = Counter()
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            with contextlib.suppress(ValueError):
                rec = json.loads(line)
                if rec.get("event_type") == "alert":
                    sigs[rec.get("alert", {}).get("signature", "?")] += 1
    return sum(sigs.values()), sigs.most_common(top)


# ----------------------------------------------------------------------------- servers and helper processes
def ensure_nginx() -> tuple[str | None, str]:
    """Path of nginx (installing ``nginx-light`` with apt-get when missing) and a note saying what happened."""
    found = shutil.which("nginx")
    if found:
        return found, "nginx was already installed"
    if shutil.which("apt-get") is None:
        return None, "nginx is not installed and there is no apt-get"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", NGINX_PACKAGE]
    print(f"bench: installing {NGINX_PACKAGE} with apt-get (the HTTP server of the connection scenario)", flush=True)
    for argv in (install, ["apt-get", "update", "-qq"], install):
        try:
            res = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            log.warning("%s: %s", " ".join(argv), exc)
            continue
        if argv is install and res.returncode == 0 and shutil.which("nginx"):
            return shutil.which("nginx"), f"nginx was installed by the bench (`apt-get install {NGINX_PACKAGE}`)"
    return None, f"`apt-get install {NGINX_PACKAGE}` failed"


def start_nginx(lab: Any, host: str, nginx: str, folder: Path, template: str, port: int) -> str:
    """nginx in ``host`` with ``template`` (NGINX_HEAD + a server block; format keys workers, dir, port) as
    its configuration in ``folder``, one worker per CPU; its version."""
    (folder / "tmp").mkdir(parents=True, exist_ok=True)
    conf = folder / "nginx.conf"
    conf.write_text(template.format(workers=os.cpu_count() or 1, dir=folder, port=port))
    lab.popen(host, [nginx, "-p", str(folder), "-c", str(conf)], name="nginx")
    return subprocess.run([nginx, "-v"], capture_output=True, text=True, check=False).stderr.strip()


def listening(lab: Any, host: str, port: int, proto: str = "tcp", timeout: float = 15.0) -> bool:
    """Wait until something listens on ``port`` in ``host`` without connecting to it (a bare connect upsets
    iperf3's server); False after ``timeout``."""
    flags = "-Hltn" if proto == "tcp" else "-Hlun"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if lab.exec(host, ["ss", flags, f"sport = :{port}"]).stdout.strip():
            return True
        time.sleep(0.2)
    return False


def helper_argv(module: str, *args: str) -> list[str]:
    """The command line of a bench helper: ``python -m MODULE ARGS``."""
    return [sys.executable, "-m", module, *args]


def helper_env() -> dict[str, str]:
    """The environment of a bench helper: the repository on the path, unbuffered output."""
    return {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}


def last_json(out: str) -> Any:
    """The JSON result a helper prints as its last line; ValueError or IndexError when there is none."""
    return json.loads(out.strip().splitlines()[-1])


def helper_results(procs: Sequence[subprocess.Popen], timeout: float, what: str) -> list[dict[str, Any]]:
    """The JSON result (last stdout line) of each helper process; BenchError naming ``what`` otherwise."""
    results = []
    for proc in procs:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise BenchError(f"{what} did not finish") from None
        try:
            results.append(last_json(out.decode()))
        except (ValueError, IndexError):
            raise BenchError(f"{what} failed: {err.decode()[-300:]}") from None
    return results
