"""Replacement requests from customers, and the existing replacement-code flow
(``enroll.replacement_code``, as ``vcr-opscenter replace``): admins only."""
from __future__ import annotations

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import Response

from opscenter.enroll import replacement_code
from opscenter.panel import store
from opscenter.panel.pages import found, save_status
from opscenter.panel.web import Auth, NavItem, kit_of, role

router = APIRouter()
NAV = [NavItem("/replacements", "nav.replacements", 40)]


@router.get("/replacements")
def replacement_list(request: Request, a: Auth = Depends(role("operator")), status: str = Query("open")
                     ) -> Response:
    kit = kit_of(request)
    status = status if status in ("open", "all", *store.REPLACEMENT_STATUSES) else "open"
    rows = store.replacements(kit.db, None, status=None if status == "all" else status)
    return kit.render(request, "console/replacements.html", requests=rows, status=status)


@router.get("/replacements/{request_id}")
def replacement_detail(request: Request, request_id: int = Path(ge=1, le=2**62),
                       a: Auth = Depends(role("operator"))) -> Response:
    kit = kit_of(request)
    row = found(store.replacement, kit.db, request_id, None)
    box = store.contract_box(kit.db, row["contract_id"], kit.settings.offline_after_missed)
    return kit.render(request, "console/replacement.html", r=row, box=box, statuses=store.REPLACEMENT_STATUSES)


@router.post("/replacements/{request_id}/status")
async def replacement_status(request: Request, request_id: int = Path(ge=1, le=2**62),
                             a: Auth = Depends(role("operator"))) -> Response:
    return await save_status(request, store.set_replacement_status, request_id, a.name, f"/replacements/{request_id}")


@router.post("/replacements/{request_id}/code")
async def issue_code(request: Request, request_id: int = Path(ge=1, le=2**62), a: Auth = Depends(role("admin"))
                     ) -> Response:
    """Issue the replacement code (shown once, here): the new box activates with it, the contract moves
    to it and the failed box's token is revoked."""
    kit = kit_of(request)
    form = await request.form()
    row = found(store.replacement, kit.db, request_id, None)
    serial = str(form.get("serial") or "").strip() or None
    if serial is not None and (len(serial) > 128 or not serial.isprintable()):
        return kit.render(request, "error.html", 400, key="err.invalid")
    issued = replacement_code(kit.db, row["contract_id"], serial=serial, valid_days=kit.settings.code_valid_days)
    store.record_code_issued(kit.db, request_id, a.name, serial)
    return kit.render(request, "console/secret.html", title_key="crepl.code_title", secret=issued.code,
                      lines=[("crepl.contract", row["contract_id"]), ("crepl.serial", serial or "-"),
                             ("crepl.expires", issued.as_dict()["expires_at"] or "-")],
                      back=kit.url(f"/replacements/{request_id}"), note_key="crepl.code_note")
