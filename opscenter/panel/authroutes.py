"""Login (password, then TOTP when enrolled), logout and the account page (password, TOTP), for both
the customer panel and the operator console (the kit says which).

Failed logins and failed TOTP codes take from the center's shared rate limiter (table
``rate_buckets``): per client address (IPv6: per /64) and per login name, ``operator_login_rate`` per
second with a burst of ``operator_login_burst``. Customers have their own buckets (``panel-login-*``);
the console shares the operator listener's HTTP Basic buckets (``login-*``), so the two doors of the
operator listener do not add up. Over the limit every attempt, even a right one, is refused (429,
``Retry-After``) without computing a password hash.
"""
from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from opscenter.operators import Verifier
from opscenter.panel import accounts, totp
from opscenter.panel.web import Auth, Kit, LoginRequired, auth, kit_of
from opscenter.ratelimit import SharedBuckets, address_key, retry_after

log = logging.getLogger("vcr-opscenter")

router = APIRouter()


class Limiter:
    def __init__(self, kit: Kit) -> None:
        s = kit.settings
        prefix = "panel-login" if kit.kind == "customer" else "login"
        self.by_ip = SharedBuckets(kit.db, f"{prefix}-ip", s.operator_login_rate, s.operator_login_burst)
        self.by_name = SharedBuckets(kit.db, f"{prefix}-user", s.operator_login_rate, s.operator_login_burst)

    def wait(self, ip: str, name: str) -> float:
        return max(self.by_ip.peek(ip), self.by_name.peek(name[:128]))

    def failed(self, ip: str, name: str) -> None:
        self.by_ip.take(ip)
        self.by_name.take(name[:128])


def setup(kit: Kit) -> None:
    kit.limiter = Limiter(kit)  # type: ignore[attr-defined]
    if kit.kind == "operator":
        kit.verifier = Verifier(kit.db)  # type: ignore[attr-defined]


def _next(kit: Kit, value: Any) -> str:
    """Where to go after login: a path of this application only (no open redirect)."""
    if isinstance(value, str) and value.startswith(kit.prefix + "/") and not value.startswith("//") \
            and "\\" not in value and not value.startswith(kit.url("/log")):
        return value[:500]
    return kit.url("/")


def _limited(kit: Kit, request: Request, template: str, who: str, **ctx: Any) -> Response | None:
    ip = address_key(kit.client_ip(request))
    wait = kit.limiter.wait(ip, who)  # type: ignore[attr-defined]
    if wait <= 0:
        return None
    resp = kit.render(request, template, 429, error="login.rate", retry=retry_after(wait), **ctx)
    resp.headers["Retry-After"] = retry_after(wait)
    return resp


@router.get("/login")
def login_page(request: Request) -> Response:
    kit = kit_of(request)
    return kit.render(request, "login.html", next=_next(kit, request.query_params.get("next")), name="",
                      error=None, csrf=kit.pre_token(request))


@router.post("/login")
async def login(request: Request) -> Response:
    kit = kit_of(request)
    form = await request.form()
    name = str(form.get("name") or "").strip()[:200]
    password = str(form.get("password") or "")
    nxt = _next(kit, form.get("next"))
    ctx = {"next": nxt, "name": name, "csrf": kit.pre_token(request)}
    limited = _limited(kit, request, "login.html", name, **ctx)
    if limited is not None:
        return limited
    ip = kit.client_ip(request)
    subject, contract_id, has_totp = None, None, False
    if kit.kind == "customer":
        acct = accounts.verify_customer(kit.db, name, password)
        if acct is not None:
            subject, contract_id, has_totp = str(acct.id), acct.contract_id, acct.totp
    elif kit.verifier.verify(name, password):  # type: ignore[attr-defined]
        op = accounts.get_operator(kit.db, name)
        if op is not None:
            subject, has_totp = op.name, op.totp
    if subject is None:
        kit.limiter.failed(address_key(ip), name)  # type: ignore[attr-defined]
        log.warning("%s login failed for %r from %s", kit.kind, name[:64], ip)
        return kit.render(request, "login.html", 401, error="login.failed", **ctx)
    kit.sessions.delete(request.cookies.get(kit.cookie))  # never keep a session id across a login
    sid = kit.sessions.create(kit.kind, subject, contract_id=contract_id, stage="mfa" if has_totp else "ok", ip=ip)
    resp = kit.redirect("/login/totp", next=nxt) if has_totp else kit.redirect(nxt[len(kit.prefix):] or "/")
    kit.set_session_cookie(resp, sid)
    log.info("%s %r logged in from %s%s", kit.kind, name[:64], ip, " (TOTP due)" if has_totp else "")
    return resp


def _mfa_session(kit: Kit, request: Request) -> Any:
    s = kit.session(request)
    if s is None or s.stage != "mfa":
        raise LoginRequired()
    return s


@router.get("/login/totp")
def totp_page(request: Request) -> Response:
    kit = kit_of(request)
    _mfa_session(kit, request)
    return kit.render(request, "login_totp.html", next=_next(kit, request.query_params.get("next")), error=None)


@router.post("/login/totp")
async def totp_login(request: Request) -> Response:
    kit = kit_of(request)
    s = _mfa_session(kit, request)
    form = await request.form()
    nxt = _next(kit, form.get("next"))
    limited = _limited(kit, request, "login_totp.html", s.subject, next=nxt)
    if limited is not None:
        return limited
    state = accounts.totp_state(kit.db, kit.kind, s.subject)
    step = totp.match(state["secret"], str(form.get("code") or "")) if state["secret"] else None
    if step is None or not accounts.claim_totp_step(kit.db, kit.kind, s.subject, step):
        kit.limiter.failed(address_key(kit.client_ip(request)), s.subject)  # type: ignore[attr-defined]
        log.warning("%s TOTP code refused for %s", kit.kind, s.subject)
        return kit.render(request, "login_totp.html", 401, next=nxt, error="login.totp_failed")
    old = request.cookies.get(kit.cookie)
    sid = kit.sessions.create(kit.kind, s.subject, contract_id=s.contract_id, stage="ok", ip=kit.client_ip(request))
    kit.sessions.delete(old)
    resp = kit.redirect(nxt[len(kit.prefix):] or "/")
    kit.set_session_cookie(resp, sid)
    return resp


@router.post("/logout")
def logout(request: Request) -> Response:
    kit = kit_of(request)
    kit.sessions.delete(request.cookies.get(kit.cookie))
    resp = kit.redirect("/login", done="logout")
    kit.clear_session_cookie(resp)
    return resp


# account page ---------------------------------------------------------------------------------

def _account_label(a: Auth) -> str:
    return a.name


@router.get("/account")
def account(request: Request, a: Auth = Depends(auth)) -> Response:
    return account_page(request, a)


def account_page(request: Request, a: Auth, error: str | None = None) -> Response:
    kit = kit_of(request)
    state = accounts.totp_state(kit.db, kit.kind, a.subject)
    pending = state["pending"]
    qr = uri = None
    if pending:
        uri = totp.uri(pending, _account_label(a))
        qr = totp.qr_svg(uri)
    from markupsafe import Markup

    return kit.render(request, "account.html", totp_on=state["secret"] is not None, pending=pending,
                      pending_grouped=totp.grouped(pending) if pending else None,
                      qr=Markup(qr) if qr else None, error=error)


def _account_error(request: Request, a: Auth, key: str, status: int = 400) -> Response:
    resp = account_page(request, a, error=key)
    resp.status_code = status
    return resp


@router.post("/account/password")
async def change_password(request: Request, a: Auth = Depends(auth)) -> Response:
    kit = kit_of(request)
    form = await request.form()
    current, new, again = (str(form.get(k) or "") for k in ("current", "new", "again"))
    ok = accounts.customer_password_ok(kit.db, int(a.subject), current) if a.kind == "customer" \
        else kit.verifier.verify(a.subject, current)  # type: ignore[attr-defined]
    if not ok:
        kit.limiter.failed(address_key(kit.client_ip(request)), a.name)  # type: ignore[attr-defined]
        return _account_error(request, a, "account.wrong_password", 403)
    if new != again:
        return _account_error(request, a, "account.mismatch")
    try:
        if a.kind == "customer":
            accounts.set_customer_password(kit.db, int(a.subject), new)
        else:
            from opscenter.operators import OperatorError, set_password

            try:
                set_password(kit.db, a.subject, new)
            except OperatorError as exc:
                raise accounts.AccountError(str(exc)) from None
    except accounts.AccountError:
        return _account_error(request, a, "account.weak")
    kit.sessions.end_all(kit.kind, a.subject, keep=request.cookies.get(kit.cookie))
    return kit.redirect("/account", done="password")


@router.post("/account/totp/start")
def totp_start(request: Request, a: Auth = Depends(auth)) -> Response:
    kit = kit_of(request)
    accounts.set_totp_pending(kit.db, kit.kind, a.subject, totp.new_secret())
    return kit.redirect("/account")


@router.post("/account/totp/confirm")
async def totp_confirm(request: Request, a: Auth = Depends(auth)) -> Response:
    kit = kit_of(request)
    form = await request.form()
    state = accounts.totp_state(kit.db, kit.kind, a.subject)
    if not state["pending"]:
        return kit.redirect("/account")
    step = totp.match(state["pending"], str(form.get("code") or ""))
    if step is None:
        return _account_error(request, a, "account.totp_bad")
    accounts.enable_totp(kit.db, kit.kind, a.subject, state["pending"], step)
    kit.sessions.end_all(kit.kind, a.subject, keep=request.cookies.get(kit.cookie))
    return kit.redirect("/account", done="totp_on")


@router.post("/account/totp/disable")
async def totp_disable(request: Request, a: Auth = Depends(auth)) -> Response:
    kit = kit_of(request)
    form = await request.form()
    state = accounts.totp_state(kit.db, kit.kind, a.subject)
    if state["secret"] is None:
        accounts.set_totp_pending(kit.db, kit.kind, a.subject, None)
        return kit.redirect("/account")
    step = totp.match(state["secret"], str(form.get("code") or ""))
    if step is None or not accounts.claim_totp_step(kit.db, kit.kind, a.subject, step):
        return _account_error(request, a, "account.totp_bad")
    accounts.disable_totp(kit.db, kit.kind, a.subject)
    return kit.redirect("/account", done="totp_off")
