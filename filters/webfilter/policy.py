"""The customer's web policy (blocked categories, allow and deny lists) and the decision for one host or URL."""
from __future__ import annotations

import enum
import logging
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from filters.engine import ConfigError
from filters.webfilter.categories import CategoryDB, EntryError, parse_entry

log = logging.getLogger(__name__)

# Shipped default: only the UT1 categories about attacks on the office itself, nothing a customer
# would be surprised to see blocked. Everything else is a workplace-policy choice to opt into.
#   malware        malware distribution and command-and-control hosts
#   phishing       credential-phishing and scam pages
#   cryptojacking  in-browser mining scripts and the pools hijacked browsers/servers mine for
#   ddos           DDoS-for-hire ("booter"/"stresser") services: attack tools with no business use
# Not by default: stalkerware (a security category, but its 30-entry list also names a video-ad
# platform and a commercial remote-support vendor), hacking (security news and tools an IT
# person may need), remote-control (TeamViewer/AnyDesk: used by the office's own IT support),
# redirector (URL shorteners, translation proxies), vpn, doh, and all content categories.
DEFAULT_BLOCKED: frozenset[str] = frozenset({"malware", "phishing", "cryptojacking", "ddos"})
POLICY_KEYS = ("blocked", "allow", "deny")
MAX_POLICY_ENTRIES = 10_000  # per allow/deny list


class WebVerdict(enum.StrEnum):
    ALLOW = "allow"
    BLOCK = "block"


@dataclass(frozen=True, slots=True)
class Decision:
    """The web filter's answer for one host (or host/path) and why.

    ``reason``: "allow list", "deny list", "category <name>" or "not blocked"; ``matched``: the
    list entry that decided ("" when nothing matched); ``categories``: every category of the site.
    """

    verdict: WebVerdict
    categories: frozenset[str]
    reason: str
    matched: str = ""

    @property
    def blocks(self) -> bool:
        return self.verdict is WebVerdict.BLOCK


@dataclass(frozen=True, slots=True)
class WebPolicy:
    """Blocked categories plus the customer's own lists. The allow list wins over everything.

    Entries: "example.com" (that name and its subdomains), "192.0.2.1" / "[2001:db8::1]" (that
    address), "example.com/path" (URL prefix on exactly that host, as in UT1 urls files).
    """

    blocked: frozenset[str] = DEFAULT_BLOCKED
    allow: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()
    _allow_db: CategoryDB = field(init=False, repr=False, compare=False)
    _deny_db: CategoryDB = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "blocked", frozenset(self.blocked))
        object.__setattr__(self, "allow", tuple(self.allow))
        object.__setattr__(self, "deny", tuple(self.deny))
        object.__setattr__(self, "_allow_db", CategoryDB.from_entries({"allow list": self.allow}))
        object.__setattr__(self, "_deny_db", CategoryDB.from_entries({"deny list": self.deny}))


def _entry_list(section: Mapping[str, Any], key: str) -> tuple[str, ...]:
    """An allow/deny list as canonical entry texts, duplicates dropped; ConfigError names the bad item."""
    items = section.get(key)
    if items is None:
        return ()
    if not isinstance(items, (list, tuple)):
        raise ConfigError("expected a list of domains or host/path prefixes", key=key)
    if len(items) > MAX_POLICY_ENTRIES:
        raise ConfigError(f"too many entries ({len(items)}, at most {MAX_POLICY_ENTRIES})", key=key)
    out: dict[str, None] = {}
    for i, item in enumerate(items):
        if not isinstance(item, str):
            raise ConfigError("expected a domain or host/path prefix (a string)", key=f"{key}[{i}]")
        try:
            out[str(parse_entry(item))] = None
        except EntryError as exc:
            raise ConfigError(f"not a domain, IP address or host/path prefix: {exc.reason}: {item[:80]!r}",
                              key=f"{key}[{i}]") from None
    return tuple(out)


def _blocked(section: Mapping[str, Any], known: Collection[str] | None) -> frozenset[str]:
    if "blocked" not in section:
        return DEFAULT_BLOCKED
    items = section["blocked"]
    if items is None:
        return frozenset()
    if not isinstance(items, (list, tuple)):
        raise ConfigError("expected a list of category names", key="blocked")
    names: set[str] = set()
    for i, item in enumerate(items):
        if not isinstance(item, str) or not item.strip():
            raise ConfigError("expected a category name (a string)", key=f"blocked[{i}]")
        name = item.strip()
        if known is not None and name not in known:
            raise ConfigError(f"unknown category {name!r} (known: {', '.join(sorted(known))})", key=f"blocked[{i}]")
        names.add(name)
    return frozenset(names)


def parse_policy(section: Mapping[str, Any] | None, *, known_categories: Collection[str] | None = None) -> WebPolicy:
    """The web policy from its config section: ``blocked`` (category names; missing = ``DEFAULT_BLOCKED``,
    empty list = block no category), ``allow`` and ``deny`` (lists of entries, see ``WebPolicy``).

    Raises ``ConfigError`` with the key (``allow[2]``...) for unknown keys and bad values; category
    names are checked only when ``known_categories`` is given (e.g. ``db.categories``).
    """
    if section is None:
        section = {}
    if not isinstance(section, Mapping):
        raise ConfigError("expected a mapping with blocked, allow and deny")
    unknown = sorted(str(k) for k in section if k not in POLICY_KEYS)
    if unknown:
        raise ConfigError(f"unknown key (expected {', '.join(POLICY_KEYS)})", key=unknown[0])
    return WebPolicy(
        blocked=_blocked(section, known_categories),
        allow=_entry_list(section, "allow"),
        deny=_entry_list(section, "deny"),
    )


def decide(db: CategoryDB, policy: WebPolicy, host: str | bytes, path: str | bytes = "",
           extra: frozenset[str] = frozenset()) -> Decision:
    """Allow or block ``host`` (and ``path``, when the request is visible: plain HTTP).

    Order: the allow list wins over everything, then the deny list, then the blocked categories
    (the alphabetically first blocked category is named), else allow. ``extra``: categories known
    from elsewhere (the operations center's answer for a name the local lists do not have).
    """
    cats = db.lookup(host, path) | extra
    allowed = policy._allow_db.matches(host, path) if policy.allow else ()
    if allowed:
        return Decision(WebVerdict.ALLOW, cats, "allow list", allowed[0].entry)
    denied = policy._deny_db.matches(host, path) if policy.deny else ()
    if denied:
        return Decision(WebVerdict.BLOCK, cats, "deny list", denied[0].entry)
    hit = cats & policy.blocked
    if not hit:
        return Decision(WebVerdict.ALLOW, cats, "not blocked")
    name = min(hit)
    matched = next((m.entry for m in db.matches(host, path) if name in m.categories), "" if name not in extra else "center lookup")
    return Decision(WebVerdict.BLOCK, cats, f"category {name}", matched)
