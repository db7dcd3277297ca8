"""One web application of the panel (the customer panel or the operators' console): the web kit,
login routes, the account menu entry and the pages of a package (each a module with ``router`` and
``NAV``)."""
from __future__ import annotations

from importlib import import_module

from fastapi import Depends, FastAPI

from opscenter.db import Database
from opscenter.panel import authroutes, messages  # noqa: F401  (messages registers the texts)
from opscenter.panel.web import Kit, NavItem, csrf_guard
from opscenter.settings import Settings


def create_site(settings: Settings, db: Database, *, title: str, kind: str, prefix: str, cookie: str,
                title_key: str, package: str, pages: list[str]) -> FastAPI:
    """The application of ``package``'s ``pages`` under ``prefix``, for accounts of ``kind``."""
    app = FastAPI(title=title, openapi_url=None, docs_url=None, redoc_url=None,
                  dependencies=[Depends(csrf_guard)])
    kit = Kit(settings, db, kind=kind, prefix=prefix, cookie=cookie, title_key=title_key)
    kit.install(app)
    authroutes.setup(kit)
    app.include_router(authroutes.router, prefix=prefix)
    kit.nav.append(NavItem("/account", "nav.account", 90))
    for name in pages:
        mod = import_module(f"{package}.{name}")
        app.include_router(mod.router, prefix=prefix)
        kit.nav.extend(mod.NAV)

    @app.get(prefix, include_in_schema=False)
    def _slash() -> object:
        return kit.redirect("/")

    return app
