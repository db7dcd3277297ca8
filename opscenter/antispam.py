"""The center's anti-spam learning: boxes report spam and ham, the center's rspamd learns them.

Each box scores its own mail with its own rspamd (docs/mail.md, "Anti-spam"); what one office
learns reaches the others through the center. ``POST /api/v1/antispam/learn`` (device token) takes
one message a box reports (``class`` spam or ham, the RFC 822 bytes in base64) and has the center's
rspamd controller learn it: Bayes (``/learnspam``, ``/learnham``) and, unless ``fuzzy`` is false,
its fuzzy hashes (flag 1 spam, 3 ham). What the center's rspamd learnt goes back to the boxes in the
``antispam`` bundle (not built yet).

Only installed when ``antispam_controller`` names the center's rspamd controller.

``POST /api/v1/antispam/report`` (device token; always installed) takes the box's queued reports of
clear spam (agent/link/spamreport.py): SHA-256 digests of text parts and attachments, and the whole
message only when the customer consented (learnt as above when a controller is set). A digest is
listed once ``antispam_digest_min_devices`` boxes reported it; the check-in reply carries the
digests listed lately (``known_digests``) and every box adds ``digest_score`` to a message with a
listed part. Per-device rate limit; schema-checked (at most MAX_REPORTS reports of MAX_DIGESTS
digests each).
"""
from __future__ import annotations

import base64
import binascii
import logging
from typing import Any, Callable, Literal

import datetime as dt
import re

from fastapi import Depends, FastAPI
from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import and_, select, update

from filters.antispam.rspamd import RspamdClient, RspamdError
from opscenter.db import Database, antispam_digests, antispam_reporters, utcnow
from opscenter.errors import CenterError

log = logging.getLogger("vcr-opscenter")

FUZZY_FLAG = {"spam": 1, "ham": 3}  # rspamd's FUZZY_DENIED and FUZZY_WHITE
MAX_REPORTS = 50  # per request
MAX_DIGESTS = 16  # per report (filters/antispam/report.py sends at most that many)
REPORT_PATH = "/api/v1/antispam/report"


class SpamReport(BaseModel):
    model_config = ConfigDict(extra="forbid")

    score: float = Field(ge=0, le=10_000, description="the box's score")
    direction: Literal["received", "sent"]
    digests: list[str] = Field(max_length=MAX_DIGESTS, description="SHA-256 (hex) of normalised text parts and attachments")
    message: str | None = Field(None, min_length=4, description="the whole message, base64 (only with the customer's consent)")

    @field_validator("digests")
    @classmethod
    def _hex(cls, v: list[str]) -> list[str]:
        for d in v:
            if not re.fullmatch(r"[0-9a-f]{64}", d):
                raise ValueError(f"not a lowercase hex SHA-256: {d[:80]!r}")
        return v


class ReportBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reports: list[SpamReport] = Field(min_length=1, max_length=MAX_REPORTS)


def record_digests(db: Database, device_id: str, digests: list[str], *, min_devices: int, conn: Any = None,
                   now: dt.datetime | None = None) -> int:
    """Count one report of each digest by this device; returns how many became listed."""
    now = now or utcnow()
    listed = 0
    d, r = antispam_digests.c, antispam_reporters.c
    with db.write(conn) as c:
        for digest in dict.fromkeys(digests):
            row = c.execute(select(d.devices, d.listed).where(d.digest == digest)).first()
            new_device = c.execute(select(r.digest).where(and_(r.digest == digest, r.device_id == device_id))).first() is None
            if new_device:
                c.execute(antispam_reporters.insert().values(digest=digest, device_id=device_id))
            if row is None:
                devices = 1
                is_listed = devices >= min_devices
                c.execute(antispam_digests.insert().values(digest=digest, reports=1, devices=1, listed=is_listed,
                                                           first_at=now, updated_at=now))
                listed += int(is_listed)
                continue
            devices = int(row.devices) + int(new_device)
            becomes = not row.listed and devices >= min_devices
            c.execute(update(antispam_digests).where(d.digest == digest).values(
                reports=d.reports + 1, devices=devices, listed=bool(row.listed) or becomes,
                **({"updated_at": now} if becomes or not row.listed else {})))
            listed += int(becomes)
    return listed


def listed_since(db: Database, since: dt.datetime, *, limit: int = 5000, conn: Any = None) -> list[str]:
    """The digests listed since ``since`` (newest first, at most ``limit``): sent with each check-in."""
    d = antispam_digests.c
    with db.read(conn) as c:
        return [row.digest for row in c.execute(select(d.digest).where(and_(d.listed.is_(True), d.updated_at >= since))
                                                .order_by(d.updated_at.desc()).limit(limit))]


def install_reports(app: FastAPI, db: Database, device: Callable[..., Any], token: Callable[..., str],
                    limited: Callable[..., None], buckets: Any, *, min_devices: int = 1,
                    learner: RspamdClient | None = None) -> None:
    @app.post(REPORT_PATH, tags=["device"])
    def report(batch: ReportBatch, tok: str = Depends(token)) -> dict[str, Any]:
        raws: list[bytes] = []
        with db.write() as conn:  # an error rolls the whole batch back: a bad batch leaves no trace
            auth = device(tok, conn)
            for rep in batch.reports:
                if rep.message is not None:
                    try:
                        raws.append(base64.b64decode(rep.message, validate=True))
                    except (binascii.Error, ValueError):
                        raise CenterError(400, "bad_request", "message: not base64") from None
            limited(buckets, auth.device_id, "spam reports from this device", conn)
            digests = [x for rep in batch.reports for x in rep.digests]
            listed = record_digests(db, auth.device_id, digests, min_devices=min_devices, conn=conn)
        learnt = 0
        for raw in raws if learner is not None else []:
            try:
                learner.learn(raw, True)
                try:
                    learner.fuzzy_add(raw, FUZZY_FLAG["spam"])
                except RspamdError:
                    pass  # no part large enough to hash
                learnt += 1
            except RspamdError as exc:  # the digests are stored; the message is not worth a retry storm
                log.warning("antispam: a consented message from %s not learnt: %s", auth.serial, exc)
        return {"accepted": len(batch.reports), "digests": len(set(digests)), "listed": listed, "learnt": learnt}


class LearnRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    label: Literal["spam", "ham"] = Field(alias="class", description="what the message is")
    message: str = Field(min_length=4, description="the RFC 822 message, base64")
    fuzzy: bool = Field(True, description="also learn its fuzzy hashes")


class LearnReply(BaseModel):
    label: str = Field(serialization_alias="class")
    bayes: str  # learnt, already (learnt before), skipped (rspamd already sure of that class)
    fuzzy: str  # added, skipped (no part large enough to hash, or not asked)


def install(app: FastAPI, controller: str, password: str, device: Callable[[str], Any], token: Callable[..., str],
            timeout: float = 30.0) -> None:
    """Add the endpoint; ``device(token)`` authenticates (raises the center's 401)."""
    client = RspamdClient(controller, timeout=timeout, password=password)

    @app.post("/api/v1/antispam/learn", tags=["device"])
    def learn(req: LearnRequest, tok: str = Depends(token)) -> dict[str, Any]:
        auth = device(tok)
        try:
            raw = base64.b64decode(req.message, validate=True)
        except (binascii.Error, ValueError):
            raise CenterError(400, "bad_request", "message: not base64") from None
        spam = req.label == "spam"
        try:
            r = client.learn(raw, spam)
            bayes = "already" if r.get("already") else "skipped" if r.get("skipped") else "learnt"
            fuzzy = "skipped"
            if req.fuzzy:
                try:
                    client.fuzzy_add(raw, FUZZY_FLAG[req.label])
                    fuzzy = "added"
                except RspamdError as exc:  # e.g. no text part large enough to hash
                    log.info("antispam: fuzzy hashes of a %s report from %s not added: %s", req.label,
                             getattr(auth, "serial", "?"), exc)
        except RspamdError as exc:
            log.warning("antispam: learning a report from %s failed: %s", getattr(auth, "serial", "?"), exc)
            raise CenterError(503, "unavailable", "the center's spam learning is unavailable; retry later",
                              headers={"Retry-After": "300"}) from None
        return {"class": req.label, "bayes": bayes, "fuzzy": fuzzy}
