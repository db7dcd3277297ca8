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


_TOKENS: dict[str, tuple[float, str]] = {}  # credential file -> (mtime, token)


def _center_token(path: str) -> str:
    """The device credential from the center link's state file (re-read when the file changes)."""
    import json
    import os

    if not path:
        return ""
    try:
        mtime = os.stat(path).st_mtime
    except OSError:
        return ""
    cached = _TOKENS.get(path)
    if cached is None or cached[0] != mtime:
        try:
            token = str(json.loads(open(path, encoding="utf-8").read()).get("token", ""))
        except (OSError, ValueError, AttributeError):
            token = ""
        _TOKENS[path] = cached = (mtime, token)
    return cached[1]


_SESSION = requests.Session()


def category_lookup(args: Mapping[str, Any]) -> dict[str, Any]:
    """Ask the operations center for the categories of a name the local lists do not have.

    Returns ``{"categories": [...], "ttl": seconds}``; raises on any failure (the engine then
    allows and logs)."""
    headers = {}
    token = _center_token(str(args.get("auth_file") or ""))
    if token:
        headers["Authorization"] = f"Bearer {token}"
    verify: bool | str = str(args["ca_file"]) if args.get("ca_file") else True
    resp = _SESSION.get(args["url"], params={"name": args["name"]}, headers=headers, verify=verify,
                        timeout=float(args.get("timeout", 2.0)))
    resp.raise_for_status()
    data = resp.json()
    cats = data.get("categories") if isinstance(data, dict) else None
    if not isinstance(cats, list) or not all(isinstance(c, str) for c in cats):
        raise ValueError("answer has no list of categories")
    ttl = data.get("ttl", 3600)
    return {"categories": cats[:32], "ttl": int(ttl) if isinstance(ttl, (int, float)) else 3600}


PERFORMERS: dict[str, Callable[[Mapping[str, Any]], Any]] = {
    "http_get": http_get,
    "category_lookup": category_lookup,
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
