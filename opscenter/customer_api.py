"""Operator JSON routes of the customer's side: settings sheets, installation confirmations, notifications.

Mounted on the operator listener (behind operator accounts) by opscenter/operator_app.py; the
customer panel and operator console pages show the same data through these routes or the functions
they call (opscenter/sheets.py, confirm.py, notify.py).

| method, path | what |
|---|---|
| `GET /api/operator/v1/sheets?contract=` | settings sheets |
| `GET /api/operator/v1/sheets/{serial}` | one sheet plus the box configuration made from it (`config`, `config_yaml`) |
| `PUT /api/operator/v1/sheets/{serial}` | body `{"contract_id", "sheet": {...}, "new_code": false}`: check and store; 422 `invalid` with `problems` [{field, ja, en}]; the reply carries `activation_code` when one was issued |
| `DELETE /api/operator/v1/sheets/{serial}` | remove a sheet |
| `GET /api/operator/v1/confirmations?contract=&status=` | installation confirmations (`confirmed`, `pending`, `not_installed`) |
| `GET /api/operator/v1/contracts/{contract}/notify` | mail preferences (defaults when never set) |
| `PUT /api/operator/v1/contracts/{contract}/notify` | body: any of `enabled`, `kinds`, `window_s`, `offline_after_s`, `recipients` |
| `GET /api/operator/v1/notifications?contract=&limit=` | notifications (mails), newest first |
"""
from __future__ import annotations

from typing import Any, Callable

from fastapi import Body, Depends, FastAPI, Path, Query
from pydantic import BaseModel, ConfigDict, Field

from filters.settingsheet import SheetError
from opscenter import confirm, notify, sheets
from opscenter.db import Database, iso, utcnow
from opscenter.errors import CenterError
from opscenter.settings import Settings


class SheetPut(BaseModel):
    model_config = ConfigDict(extra="forbid")

    contract_id: str = Field(min_length=1, max_length=64)
    sheet: dict[str, Any]
    new_code: bool = False


class NotifyPut(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool | None = None
    kinds: list[str] | None = Field(None, max_length=3)
    window_s: int | None = None
    offline_after_s: int | None = None
    recipients: list[str] | None = Field(None, max_length=20)


def sheet_invalid(exc: SheetError) -> CenterError:
    first = exc.problems[0]
    return CenterError(422, "invalid", f"{first.field}: {first.ja} / {first.en}"
                       + (f" (他 {len(exc.problems) - 1} 件 / and {len(exc.problems) - 1} more)"
                          if len(exc.problems) > 1 else ""),
                       extra={"field": first.field, "problems": sheets.problems_json(exc)})


def install(app: FastAPI, db: Database, settings: Settings, operator: Callable[..., str]) -> None:
    authed = [Depends(operator)]
    serial_path = Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")

    @app.get("/api/operator/v1/sheets", dependencies=authed, tags=["operator"])
    def list_sheets(contract: str | None = Query(None, max_length=64)) -> Any:
        return {"sheets": sheets.list_sheets(db, contract), "server_time": iso(utcnow())}

    @app.get("/api/operator/v1/sheets/{serial}", dependencies=authed, tags=["operator"])
    def get_sheet(serial: str = serial_path) -> Any:
        row = sheets.get_sheet(db, serial)
        if row is None:
            raise CenterError(404, "not_found", f"設定シートがありません / no settings sheet for serial {serial}")
        kw = {"serial": serial, "contract_id": row["contract_id"], "center_url": settings.public_url}
        return {**row, "config": sheets.box_config(row["sheet"], **kw),
                "config_yaml": sheets.box_config_yaml(row["sheet"], **kw), "server_time": iso(utcnow())}

    @app.put("/api/operator/v1/sheets/{serial}", tags=["operator"])
    def put_sheet(serial: str = serial_path, req: SheetPut = Body(...), name: str = Depends(operator)) -> Any:
        try:
            out = sheets.set_sheet(db, req.contract_id, serial, req.sheet, operator=name, new_code=req.new_code,
                                   code_valid_days=settings.code_valid_days,
                                   default_term_days=settings.default_term_days)
        except SheetError as exc:
            raise sheet_invalid(exc) from None
        except ValueError as exc:
            raise CenterError(409, "conflict", str(exc)) from None
        return {**out, "server_time": iso(utcnow())}

    @app.delete("/api/operator/v1/sheets/{serial}", dependencies=authed, tags=["operator"])
    def delete_sheet(serial: str = serial_path) -> Any:
        if not sheets.delete_sheet(db, serial):
            raise CenterError(404, "not_found", f"設定シートがありません / no settings sheet for serial {serial}")
        return {"deleted": serial, "server_time": iso(utcnow())}

    @app.get("/api/operator/v1/confirmations", dependencies=authed, tags=["operator"])
    def confirmations(contract: str | None = Query(None, max_length=64),
                      status: str | None = Query(None, pattern="^(confirmed|pending|not_installed)$")) -> Any:
        return {"confirmations": confirm.list_confirmations(db, contract_id=contract, status=status),
                "server_time": iso(utcnow())}

    @app.get("/api/operator/v1/contracts/{contract}/notify", dependencies=authed, tags=["operator"])
    def get_notify(contract: str = Path(min_length=1, max_length=64)) -> Any:
        return {**notify.get_prefs(db, contract, settings), "effective_recipients":
                notify.recipients_of(db, contract, notify.get_prefs(db, contract, settings)),
                "server_time": iso(utcnow())}

    @app.put("/api/operator/v1/contracts/{contract}/notify", dependencies=authed, tags=["operator"])
    def put_notify(contract: str = Path(min_length=1, max_length=64), req: NotifyPut = Body(...)) -> Any:
        try:
            prefs = notify.set_prefs(db, contract, settings, **req.model_dump(exclude_none=True))
        except ValueError as exc:
            raise CenterError(422, "invalid", str(exc), extra={"field": str(exc).split(":")[0]}) from None
        return {**prefs, "server_time": iso(utcnow())}

    @app.get("/api/operator/v1/notifications", dependencies=authed, tags=["operator"])
    def notifications(contract: str | None = Query(None, max_length=64),
                      limit: int = Query(100, ge=1, le=1000)) -> Any:
        return {"notifications": notify.list_notifications(db, contract_id=contract, limit=limit),
                "server_time": iso(utcnow())}
