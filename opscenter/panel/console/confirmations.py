"""Installation confirmations (設置確認): every active box and every sheet without a box yet, not
confirmed first (opscenter/confirm.py list_confirmations)."""
from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from opscenter import confirm
from opscenter.panel.web import Auth, NavItem, kit_of, role

router = APIRouter()
NAV = [NavItem("/confirmations", "nav.confirmations", 56, role="operator")]
ORDER = {"pending": 0, "not_installed": 1, "confirmed": 2}


@router.get("/confirmations")
def confirmation_list(request: Request, a: Auth = Depends(role("operator"))) -> Response:
    kit = kit_of(request)
    rows = sorted(confirm.list_confirmations(kit.db), key=lambda r: ORDER.get(r["status"], 0))  # stable
    return kit.render(request, "console/confirmations.html", rows=rows,
                      open=sum(1 for r in rows if r["status"] != "confirmed"))
