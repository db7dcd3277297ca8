"""Customer administrator accounts (admins only): add (with an initial password shown once), disable,
enable, new password, reset TOTP; and which role each operator has."""
from __future__ import annotations

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import Response

from opscenter.panel import accounts
from opscenter.panel.web import Auth, NavItem, kit_of, not_found, role

router = APIRouter()
NAV = [NavItem("/customers", "nav.customers", 60, role="admin")]


def _page(request: Request, status: int = 200, error: str | None = None, form: dict | None = None) -> Response:
    kit = kit_of(request)
    return kit.render(request, "console/customers.html", status, customers=accounts.list_customers(kit.db),
                      roles=sorted(accounts.list_roles(kit.db).items()), error=error, form=form or {})


@router.get("/customers")
def customer_list(request: Request, a: Auth = Depends(role("admin"))) -> Response:
    return _page(request)


@router.post("/customers")
async def add_customer(request: Request, a: Auth = Depends(role("admin"))) -> Response:
    kit = kit_of(request)
    form = await request.form()
    data = {k: str(form.get(k) or "").strip() for k in ("contract", "name", "display_name")}
    password = accounts.generate_password()
    try:
        acct = accounts.add_customer(kit.db, data["contract"], data["name"], password,
                                     display_name=data["display_name"], created_by=a.name)
    except accounts.AccountError as exc:
        return _page(request, 400, error=str(exc), form=data)
    return _secret(request, acct, password)


def _secret(request: Request, acct: accounts.Customer, password: str) -> Response:
    kit = kit_of(request)
    return kit.render(request, "console/secret.html", title_key="ccust.password_title", secret=password,
                      lines=[("ccust.name", acct.name), ("ccust.contract", acct.contract_id)],
                      back=kit.url("/customers"), note_key="ccust.password_note")


@router.post("/customers/{account_id}/{action}")
def account_action(request: Request, action: str, account_id: int = Path(ge=1, le=2**62),
                   a: Auth = Depends(role("admin"))) -> Response:
    kit = kit_of(request)
    acct = accounts.get_customer(kit.db, account_id)
    if acct is None or action not in ("disable", "enable", "password", "reset-totp"):
        raise not_found()
    if action in ("disable", "enable"):
        accounts.set_customer_disabled(kit.db, acct.id, action == "disable")
        if action == "disable":
            kit.sessions.end_all("customer", str(acct.id))
    elif action == "password":
        password = accounts.generate_password()
        accounts.set_customer_password(kit.db, acct.id, password)
        kit.sessions.end_all("customer", str(acct.id))
        return _secret(request, acct, password)
    else:
        accounts.disable_totp(kit.db, "customer", str(acct.id))
    return kit.redirect("/customers", done=action)
