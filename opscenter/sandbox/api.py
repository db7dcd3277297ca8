"""The sandbox's device endpoints (device listener, the box's bearer token as every device endpoint):

- ``POST /api/v1/sandbox/verdicts`` ``{"sha256": [...]}`` (at most 256): the verdict of each hash,
  shared by every box (malicious, suspicious, clean, pending, unknown), with how long the box may
  keep it;
- ``POST /api/v1/sandbox/files?sha256=&name=&lan_host=&magic=`` with the file as the body
  (``application/octet-stream``, at most ``sandbox_max_bytes``): queue it for analysis (202). The
  body must hash to ``sha256``; each device has a rate (``sandbox_submit_rate``) and a daily quota
  (``sandbox_quota_files``). The verdict comes later through ``/verdicts``.
"""
from __future__ import annotations

import hashlib
import ipaddress
import logging
import re
from typing import Any, Callable

from fastapi import Depends, FastAPI, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from opscenter.db import Database, iso, utcnow
from opscenter.errors import CenterError
from opscenter.sandbox import queue

log = logging.getLogger("vcr-opscenter.sandbox")

SHA256 = re.compile(r"^[0-9a-f]{64}$")
MAX_LOOKUP = 256
FILES_PATH = "/api/v1/sandbox/files"


class VerdictQuery(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    sha256: list[str] = Field(..., min_length=1, max_length=MAX_LOOKUP)


def _ttl(verdict: str, settings: Any) -> int:
    if verdict in ("malicious", "suspicious"):
        return int(settings.sandbox_bad_ttl)
    if verdict == "clean":
        return int(settings.sandbox_clean_ttl)
    return 0  # pending / unknown: ask again


def _text(value: str, limit: int, what: str) -> str:
    if len(value) > limit or not value.isprintable():
        raise CenterError(400, "invalid", f"{what}: at most {limit} printable characters")
    return value


def install(app: FastAPI, settings: Any, db: Database, device: Callable[..., Any], token: Callable[..., str],
            limited: Callable[..., None], buckets: Any) -> None:
    @app.post("/api/v1/sandbox/verdicts", tags=["device"])
    def lookup(req: VerdictQuery, tok: str = Depends(token)) -> Any:
        device(tok)
        bad = [h for h in req.sha256 if not SHA256.match(h)]
        if bad:
            raise CenterError(400, "invalid", "sha256: expected 64 lower-case hex digits", extra={"bad": bad[:5]})
        found = queue.verdicts(db, req.sha256)
        for v in found.values():
            v["ttl"] = _ttl(v["verdict"], settings)
        return JSONResponse({"verdicts": found, "server_time": iso(utcnow())})

    @app.post(FILES_PATH, tags=["device"], status_code=202)
    async def submit_file(request: Request, sha256: str = Query(..., min_length=64, max_length=64),
                          name: str = Query("", max_length=255), lan_host: str = Query("", max_length=45),
                          magic: str = Query("", max_length=128), tok: str = Depends(token)) -> Any:
        if not SHA256.match(sha256):
            raise CenterError(400, "invalid", "sha256: expected 64 lower-case hex digits")
        _text(name, 255, "name")
        _text(magic, 128, "magic")
        if lan_host:
            try:
                lan_host = str(ipaddress.ip_address(lan_host))
            except ValueError:
                raise CenterError(400, "invalid", "lan_host: expected an IP address") from None
        ctype = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
        if ctype != "application/octet-stream":
            raise CenterError(415, "unsupported_media_type", "send the file as application/octet-stream")
        data = await request.body()  # BodyLimit already refused more than sandbox_max_bytes
        if not data:
            raise CenterError(400, "invalid", "empty file")
        if hashlib.sha256(data).hexdigest() != sha256:
            raise CenterError(400, "invalid", "the body does not hash to sha256")
        from filters.app.magic import detect

        magic = detect(data[:4096])  # from the bytes, as the box does: the declared one is not trusted

        def store() -> dict[str, Any]:
            with db.write() as conn:
                auth = device(tok, conn)
                limited(buckets, auth.device_id, "sandbox submissions from this device", conn)
                now = utcnow()
                quota = settings.sandbox_quota_files
                if quota and queue.submissions_today(db, auth.device_id, now, conn) >= quota:
                    raise CenterError(429, "quota_exceeded", f"sandbox quota of this device ({quota} files a UTC "
                                      "day) is used up", headers={"Retry-After": "3600"}, extra={"retry_after": 3600})
                queued = queue.submit(db, auth.device_id, sha256, data, filename=name, magic=magic,
                                      lan_host=lan_host, now=now, conn=conn)
            if queued:
                log.info("sandbox: %s (%s, %d bytes) queued from %s", sha256, name or "-", len(data), auth.device_id)
            v = queue.verdicts(db, [sha256])[sha256]
            return {"sha256": sha256, "queued": queued, "verdict": v["verdict"], "ttl": _ttl(v["verdict"], settings),
                    "server_time": iso(utcnow())}

        return JSONResponse(await run_in_threadpool(store), status_code=202)


def start_workers(db: Database, settings: Any) -> list[Any]:
    """The queue's worker threads of this process (``sandbox_workers``), with the static analyzer."""
    from opscenter.sandbox.analyzer import RULES_DIR, StaticAnalyzer
    from opscenter.sandbox.worker import SandboxWorker

    if not settings.sandbox or settings.sandbox_workers <= 0:
        return []
    dirs = [RULES_DIR] + ([settings.sandbox_rules] if settings.sandbox_rules else [])
    analyzer = StaticAnalyzer(dirs, clamd_socket=settings.sandbox_clamd_socket)
    workers = [SandboxWorker(db, analyzer, name=f"sandbox-worker-{i}") for i in range(settings.sandbox_workers)]
    for w in workers:
        w.start()
    return workers
