"""A private clamd for the tests and the lab: its own config, socket and database folder under a
temporary folder, the starter database built by config/av/build-starter-db.sh (never the system
service, never freshclam)."""
from __future__ import annotations

import shutil
import socket
import subprocess
from pathlib import Path

from lab.daemon import stop_group, wait_up

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "config" / "av" / "build-starter-db.sh"
TESTFILES = Path("/usr/share/clamav-testfiles")


def missing() -> str | None:
    """Why a private clamd cannot run here, or None."""
    for tool in ("clamd", "sigtool"):
        if shutil.which(tool) is None and not Path("/usr/sbin", tool).exists():
            return f"`{tool}` is not installed (apt-get install clamav-daemon)"
    if not TESTFILES.is_dir():
        return f"{TESTFILES} is missing (apt-get install clamav-testfiles)"
    return None


def build_database(folder: Path) -> Path:
    subprocess.run([str(BUILD), str(folder), str(TESTFILES)], check=True, capture_output=True, text=True)
    return folder


SHIPPED_CONF = ROOT / "config" / "av" / "clamd.conf"  # the box's clamd (systemd/vcr-clamd.service)
# What a private clamd changes in the shipped file: its own paths, a log file instead of syslog.
PRIVATE = {
    "LocalSocket": "{sock}",
    "DatabaseDirectory": "{db}",
    "TemporaryDirectory": "{base}/tmp",
    "PidFile": "{base}/clamd.pid",
    "LogFile": "{base}/clamd.log",
    "LogSyslog": "no",
}


def private_conf(sock: str, db: Path, base: Path) -> str:
    """The shipped config/av/clamd.conf with a private clamd's paths (every other setting as shipped)."""
    values = {k: v.format(sock=sock, db=db, base=base) for k, v in PRIVATE.items()}
    out, seen = [], set()
    for line in SHIPPED_CONF.read_text().splitlines():
        key = line.split(None, 1)[0] if line.strip() and not line.lstrip().startswith("#") else ""
        if key in values:
            out.append(f"{key} {values[key]}")
            seen.add(key)
        elif key not in ("User", "LogFacility"):
            out.append(line)
    out += [f"{k} {v}" for k, v in values.items() if k not in seen]
    return "\n".join(out) + "\n"


class PrivateClamd:
    """``with PrivateClamd(folder) as c:`` ... ``c.socket``; ``database`` may name a folder to use
    (default: the starter database built into ``folder/db``)."""

    def __init__(self, folder: Path, database: Path | None = None) -> None:
        self.base = Path(folder)
        self.socket = str(self.base / "clamd.sock")
        self.database = database or self.base / "db"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, wait: float = 60.0) -> "PrivateClamd":
        (self.base / "tmp").mkdir(parents=True, exist_ok=True)
        if not self.database.exists():
            build_database(self.database)
        conf = self.base / "clamd.conf"
        conf.write_text(private_conf(self.socket, self.database, self.base))
        clamd = shutil.which("clamd") or "/usr/sbin/clamd"
        self.proc = subprocess.Popen([clamd, "-c", str(conf)], stdout=open(self.base / "clamd.out", "wb"),
                                     stderr=subprocess.STDOUT, start_new_session=True)
        if wait_up(self.proc, self.ping, wait):
            return self
        if self.proc.poll() is not None:
            raise RuntimeError(f"clamd exited: {(self.base / 'clamd.out').read_text(errors='replace')[-2000:]}")
        self.stop()
        raise RuntimeError("clamd did not answer in time")

    def ping(self) -> bool:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(1)
                s.connect(self.socket)
                s.sendall(b"zPING\0")
                return s.recv(16).startswith(b"PONG")
        except OSError:
            return False

    def stop(self) -> None:
        stop_group(self.proc)
        self.proc = None

    def __enter__(self) -> "PrivateClamd":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
