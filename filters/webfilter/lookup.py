"""Categories of names the local lists do not have, asked of the operations center and cached.

The seed's web filter asks a category service (TCP 6060/6061). Here the agent asks the operations
center over HTTPS, off the packet path (a Hold with an I/O request), and never holds a packet
longer than ``timeout``: on timeout or error the name is allowed and the event is logged. Answers
are cached per worker (positive for the answer's TTL, capped; "no category" and errors for shorter
times), so each name costs at most one lookup per TTL.
"""
from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Mapping

from filters.engine import ConfigError

KEYS = {"enabled", "url", "timeout", "cache_ttl", "negative_ttl", "error_ttl", "cache_size", "auth_file", "ca_file"}


@dataclass(frozen=True, slots=True)
class LookupSettings:
    enabled: bool = False
    url: str = ""
    timeout: float = 0.5
    cache_ttl: float = 3600.0
    negative_ttl: float = 300.0
    error_ttl: float = 30.0
    cache_size: int = 100_000
    auth_file: str = "/var/lib/vcr-agent/center.json"
    ca_file: str = ""


def _number(section: Mapping[str, Any], key: str, default: float, lo: float, hi: float) -> float:
    value = section.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
        raise ConfigError(f"expected a number from {lo:g} to {hi:g}", key=key)
    return float(value)


def parse_lookup(section: Any) -> LookupSettings:
    if section is None:
        return LookupSettings()
    if not isinstance(section, dict):
        raise ConfigError("expected a mapping")
    unknown = set(section) - KEYS
    if unknown:
        raise ConfigError("unknown key", key=sorted(unknown)[0])
    enabled = section.get("enabled", False)
    if not isinstance(enabled, bool):
        raise ConfigError("expected true or false", key="enabled")
    url = section.get("url", "")
    if not isinstance(url, str) or (enabled and not url.startswith(("https://", "http://"))):
        raise ConfigError("expected the https:// URL of the center's category endpoint", key="url")
    for key in ("auth_file", "ca_file"):
        if not isinstance(section.get(key, ""), str):
            raise ConfigError("expected a file path", key=key)
    return LookupSettings(
        enabled=enabled, url=url,
        timeout=_number(section, "timeout", 0.5, 0.01, 5.0),
        cache_ttl=_number(section, "cache_ttl", 3600, 1, 7 * 86400),
        negative_ttl=_number(section, "negative_ttl", 300, 1, 86400),
        error_ttl=_number(section, "error_ttl", 30, 1, 3600),
        cache_size=int(_number(section, "cache_size", 100_000, 16, 10_000_000)),
        auth_file=section.get("auth_file", LookupSettings.auth_file),
        ca_file=section.get("ca_file", ""),
    )


class LookupCache:
    """name -> categories with expiry, least recently used evicted first."""

    def __init__(self, size: int, clock: Any = time.monotonic) -> None:
        self.size = size
        self.clock = clock
        self._entries: OrderedDict[str, tuple[float, frozenset[str]]] = OrderedDict()

    def get(self, name: str) -> frozenset[str] | None:
        hit = self._entries.get(name)
        if hit is None:
            return None
        if hit[0] <= self.clock():
            del self._entries[name]
            return None
        self._entries.move_to_end(name)
        return hit[1]

    def put(self, name: str, categories: frozenset[str], ttl: float) -> None:
        self._entries[name] = (self.clock() + ttl, categories)
        self._entries.move_to_end(name)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)
