"""The web kit shared by the customer panel and the operator console: templates, language, sessions,
login checks, CSRF, security headers and error pages.

One :class:`Kit` per application (``kind`` customer or operator, URL ``prefix`` /panel or /console).
Pages are routers (``APIRouter``) whose handlers reach the kit as ``request.app.state.kit``:

* ``Depends(auth)`` gives the logged-in account (:class:`Auth`) or sends the browser to the login
  page; ``Depends(role("admin"))`` also refuses (403) an operator without that role.
* CSRF: every request that is not GET/HEAD/OPTIONS passes :meth:`Kit.csrf_guard`, installed on the
  whole application (so a page added later is covered without doing anything): the form field
  ``csrf`` must equal the session's token (per-session synchronizer token); the login forms, before
  any session, use a double-submit cookie instead. A request whose ``Origin`` header names another
  site is refused too. Failure: 403.
* Cookies: ``__Host-`` names (Secure, Path=/, no Domain), HttpOnly, SameSite=Lax.
* Responses carry a strict Content-Security-Policy (no inline script, no other origin), no framing,
  ``Cache-Control: no-store`` and HSTS.
"""
from __future__ import annotations

import datetime as dt
import hmac
import logging
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable
from urllib.parse import quote, urlencode, urlsplit

import jinja2
from fastapi import Depends, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from markupsafe import Markup
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.staticfiles import StaticFiles

from opscenter.db import Database
from opscenter.panel import accounts, i18n
from opscenter.panel.bizdays import JST
from opscenter.panel.sessions import Session, SessionStore
from opscenter.settings import Settings

log = logging.getLogger("vcr-opscenter")

HERE = Path(__file__).resolve().parent
LANG_COOKIE = "vcr-lang"
PRE_COOKIE = "__Host-vcr-pre"  # double-submit token of the login forms
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
       "frame-ancestors 'none'; base-uri 'none'")


class LoginRequired(Exception):
    pass


class Forbidden(Exception):
    pass


class CsrfFailed(Exception):
    pass


@dataclass(frozen=True)
class Auth:
    """The logged-in account of a request."""

    kind: str  # customer | operator
    subject: str  # customer account id / operator name
    name: str  # login name
    display: str
    contract_id: str | None  # customers: their contract, the only one they see
    role: str | None  # operators: admin | operator
    totp: bool
    session: Session

    @property
    def csrf(self) -> str:
        return self.session.csrf

    def may(self, role: str) -> bool:
        return self.kind == "operator" and (self.role == role or self.role == "admin")


@dataclass(frozen=True)
class NavItem:
    path: str  # below the prefix: "/alarms"
    key: str  # message key of the label
    order: int = 50
    role: str | None = None  # shown only to operators with this role


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(HERE / "templates")),
                             autoescape=jinja2.select_autoescape(["html"]), trim_blocks=True, lstrip_blocks=True,
                             undefined=jinja2.Undefined)
    env.globals.update(T=i18n.T, t=i18n.t, P=i18n.P, p=i18n.p, has=lambda key: key in i18n.MESSAGES)
    env.filters.update(jst=jst, jdate=jdate, pct=pct, bytes=_bytes, uptime=uptime)
    return env



def jst(t: Any, with_seconds: bool = False) -> str:
    """A naive-UTC datetime (or ISO text) shown in Japan time."""
    if t is None or t == "":
        return "-"
    if isinstance(t, str):
        try:
            t = dt.datetime.fromisoformat(t.replace("Z", "+00:00"))
        except ValueError:
            return t
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.timezone.utc)
    return t.astimezone(JST).strftime("%Y-%m-%d %H:%M:%S" if with_seconds else "%Y-%m-%d %H:%M")


WEEKDAYS = {"ja": "月火水木金土日", "en": ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]}


def jdate(d: Any, lang: str = "ja") -> str:
    if d is None:
        return "-"
    if isinstance(d, dt.datetime):
        d = d.date()
    if lang == "en":
        return f"{WEEKDAYS['en'][d.weekday()]} {d.day} {d.strftime('%b')} {d.year}"
    return f"{d.year}年{d.month}月{d.day}日 ({WEEKDAYS['ja'][d.weekday()]})"


def pct(v: Any, digits: int = 1) -> str:
    if v is None:
        return "-"
    return f"{v * 100:.{digits}f}%"


def _bytes(v: Any) -> str:
    return f"{(v or 0) / 2**20:.1f} MiB"


def uptime(s: Any) -> str:
    if not isinstance(s, (int, float)) or s < 0:
        return "-"
    d, rem = divmod(int(s), 86400)
    return f"{d}d {rem // 3600}h" if d else f"{rem // 3600}h {rem % 3600 // 60}m"


ENV = _environment()


class SecurityHeaders(BaseHTTPMiddleware):
    async def dispatch(self, request: Request, call_next: Callable[[Request], Any]) -> Response:
        response = await call_next(request)
        h = response.headers
        h.setdefault("Content-Security-Policy", CSP)
        h.setdefault("X-Frame-Options", "DENY")
        h.setdefault("X-Content-Type-Options", "nosniff")
        h.setdefault("Referrer-Policy", "same-origin")
        h.setdefault("Strict-Transport-Security", "max-age=31536000")
        if not request.url.path.startswith(request.app.state.kit.prefix + "/static/"):
            h.setdefault("Cache-Control", "no-store")
        return response


class Kit:
    def __init__(self, settings: Settings, db: Database, *, kind: str, prefix: str, cookie: str,
                 title_key: str) -> None:
        self.settings = settings
        self.db = db
        self.kind = kind
        self.prefix = prefix
        self.cookie = cookie
        self.title_key = title_key
        self.sessions = SessionStore(db, idle_minutes=settings.panel_session_idle_minutes,
                                     max_hours=settings.panel_session_hours)
        self.nav: list[NavItem] = []
        self.public_posts = {f"{prefix}/login"}  # forms posted before any session (double-submit cookie)

    # URLs and language ----------------------------------------------------------------------
    def url(self, path: str = "/") -> str:
        return self.prefix + path

    @staticmethod
    def lang(request: Request) -> str:
        q = request.query_params.get("lang")
        if q in i18n.LANGS:
            return q
        c = request.cookies.get(LANG_COOKIE)
        return c if c in i18n.LANGS else i18n.DEFAULT

    # sessions ---------------------------------------------------------------------------------
    def session(self, request: Request) -> Session | None:
        cached = request.scope.get("vcr.session", False)
        if cached is not False:
            return cached  # type: ignore[no-any-return]
        s = self.sessions.get(request.cookies.get(self.cookie), self.kind)
        request.scope["vcr.session"] = s
        return s

    def set_session_cookie(self, response: Response, sid: str) -> None:
        response.set_cookie(self.cookie, sid, path="/", secure=True, httponly=True, samesite="lax")

    def clear_session_cookie(self, response: Response) -> None:
        response.delete_cookie(self.cookie, path="/", secure=True, httponly=True, samesite="lax")

    def client_ip(self, request: Request) -> str | None:
        return request.client.host if request.client else None

    def auth(self, request: Request) -> Auth:
        """The logged-in account (stage ok), else LoginRequired. Rechecked on every request: a disabled
        or removed account, or a customer moved to another contract, ends the session."""
        cached = request.scope.get("vcr.auth")
        if cached is not None:
            return cached  # type: ignore[no-any-return]
        s = self.session(request)
        if s is None or s.stage != "ok":
            raise LoginRequired()
        if self.kind == "customer":
            acct = accounts.get_customer(self.db, s.subject)
            if acct is None or acct.disabled or acct.contract_id != s.contract_id:
                self.sessions.end_all("customer", s.subject)
                raise LoginRequired()
            a = Auth("customer", s.subject, acct.name, acct.display_name or acct.name, acct.contract_id, None,
                     acct.totp, s)
        else:
            op = accounts.get_operator(self.db, s.subject)
            if op is None:
                self.sessions.end_all("operator", s.subject)
                raise LoginRequired()
            a = Auth("operator", op.name, op.name, op.name, None, op.role, op.totp, s)
        request.scope["vcr.auth"] = a
        return a

    # CSRF -------------------------------------------------------------------------------------
    async def csrf_guard(self, request: Request) -> None:
        if request.method in SAFE_METHODS:
            return
        origin = request.headers.get("origin")
        if origin and origin != "null":
            host = request.headers.get("host", "")
            if urlsplit(origin).netloc.lower() != host.lower():
                raise CsrfFailed("origin")
        try:
            form = await request.form()
        except Exception:
            raise CsrfFailed("form") from None
        sent = form.get("csrf")
        if not isinstance(sent, str) or not sent:
            raise CsrfFailed("missing")
        if request.url.path in self.public_posts:
            expected = request.cookies.get(PRE_COOKIE) or ""
        else:
            s = self.session(request)
            expected = s.csrf if s is not None else ""
        if not expected or not hmac.compare_digest(sent.encode(), expected.encode()):
            raise CsrfFailed("mismatch")

    def pre_token(self, request: Request) -> str:
        """The login form's double-submit token: the cookie's value, or a new one (set by ``render``)."""
        tok = request.cookies.get(PRE_COOKIE)
        if not tok or len(tok) > 100:
            tok = request.scope.get("vcr.pre") or secrets.token_urlsafe(32)
            request.scope["vcr.pre"] = tok
        return tok

    # pages ------------------------------------------------------------------------------------
    def nav_for(self, auth: Auth | None) -> list[NavItem]:
        if auth is None:
            return []
        return sorted((n for n in self.nav if n.role is None or auth.may(n.role)), key=lambda n: n.order)

    def render(self, request: Request, template: str, code: int = 200, /, **ctx: Any) -> HTMLResponse:
        lang = self.lang(request)
        auth = request.scope.get("vcr.auth")
        here = request.url.path
        base = {
            "lang": lang, "kit": self, "auth": auth, "nav": self.nav_for(auth), "here": here,
            "url": self.url, "csrf": auth.csrf if auth else (self.session(request).csrf if self.session(request)
                                                            else self.pre_token(request)),
            "lang_url": lambda code: here + "?" + urlencode(
                [(k, v) for k, v in request.query_params.multi_items() if k not in ("lang", "done")] + [("lang", code)]),
            "static": lambda f: f"{self.prefix}/static/{f}",
            "jdate": lambda d: jdate(d, lang), "now": dt.datetime.now(dt.timezone.utc),
            "flash": request.query_params.get("done"),
        }
        html = ENV.get_template(template).render({**base, **ctx})
        response = HTMLResponse(html, status_code=code)
        if request.query_params.get("lang") in i18n.LANGS:
            response.set_cookie(LANG_COOKIE, lang, path="/", secure=True, httponly=True, samesite="lax",
                                max_age=365 * 86400)
        pre = request.scope.get("vcr.pre")
        if pre:
            response.set_cookie(PRE_COOKIE, pre, path="/", secure=True, httponly=True, samesite="lax")
        return response

    def redirect(self, path: str, **query: str) -> RedirectResponse:
        q = "&".join(f"{k}={quote(str(v))}" for k, v in query.items())
        return RedirectResponse(self.url(path) + (f"?{q}" if q else ""), status_code=303)

    def install(self, app: Any) -> None:
        """Error pages, headers and static files on ``app`` (the kit is ``app.state.kit``)."""
        from opscenter.bodylimit import BodyLimit

        app.state.kit = self
        app.add_middleware(SecurityHeaders)
        app.add_middleware(BodyLimit, limit_for=lambda _path: self.settings.max_body_bytes)
        app.mount(f"{self.prefix}/static", StaticFiles(directory=str(HERE / "static")), name="static")

        @app.exception_handler(LoginRequired)
        async def _login(request: Request, _exc: LoginRequired) -> Response:
            nxt = request.url.path if request.method == "GET" else self.url("/")
            if not nxt.startswith(self.prefix) or nxt.startswith(self.url("/log")):
                nxt = self.url("/")
            return RedirectResponse(self.url("/login") + f"?next={quote(nxt)}", status_code=303)

        @app.exception_handler(Forbidden)
        async def _forbidden(request: Request, _exc: Forbidden) -> Response:
            return self.render(request, "error.html", 403, key="err.forbidden")

        @app.exception_handler(CsrfFailed)
        async def _csrf(request: Request, exc: CsrfFailed) -> Response:
            log.warning("%s: refused %s %s: CSRF check failed (%s)", self.kind, request.method, request.url.path,
                        exc.args[0] if exc.args else "")
            return self.render(request, "error.html", 403, key="err.csrf")

        @app.exception_handler(StarletteHTTPException)
        async def _http(request: Request, exc: StarletteHTTPException) -> Response:
            key = {404: "err.not_found", 405: "err.method", 429: "err.rate"}.get(exc.status_code, "err.other")
            resp = self.render(request, "error.html", exc.status_code, key=key)
            for k, v in (exc.headers or {}).items():
                resp.headers[k] = v
            return resp

        from fastapi.exceptions import RequestValidationError

        @app.exception_handler(RequestValidationError)
        async def _invalid(request: Request, _exc: RequestValidationError) -> Response:
            return self.render(request, "error.html", 400, key="err.invalid")


def kit_of(request: Request) -> Kit:
    return request.app.state.kit  # type: ignore[no-any-return]


def auth(request: Request) -> Auth:
    """Dependency: the logged-in account."""
    return kit_of(request).auth(request)


def role(name: str) -> Callable[[Request], Auth]:
    """Dependency: an operator with role ``name`` (admins may do everything); else 403."""

    def check(request: Request) -> Auth:
        a = kit_of(request).auth(request)
        if not a.may(name):
            raise Forbidden()
        return a

    return check


async def csrf_guard(request: Request) -> None:
    """Application-wide dependency (see the module doc)."""
    await kit_of(request).csrf_guard(request)


def not_found() -> HTTPException:
    return HTTPException(404)


Page = Callable[..., Any]
AuthDep = Depends(auth)
