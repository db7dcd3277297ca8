"""Change requests: about 4 a month per contract (``change_requests_per_month``), each due 5 business
days after the day it was filed (``change_due_business_days``; weekends, Japanese public holidays and
Dec 29 - Jan 3 do not count: opscenter/panel/bizdays.py)."""
from __future__ import annotations

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import Response

from opscenter.db import utcnow
from opscenter.panel import bizdays, store
from opscenter.panel.pages import form_fields, found
from opscenter.panel.web import Auth, NavItem, auth, kit_of, not_found

router = APIRouter()
NAV = [NavItem("/changes", "nav.changes", 30)]


def _page(request: Request, a: Auth, status: int = 200, error: str | None = None, form: dict | None = None,
          **values: object) -> Response:
    kit = kit_of(request)
    s = kit.settings
    q = store.quota(kit.db, a.contract_id, bizdays.month_of(utcnow()), s.change_requests_per_month)
    return kit.render(request, "customer/changes.html", status, quota=q,
                      changes=store.changes(kit.db, a.contract_id), categories=store.CHANGE_CATEGORIES,
                      error=error, values=values, form=form or {}, days=s.change_due_business_days,
                      due_if_today=bizdays.due_date(utcnow(), s.change_due_business_days))


@router.get("/changes")
def change_list(request: Request, a: Auth = Depends(auth)) -> Response:
    return _page(request, a)


@router.post("/changes")
async def file_change(request: Request, a: Auth = Depends(auth)) -> Response:
    kit = kit_of(request)
    data = await form_fields(request, ("category", "summary", "detail"))
    try:
        row = store.create_change(kit.db, a.contract_id, by=a.name, per_month=kit.settings.change_requests_per_month,
                                  business_days=kit.settings.change_due_business_days, **data)
    except store.Refused as exc:
        return _page(request, a, 409 if exc.key == "quota_used" else 400, error=f"changes.err.{exc.key}", form=data,
                     **exc.values)
    return kit.redirect(f"/changes/{row['id']}", done="filed")


@router.get("/changes/{request_id}")
def change_detail(request: Request, request_id: int = Path(ge=1, le=2**62), a: Auth = Depends(auth)) -> Response:
    kit = kit_of(request)
    row = found(store.change, kit.db, request_id, a.contract_id)
    return kit.render(request, "customer/change.html", c=row)


@router.post("/changes/{request_id}/cancel")
def cancel_change(request: Request, request_id: int = Path(ge=1, le=2**62), a: Auth = Depends(auth)) -> Response:
    kit = kit_of(request)
    try:
        store.cancel_change(kit.db, request_id, a.contract_id, a.name)
    except store.NotFound:
        raise not_found() from None
    except store.Refused:
        return kit.redirect(f"/changes/{request_id}", done="not_cancellable")
    return kit.redirect(f"/changes/{request_id}", done="cancelled")
