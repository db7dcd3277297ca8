"""Monthly reports: the contract's stored reports (opscenter/report/, generated on schedule) to download:
the PDF, the HTML and the signed operating record. Only the session's own contract is ever read."""
from __future__ import annotations

import logging
import re
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import Response

from opscenter.panel.web import Auth, NavItem, auth, kit_of
from opscenter.report.signing import SigningKey
from opscenter.report.store import list_reports, report_file

log = logging.getLogger("vcr-opscenter")

router = APIRouter()
NAV = [NavItem("/reports", "nav.reports", 50)]

FILES = {  # kind -> (media type, file name suffix)
    "pdf": ("application/pdf", "pdf"),
    "html": ("text/html; charset=utf-8", "html"),
    "record": ("application/json", "record.json"),
}


def signing_key(settings: Any) -> tuple[str, str] | None:
    """(key id, public key PEM) of the center's report signing key (``report_key``), or None."""
    path = getattr(settings, "report_key", None)
    if not path:
        return None
    try:
        key = SigningKey.load(path)
    except (OSError, ValueError) as exc:
        log.warning("report signing key %s unreadable: %s", path, exc)
        return None
    return key.key_id, key.public_pem


@router.get("/reports")
def reports(request: Request, a: Auth = Depends(auth)) -> Response:
    kit = kit_of(request)
    rows = [r for r in list_reports(kit.db, a.contract_id) if r["status"] == "done"]
    key = signing_key(kit.settings)
    return kit.render(request, "customer/reports.html", reports=rows, key_id=key[0] if key else None)


@router.get("/reports/report-signing.pub")
def public_key(request: Request, a: Auth = Depends(auth)) -> Response:
    """The center's public key, to verify the signed operating records offline."""
    key = signing_key(kit_of(request).settings)
    if key is None:
        raise HTTPException(404)
    return Response(key[1].encode("ascii"), media_type="application/x-pem-file",
                    headers={"Content-Disposition": 'attachment; filename="report-signing.pub"'})


@router.get("/reports/{month}/{kind}")
def download(month: str, kind: str, request: Request, a: Auth = Depends(auth)) -> Response:
    if kind not in FILES or not re.fullmatch(r"20\d\d-(0[1-9]|1[0-2])", month):
        raise HTTPException(404)
    data = report_file(kit_of(request).db, a.contract_id, month, kind)
    if data is None:
        raise HTTPException(404)
    media, suffix = FILES[kind]
    name = f"vcr-report-{month}.{suffix}"
    return Response(data if isinstance(data, bytes) else str(data).encode("utf-8"), media_type=media,
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})
