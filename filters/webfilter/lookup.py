"""Categories of names the local lists do not have, asked of the operations center and cached.

The seed's web filter asks a category service (TCP 6060/6061). Here the agent asks the operations
center over HTTPS, off the packet path (a Hold with an I/O request), and never holds a packet
longer than ``timeout``: on timeout or error the name is allowed and the event is logged. Answers
are cached per worker (positive for the answer's TTL, capped; "no category" and errors for shorter
times), so each name costs at most one lookup per TTL.

The request carries the box's device token, so it goes only over HTTPS to the center and is checked
against the center's CA file alone: ``url`` must be ``https://`` and, when the lookup is enabled,
``ca_file`` is required (the system CA store is never used for it).
"""
from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from filters.engine import ConfigError

AUTH_FILE = "/var/lib/vcr-agent/center.json"  # the center credential (agent/link/center.py)


@dataclass(frozen=True, slots=True)
class LookupSettings:
    enabled: bool = False
    url: str = ""
    timeout: float = 0.5
    cache_ttl: float = 3600.0
    negative_ttl: float = 300.0
    error_ttl: float = 30.0
    cache_size: int = 100_000
    auth_file: str = AUTH_FILE
    ca_file: str = ""


class LookupConfig(BaseModel):
    """``engines.webfilter.lookup``: categories of unlisted names asked of the operations center."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    enabled: bool = Field(False, description="ask the center for the categories of names the local lists do not have")
    url: str = Field("", description="the https:// URL of the center's category endpoint (https only: the request "
                                     "carries the box's token); required when enabled")
    timeout: float = Field(0.5, ge=0.01, le=5.0, description="seconds a flow is held for an answer at most (then allowed)")
    cache_ttl: float = Field(3600.0, ge=1, le=7 * 86400, description="seconds an answer with categories is kept at most")
    negative_ttl: float = Field(300.0, ge=1, le=86400, description="seconds a 'no category' answer is kept")
    error_ttl: float = Field(30.0, ge=1, le=3600, description="seconds a failed lookup is not retried")
    cache_size: int = Field(100_000, ge=16, le=10_000_000, description="names cached per worker")
    auth_file: str = Field(AUTH_FILE, description="the box's center credential (written by activation)")
    ca_file: str = Field("", description="the center's CA file, the only CA the lookup trusts (never the system's); "
                                         "required when enabled")

    @model_validator(mode="after")
    def _https_to_the_center(self) -> "LookupConfig":
        if (self.enabled or self.url) and not self.url.lower().startswith("https://"):
            # the request carries the box's device token: never in clear text (http://)
            raise ConfigError("expected the https:// URL of the center's category endpoint (http:// would send the "
                              "box's token in clear text)", key="url")
        if self.enabled and not self.ca_file:
            raise ConfigError("expected the center's CA file (the lookup trusts that CA only, never the system's)",
                              key="ca_file")
        return self

    def settings(self) -> LookupSettings:
        return LookupSettings(self.enabled, self.url, float(self.timeout), float(self.cache_ttl), float(self.negative_ttl),
                              float(self.error_ttl), self.cache_size, self.auth_file, self.ca_file)


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
