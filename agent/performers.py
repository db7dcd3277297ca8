"""I/O that engines ask for with ``Hold`` (lookups, scans), performed off the packet path."""
from __future__ import annotations

import logging
from typing import Any, Callable, Mapping

import requests

from filters.engine import IORequest

log = logging.getLogger(__name__)


def http_get(args: Mapping[str, Any]) -> str:
    resp = requests.get(args["url"], params=args.get("params"), timeout=float(args.get("timeout", 5.0)))
    resp.raise_for_status()
    return resp.text


PERFORMERS: dict[str, Callable[[Mapping[str, Any]], Any]] = {
    "http_get": http_get,
}


def perform(req: IORequest) -> tuple[Any, str | None]:
    """Run one request; returns (result, error). Never raises."""
    fn = PERFORMERS.get(req.kind)
    if fn is None:
        return None, f"no performer for {req.kind!r}"
    try:
        return fn(req.args), None
    except Exception as exc:  # the engine decides what a failed lookup means
        log.debug("I/O %s failed: %s", req.kind, exc)
        return None, f"{type(exc).__name__}: {exc}"
