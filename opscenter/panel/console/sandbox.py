"""The sandbox queue (opscenter/sandbox/): every file the boxes submitted, its verdict with the
analyzer's reasons, the boxes and LAN hosts that got it; an admin may override a verdict (with a note,
recorded in sandbox_overrides and the center's log). Operators see, admins decide."""
from __future__ import annotations

import re

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from opscenter.panel.web import Auth, NavItem, kit_of, not_found, role
from opscenter.sandbox import queue

router = APIRouter()
NAV = [NavItem("/sandbox", "nav.sandbox", 25)]
FILTERS = ("all", "queued", "running", "done", "failed")
SHA256 = re.compile(r"^[0-9a-f]{64}$")
CHOICES = ("malicious", "suspicious", "clean")


@router.get("/sandbox")
def sandbox_queue(request: Request, a: Auth = Depends(role("operator")), status: str = Query("all")) -> Response:
    kit = kit_of(request)
    status = status if status in FILTERS else "all"
    rows = queue.listing(kit.db, status=None if status == "all" else status)
    return kit.render(request, "console/sandbox.html", files=rows, status=status, filters=FILTERS)


def _file(request: Request, sha256: str) -> dict:
    if not SHA256.match(sha256):
        raise not_found()
    row = queue.detail(kit_of(request).db, sha256)
    if row is None:
        raise not_found()
    return row


@router.get("/sandbox/{sha256}")
def sandbox_file(request: Request, sha256: str, a: Auth = Depends(role("operator"))) -> Response:
    kit = kit_of(request)
    return kit.render(request, "console/sandbox_file.html", f=_file(request, sha256), choices=CHOICES)


@router.post("/sandbox/{sha256}/override")
async def sandbox_override(request: Request, sha256: str, a: Auth = Depends(role("admin"))) -> Response:
    kit = kit_of(request)
    _file(request, sha256)
    form = await request.form()
    verdict = str(form.get("verdict") or "")
    note = str(form.get("note") or "").strip()
    if verdict not in (*CHOICES, "analyzer") or not note or len(note) > 1000:
        return kit.render(request, "error.html", 400, key="err.invalid")
    queue.override(kit.db, sha256, None if verdict == "analyzer" else verdict, note, a.name)
    return kit.redirect(f"/sandbox/{sha256}", done="saved")
