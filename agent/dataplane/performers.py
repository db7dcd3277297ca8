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
_SESSION.trust_env = False  # no $REQUESTS_CA_BUNDLE, proxy or netrc from the environment (requests #3829)


def category_lookup(args: Mapping[str, Any]) -> dict[str, Any]:
    """Ask the operations center for the categories of a name the local lists do not have.

    The request carries the box's device token: it is sent only over HTTPS, checked against the
    center's CA file alone (never the system store), and never follows a redirect.
    Returns ``{"categories": [...], "ttl": seconds}``; raises on any failure (the engine then
    allows and logs)."""
    from agent.link.center import auth_headers  # here: offline mode imports this module, not the link

    url = str(args.get("url") or "")
    ca_file = str(args.get("ca_file") or "")
    if not url.lower().startswith("https://"):
        raise ValueError("category lookup refused: the URL is not https:// (the token would go in clear text)")
    if not ca_file:
        raise ValueError("category lookup refused: no CA file of the center (the system CAs are not used)")
    headers = auth_headers(_center_token(str(args.get("auth_file") or "")))
    resp = _SESSION.get(url, params={"name": args["name"]}, headers=headers, verify=ca_file,
                        timeout=float(args.get("timeout", 2.0)), allow_redirects=False)
    resp.raise_for_status()
    if resp.status_code != 200:
        raise ValueError(f"unexpected answer {resp.status_code} (redirects are not followed)")
    data = resp.json()
    cats = data.get("categories") if isinstance(data, dict) else None
    if not isinstance(cats, list) or not all(isinstance(c, str) for c in cats):
        raise ValueError("answer has no list of categories")
    ttl = data.get("ttl", 3600)
    return {"categories": cats[:32], "ttl": int(ttl) if isinstance(ttl, (int, float)) else 3600}


def clamd_scan(args: Mapping[str, Any]) -> dict[str, Any]:
    """A file scanned by the box's clamd (agent/dataplane/clamd.py)."""
    from agent.dataplane.clamd import scan

    return scan(args)


def sandbox_check(args: Mapping[str, Any]) -> dict[str, Any]:
    """A file's sandbox verdict: the box's verdict cache, the center's shared verdicts, else a submission
    and the wait for its verdict (agent/link/sandbox.py)."""
    from agent.link.sandbox import check

    return check(args)


def clamd_stream(args: Mapping[str, Any]) -> dict[str, Any]:
    """A download streamed to the box's clamd while it arrives (agent/dataplane/clamd.py)."""
    from agent.dataplane.clamd import stream

    return stream(args)


def clamd_wait(args: Mapping[str, Any]) -> dict[str, Any]:
    """The verdict of a streamed download."""
    from agent.dataplane.clamd import wait

    return wait(args)


def clamd_drain(args: Mapping[str, Any]) -> dict[str, Any]:
    """A download's packet held until its stream to clamd caught up (backpressure)."""
    from agent.dataplane.clamd import drain

    return drain(args)


PERFORMERS: dict[str, Callable[[Mapping[str, Any]], Any]] = {
    "http_get": http_get,
    "category_lookup": category_lookup,
    "clamd_scan": clamd_scan,
    "sandbox_check": sandbox_check,
    "clamd_stream": clamd_stream,
    "clamd_wait": clamd_wait,
    "clamd_drain": clamd_drain,
}
# Kinds that may take minutes (the worker runs them on threads of their own).
SLOW_KINDS = frozenset({"sandbox_check"})


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
