"""The center's URL category service: boxes ask it for names their local lists do not have.

The seed's category service listens on TCP 6060/6061; here it is one authenticated endpoint of
the center, ``GET /api/v1/category?name=``, answered from the center's own category database (a
UT1-layout folder, usually bigger and fresher than what the boxes carry).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable

from fastapi import Depends, FastAPI, Query
from pydantic import BaseModel

from filters.app.dns import normalize_name
from filters.webfilter.categories import CategoryDB

log = logging.getLogger("vcr-opscenter")


class CategoryReply(BaseModel):
    name: str
    categories: list[str]
    ttl: int
    database_version: str


class CategoryService:
    def __init__(self, folder: str | None, ttl: int) -> None:
        self.ttl = ttl
        self.db = CategoryDB.from_entries({})
        if folder:
            try:
                self.db = CategoryDB.load(Path(folder))
                log.info("category service: %d categories from %s", len(self.db.categories), folder)
            except OSError as exc:
                log.error("category service: cannot load %s (%s); every name is uncategorised", folder, exc)

    def lookup(self, name: str) -> dict[str, Any]:
        norm = normalize_name(name.encode("utf-8", "surrogateescape"))
        return {"name": norm, "categories": sorted(self.db.lookup(norm)), "ttl": self.ttl,
                "database_version": self.db.version}


def install(app: FastAPI, folder: str | None, ttl: int, device: Callable[[str], Any], token: Callable[..., str]) -> None:
    """Add the endpoint; ``device(token)`` authenticates (raises the center's 401)."""
    service = CategoryService(folder, ttl)
    app.state.categories = service

    @app.get("/api/v1/category", response_model=CategoryReply, tags=["device"])
    def get_category(name: str = Query(..., min_length=1, max_length=253), tok: str = Depends(token)) -> dict[str, Any]:
        device(tok)
        return service.lookup(name)
