"""Settings sheets of every contract (operators): the list, and the same form as the customer's for one
box (a new sheet: contract and serial chosen here). Saving issues the activation code when the box has
none usable (shown once). Once the box is activated only the contact may change, as for the customer."""
from __future__ import annotations

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import Response

from opscenter import sheets
from opscenter.panel import sheetform
from opscenter.panel.web import Auth, NavItem, kit_of, not_found, role

router = APIRouter()
NAV = [NavItem("/sheets", "nav.sheets", 55, role="operator")]
SERIAL = Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")
operator = role("operator")


@router.get("/sheets")
def sheet_list(request: Request, contract: str | None = Query(None, max_length=64),
               serial: str | None = Query(None, max_length=64), a: Auth = Depends(operator)) -> Response:
    kit = kit_of(request)
    if serial and sheets.SERIAL_RE.match(serial.strip()):  # the "new sheet" form
        return kit.redirect(f"/sheets/{serial.strip()}", contract=(contract or "").strip())
    return kit.render(request, "console/sheets.html", rows=sheets.list_sheets(kit.db, contract or None),
                      contract=contract or "")


def _page(request: Request, serial: str, contract: str, row: dict | None, status: int = 200,
          values: dict | None = None, errors: dict | None = None, code: str | None = None) -> Response:
    kit = kit_of(request)
    return kit.render(request, "console/sheet.html", status, serial=serial, contract=contract, row=row,
                      form=values or sheetform.form_of(row["sheet"] if row else None), errors=errors or {},
                      code=code, action=kit.url(f"/sheets/{serial}") + ("" if row else f"?contract={contract}"),
                      locked=row is not None and sheetform.activated(kit.db, contract, serial))


def _target(request: Request, serial: str, contract: str | None) -> tuple[str, dict | None]:
    row = sheets.get_sheet(kit_of(request).db, serial)
    if row is not None:
        return row["contract_id"], row
    try:
        sheets.check_ids(contract or "", serial)
    except ValueError:
        raise not_found() from None
    return contract or "", None


@router.get("/sheets/{serial}")
def sheet_page(request: Request, serial: str = SERIAL, contract: str | None = Query(None, max_length=64),
               a: Auth = Depends(operator)) -> Response:
    c, row = _target(request, serial, contract)
    return _page(request, serial, c, row)


@router.post("/sheets/{serial}")
async def save_sheet(request: Request, serial: str = SERIAL, contract: str | None = Query(None, max_length=64),
                     a: Auth = Depends(operator)) -> Response:
    kit = kit_of(request)
    c, row = _target(request, serial, contract)
    values = sheetform.read_form(await request.form())
    saved, errors = sheetform.save(kit.db, c, serial, values, by=a.name, code_valid_days=kit.settings.code_valid_days,
                                   default_term_days=kit.settings.default_term_days)
    if saved is None:
        return _page(request, serial, c, row, 400, values=values, errors=errors)
    if saved.get("activation_code"):
        return _page(request, serial, c, saved, code=saved["activation_code"])
    return kit.redirect(f"/sheets/{serial}", done="saved")
