"""A throwaway PostgreSQL cluster in a temporary folder (tests and the scale benchmark).

``initdb`` + ``pg_ctl start`` as user ``postgres`` (through ``runuser`` when running as root), on a
unix socket in the folder (and optionally 127.0.0.1); ``stop()`` stops it and deletes the folder.

    with PgTemp() as pg:
        url = pg.url          # postgresql+psycopg://postgres@/opscenter?host=/tmp/vcr-pg-.../sock&port=...
"""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Any

PG_USER = "postgres"


def find_bindir() -> Path | None:
    """The folder holding ``initdb`` and ``pg_ctl``: $PG_BINDIR, PATH, or the newest /usr/lib/postgresql/*/bin."""
    env = os.environ.get("PG_BINDIR")
    if env and (Path(env) / "pg_ctl").exists():
        return Path(env)
    which = shutil.which("pg_ctl")
    if which and shutil.which("initdb"):
        real = Path(which).resolve().parent  # /usr/local/bin/pg_ctl may be a lone symlink
        if (real / "initdb").exists():
            return real

    def version(p: str) -> float:
        try:
            return float(Path(p).parent.name)
        except ValueError:
            return 0.0

    for cand in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True):
        if (Path(cand) / "pg_ctl").exists() and (Path(cand) / "initdb").exists():
            return Path(cand)
    return None


def unavailable_reason() -> str | None:
    """Why a throwaway cluster cannot run here, or None."""
    if find_bindir() is None:
        return "PostgreSQL server binaries (initdb, pg_ctl) not found (apt-get install postgresql)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(PG_USER)
        except KeyError:
            return f"running as root but there is no {PG_USER!r} user to run the server as"
        if shutil.which("runuser") is None:
            return "running as root and `runuser` is missing"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PgTemp:
    """A private PostgreSQL server; ``fsync`` off makes tests fast (the benchmark keeps it on)."""

    def __init__(self, *, tcp: bool = False, fsync: bool = True, dbname: str = "opscenter",
                 max_connections: int = 300, settings: dict[str, Any] | None = None, base: str | None = None) -> None:
        self.tcp = tcp
        self.fsync = fsync
        self.dbname = dbname
        self.max_connections = max_connections
        self.extra = settings or {}
        self.base = base
        self.dir: Path | None = None
        self.port = 0
        self.bindir: Path | None = None
        self.started = False

    # paths --------------------------------------------------------------------------------------
    @property
    def data(self) -> Path:
        assert self.dir is not None
        return self.dir / "data"

    @property
    def sockdir(self) -> Path:
        assert self.dir is not None
        return self.dir / "sock"

    @property
    def logfile(self) -> Path:
        assert self.dir is not None
        return self.dir / "postgres.log"

    @property
    def url(self) -> str:
        """SQLAlchemy URL (psycopg 3)."""
        if self.tcp:
            return f"postgresql+psycopg://{PG_USER}@127.0.0.1:{self.port}/{self.dbname}"
        return f"postgresql+psycopg://{PG_USER}@/{self.dbname}?host={self.sockdir}&port={self.port}"

    @property
    def dsn(self) -> str:
        """libpq connection string (psql, psycopg)."""
        host = "127.0.0.1" if self.tcp else str(self.sockdir)
        return f"host={host} port={self.port} user={PG_USER} dbname={self.dbname}"

    # lifecycle ----------------------------------------------------------------------------------
    def _run(self, *argv: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        cmd = list(argv)
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", PG_USER, "--", *cmd]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd="/", check=False)
        if r.returncode != 0:
            log = self.logfile.read_text(errors="replace")[-3000:] if self.dir and self.logfile.exists() else ""
            raise RuntimeError(f"{' '.join(argv[:2])} failed ({r.returncode}): {r.stderr.strip() or r.stdout.strip()}"
                               + (f"\n--- server log ---\n{log}" if log else ""))
        return r

    def start(self) -> "PgTemp":
        reason = unavailable_reason()
        if reason:
            raise RuntimeError(f"cannot start a throwaway PostgreSQL: {reason}")
        self.bindir = find_bindir()
        assert self.bindir is not None
        self.dir = Path(tempfile.mkdtemp(prefix="vcr-pg-", dir=self.base or "/tmp"))
        self.sockdir.mkdir()
        if os.geteuid() == 0:
            pw = pwd.getpwnam(PG_USER)
            for p in (self.dir, self.sockdir):
                os.chown(p, pw.pw_uid, pw.pw_gid)
        self.port = _free_port()
        try:
            self._run(str(self.bindir / "initdb"), "-D", str(self.data), "-U", PG_USER, "--auth=trust",
                      "-E", "UTF8", "--locale=C", "--no-sync")
            conf = {
                "listen_addresses": "'127.0.0.1'" if self.tcp else "''",
                "port": str(self.port),
                "unix_socket_directories": f"'{self.sockdir}'",
                "max_connections": str(self.max_connections),
                "shared_buffers": "'256MB'",
                "fsync": "on" if self.fsync else "off",
                "synchronous_commit": "on" if self.fsync else "off",
                "full_page_writes": "on" if self.fsync else "off",
                "logging_collector": "off",
                **{k: str(v) for k, v in self.extra.items()},
            }
            with open(self.data / "postgresql.conf", "a", encoding="utf-8") as f:
                f.write("\n# vcr-agent throwaway cluster\n")
                f.writelines(f"{k} = {v}\n" for k, v in conf.items())
            self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.logfile), "-w", "-t", "60",
                      "start")
            self.started = True
            self._run(str(self.bindir / "createdb"), "-h", str(self.sockdir), "-p", str(self.port), "-U", PG_USER,
                      self.dbname)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.started and self.bindir is not None:
            try:
                self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "-t", "60", "stop")
            except (RuntimeError, subprocess.TimeoutExpired):
                self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop")
            self.started = False
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def psql(self, sql: str) -> str:
        assert self.bindir is not None
        return self._run(str(self.bindir / "psql"), "-X", "-A", "-t", "-h", str(self.sockdir), "-p", str(self.port),
                         "-U", PG_USER, "-d", self.dbname, "-c", sql).stdout

    def __enter__(self) -> "PgTemp":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
