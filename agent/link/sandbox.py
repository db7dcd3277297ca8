"""The box's sandbox client: the verdict cache on disk, and the center's sandbox endpoints.

``check(args)`` is the ``sandbox_check`` performer (agent/dataplane/performers.py) behind the
sandbox engine's hold (filters/sandbox/engine.py). For one file it answers, in order:

1. the box's verdict cache (SQLite, ``cache_file``; kept across restarts, shared by the workers):
   malicious/suspicious for ``bad_ttl``, clean for ``clean_ttl``, an unknown or failed lookup for
   ``unknown_ttl`` (the file is not submitted again meanwhile);
2. the center's shared verdicts (``POST /api/v1/sandbox/verdicts``);
3. unknown: the file is submitted (``POST /api/v1/sandbox/files``; at most ``max_submit_size``
   bytes and ``submit_rate`` files a minute per worker process), then the center is asked again
   every ``poll_interval`` seconds until a verdict, at most ``verdict_wait`` seconds after the
   start. The engine's hold may have timed out long before (the file passed): the verdict then
   goes to the engine late, which raises the retro alarm.

Same TLS link and credential as the other center traffic: https only, the center's CA file alone
(never the system store), the device token of the link's state file, no redirects.
"""
from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
from typing import Any, Mapping

import requests

log = logging.getLogger(__name__)

FINAL = ("malicious", "suspicious", "clean")
_SESSION = requests.Session()
_SESSION.trust_env = False  # no proxy, netrc or CA bundle from the environment


# -- the verdict cache on disk ------------------------------------------------------------------------
class VerdictCache:
    """sha256 -> (verdict, score, reasons, expires), in SQLite (WAL: several worker processes)."""

    def __init__(self, path: str) -> None:
        self.path = path
        if path != ":memory:":
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self.db = sqlite3.connect(path, timeout=5.0, check_same_thread=False, isolation_level=None)
        self.lock = threading.Lock()
        with self.lock:
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("CREATE TABLE IF NOT EXISTS verdicts (sha256 TEXT PRIMARY KEY, verdict TEXT NOT NULL, "
                            "score INTEGER, reasons TEXT NOT NULL, expires REAL NOT NULL, updated REAL NOT NULL)")

    def get(self, sha256: str, now: float | None = None) -> dict[str, Any] | None:
        now = time.time() if now is None else now
        with self.lock:
            row = self.db.execute("SELECT verdict, score, reasons, expires FROM verdicts WHERE sha256 = ?",
                                  (sha256,)).fetchone()
        if row is None or row[3] < now:
            return None
        try:
            reasons = json.loads(row[2])
        except ValueError:
            reasons = []
        return {"verdict": row[0], "score": row[1], "reasons": reasons, "source": "cache"}

    def put(self, sha256: str, verdict: str, ttl: float, score: Any = None, reasons: Any = (),
            now: float | None = None) -> None:
        now = time.time() if now is None else now
        with self.lock:
            self.db.execute("INSERT OR REPLACE INTO verdicts VALUES (?, ?, ?, ?, ?, ?)",
                            (sha256, verdict, score if isinstance(score, int) else None,
                             json.dumps([str(r)[:300] for r in list(reasons or [])[:20]]), now + ttl, now))

    def prune(self, now: float | None = None) -> int:
        now = time.time() if now is None else now
        with self.lock:
            return self.db.execute("DELETE FROM verdicts WHERE expires < ?", (now,)).rowcount


_CACHES: dict[str, VerdictCache] = {}
_CACHE_LOCK = threading.Lock()


def cache_at(path: str) -> VerdictCache:
    with _CACHE_LOCK:
        c = _CACHES.get(path)
        if c is None:
            c = _CACHES[path] = VerdictCache(path)
        return c


# -- the box's own bound on submissions ---------------------------------------------------------------
class _Bucket:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.tokens: float | None = None
        self.at = 0.0

    def take(self, per_minute: float, burst: float) -> bool:
        now = time.monotonic()
        with self.lock:
            if self.tokens is None:
                self.tokens, self.at = burst, now
            self.tokens = min(burst, self.tokens + (now - self.at) * per_minute / 60.0)
            self.at = now
            if self.tokens < 1:
                return False
            self.tokens -= 1
            return True


_SUBMITS = _Bucket()


# -- the center ---------------------------------------------------------------------------------------
def _token(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return str(json.load(f).get("token", ""))
    except (OSError, ValueError, AttributeError):
        return ""


class Center:
    def __init__(self, args: Mapping[str, Any]) -> None:
        self.url = str(args.get("url") or "").rstrip("/")
        self.ca_file = str(args.get("ca_file") or "")
        if not self.url.lower().startswith("https://"):
            raise ValueError("sandbox refused: the center URL is not https:// (the token would go in clear text)")
        if not self.ca_file:
            raise ValueError("sandbox refused: no CA file of the center (the system CAs are not used)")
        token = _token(str(args.get("auth_file") or ""))
        # the box's credential as agent.link.center.auth_headers presents it (not imported: center.py imports
        # this module for the check-in's verdicts)
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.timeout = float(args.get("timeout", 10.0))

    def _post(self, path: str, **kw: Any) -> requests.Response:
        resp = _SESSION.post(self.url + path, headers={**self.headers, **kw.pop("headers", {})}, verify=self.ca_file,
                             timeout=self.timeout, allow_redirects=False, **kw)
        if resp.status_code >= 300:
            raise CenterRefused(resp.status_code, resp.text[:300])
        return resp

    def verdict(self, sha256: str) -> dict[str, Any]:
        data = self._post("/api/v1/sandbox/verdicts", json={"sha256": [sha256]}).json()
        v = data.get("verdicts", {}).get(sha256) if isinstance(data, dict) else None
        if not isinstance(v, dict) or not isinstance(v.get("verdict"), str):
            raise ValueError("answer has no verdict")
        return v

    def submit(self, sha256: str, data: bytes, name: str, lan_host: str, magic: str) -> dict[str, Any]:
        params = {"sha256": sha256, "name": name[:255], "lan_host": lan_host, "magic": magic[:128]}
        return self._post("/api/v1/sandbox/files", params=params, data=data,
                          headers={"Content-Type": "application/octet-stream"}).json()


class CenterRefused(Exception):
    def __init__(self, status: int, text: str) -> None:
        super().__init__(f"center answered {status}: {text}")
        self.status = status


def _ttl(args: Mapping[str, Any], verdict: str, center_ttl: Any = None) -> float:
    if verdict in ("malicious", "suspicious"):
        mine = float(args.get("bad_ttl", 7 * 86400))
    elif verdict == "clean":
        mine = float(args.get("clean_ttl", 6 * 3600))
    else:
        return float(args.get("unknown_ttl", 60))
    return min(mine, float(center_ttl)) if isinstance(center_ttl, (int, float)) and center_ttl > 0 else mine


def check(args: Mapping[str, Any]) -> dict[str, Any]:
    """The verdict of one file: {"verdict", "score", "reasons", "source", "submitted"} (see the module text).
    ``verdict`` is malicious, suspicious, clean, pending (no verdict within verdict_wait) or unknown (not
    submitted: too large, refused, rate). Raises only when the center cannot be asked at all."""
    started = time.monotonic()
    sha = str(args["sha256"])
    cache = cache_at(str(args.get("cache_file") or ":memory:"))
    data_src = args.get("data")
    hit = cache.get(sha)
    if hit is not None:
        if data_src is not None and hasattr(data_src, "take"):
            data_src.take()  # let the bytes go
        return {**hit, "submitted": False}
    center = Center(args)
    v = center.verdict(sha)
    verdict = v["verdict"]
    submitted = False
    if verdict in FINAL:
        cache.put(sha, verdict, _ttl(args, verdict, v.get("ttl")), v.get("score"), v.get("reasons"))
        return {"verdict": verdict, "score": v.get("score"), "reasons": v.get("reasons", []), "source": "center",
                "submitted": False}
    data = data_src.take() if data_src is not None and hasattr(data_src, "take") else bytes(data_src or b"")
    if verdict == "unknown":
        why = ""
        if not args.get("submit", True):
            why = "submission off"
        elif not data:
            why = "no data"
        elif len(data) > int(args.get("max_submit_size", 10 << 20)):
            why = "too large to submit"
        elif not _SUBMITS.take(float(args.get("submit_rate", 30)), float(args.get("submit_burst", 10))):
            why = "submission rate of the box exceeded"
        if why:
            cache.put(sha, "unknown", _ttl(args, "unknown"))
            return {"verdict": "unknown", "reasons": [why], "source": "box", "submitted": False}
        try:
            reply = center.submit(sha, data, str(args.get("name") or ""), str(args.get("lan_host") or ""),
                                  str(args.get("magic") or ""))
        except CenterRefused as exc:
            cache.put(sha, "unknown", _ttl(args, "unknown"))
            return {"verdict": "unknown", "reasons": [str(exc)[:200]], "source": "center", "submitted": False}
        submitted = True
        verdict = str(reply.get("verdict") or "pending")
        log.info("sandbox: submitted %s (%s, %d bytes)", sha, args.get("name") or "-", len(data))
    del data
    deadline = started + float(args.get("verdict_wait", 600))
    interval = float(args.get("poll_interval", 2.0))
    while verdict not in FINAL and time.monotonic() + interval <= deadline:
        time.sleep(interval)
        try:
            v = center.verdict(sha)
        except (requests.RequestException, CenterRefused, ValueError) as exc:
            log.debug("sandbox: verdict of %s not fetched: %s", sha, exc)
            continue
        verdict = v["verdict"]
        if verdict == "unknown":  # the analysis failed at the center
            break
    if verdict in FINAL:
        cache.put(sha, verdict, _ttl(args, verdict, v.get("ttl")), v.get("score"), v.get("reasons"))
        return {"verdict": verdict, "score": v.get("score"), "reasons": v.get("reasons", []), "source": "center",
                "submitted": submitted}
    return {"verdict": "pending" if verdict == "pending" else "unknown", "reasons": [], "source": "center",
            "submitted": submitted}


def apply_verdicts(section: Mapping[str, Any], verdicts: Any, now: float | None = None) -> int:
    """Verdicts from a check-in reply ({sha256: verdict}) written into the verdict cache of the sandbox
    engine's section (``cache_file``, the TTLs); returns how many were stored. Malformed entries are
    skipped."""
    if not isinstance(verdicts, Mapping):
        return 0
    cache = cache_at(str(section.get("cache_file") or "/var/lib/vcr-agent/sandbox-verdicts.db"))
    n = 0
    for sha, verdict in list(verdicts.items())[:5000]:
        if not (isinstance(sha, str) and len(sha) == 64 and all(c in "0123456789abcdef" for c in sha)
                and verdict in FINAL):
            continue
        cache.put(sha, verdict, _ttl(section, verdict), reasons=["verdict from the center's check-in reply"], now=now)
        n += 1
    return n
