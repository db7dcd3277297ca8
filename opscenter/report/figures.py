"""Alarm figures of a month: attacks and threats by function, severity and day, the LAN hosts most
involved, blocked categories and sites, and the box's update events; from the alarms stored at the
center (the boxes' EVE records).

Which records count: ``alert`` records of an inspection function (``alert.engine``: ips, atp,
webfilter, av / antivirus, antispam, sandbox, firewall; records without an engine name are IPS rules
when their gid is 1 and their signature id below 9,000,000). The web filter's protocol blocks
(QUIC, DNS over TLS: ``webfilter.where`` quic / dot) are policy, not threats: counted apart. The
agent's own alarms, decoder anomalies, policy drops and spool gaps are not attacks; neither are the
antivirus's records of files it could not judge (``av.reason`` other than ``infected``: counted apart). Update and
upgrade records feed the update status.

When: the record's own ``timestamp`` (the box's clock), in Japan time; when it is missing, not
parseable or more than 31 days before / 1 day after the center received it, the reception time.

Everything read here is box-supplied: text is made plain (:func:`opscenter.textsafe.clean`) and cut.
"""
from __future__ import annotations

import datetime as dt
import ipaddress
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any, Iterable
from urllib.parse import urlsplit

from sqlalchemy import and_, select

from opscenter.db import Database, alarms
from opscenter.report.period import Month, to_jst
from opscenter.textsafe import clean

Pair = tuple[str, str]

# The functions of the service (別紙1 table 3), in report order: key -> (Japanese, English).
FUNCTIONS: dict[str, Pair] = {
    "ips": ("不正侵入防止 (IPS)", "Intrusion prevention (IPS)"),
    "atp": ("脅威対策 (C&C 通信の遮断)", "Advanced threat protection (C&C)"),
    "webfilter": ("Web フィルター", "Web filter"),
    "antivirus": ("アンチウイルス", "Antivirus"),
    "antispam": ("アンチスパム", "Anti-spam"),
    "sandbox": ("サンドボックス", "Sandbox"),
    "firewall": ("ファイアウォール", "Firewall"),
}
# alert.engine -> function
ENGINE_FUNCTION: dict[str, str] = {
    "ips": "ips", "atp": "atp", "webfilter": "webfilter", "firewall": "firewall",
    "av": "antivirus", "antivirus": "antivirus", "clamav": "antivirus", "web_av": "antivirus", "mail_av": "antivirus",
    "antispam": "antispam", "anti_spam": "antispam", "spam": "antispam",
    "sandbox": "sandbox",
}
SEVERITIES: dict[str, Pair] = {
    "high": ("高", "high"),
    "medium": ("中", "medium"),
    "low": ("低", "low"),
}
POLICY_WHERE = frozenset({"quic", "dot"})
THREAT_CATEGORY = "threat-intel"  # ATP blocks, in the category list
DETAIL_KEYS = ("atp", "webfilter", "av", "antivirus", "sandbox", "antispam")
RECEIVED_BEFORE = dt.timedelta(days=1)  # alarms received this long before the month may belong to it
RECEIVED_AFTER = dt.timedelta(days=31)  # and this long after (spooled while the center was unreachable)
TOP = 10
TOP_HOSTS = 8  # the PCs listed in the report


def severity_class(sev: Any) -> str:
    """EVE severity 1 high, 2 medium, 3 and 4 (and anything else) low."""
    if sev == 1:
        return "high"
    if sev == 2:
        return "medium"
    return "low"


def _text(v: Any, limit: int = 120) -> str:
    if v is None or isinstance(v, (dict, list, bool)):
        return ""
    return clean(v)[:limit]


def parse_timestamp(text: Any) -> dt.datetime | None:
    """An EVE timestamp (``2026-11-25T19:08:56.123456+0000``, or RFC 3339) as naive UTC, or None."""
    if not isinstance(text, str) or len(text) > 40:
        return None
    for fmt in ("%Y-%m-%dT%H:%M:%S.%f%z", "%Y-%m-%dT%H:%M:%S%z"):
        try:
            t = dt.datetime.strptime(text, fmt)
            return t.astimezone(dt.timezone.utc).replace(tzinfo=None)
        except ValueError:
            pass
    try:
        t = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return t.astimezone(dt.timezone.utc).replace(tzinfo=None) if t.tzinfo else None


def event_time(event: dict[str, Any], received_at: dt.datetime) -> dt.datetime:
    """When it happened (see the module text)."""
    t = parse_timestamp(event.get("timestamp"))
    if t is None or not (received_at - RECEIVED_AFTER <= t <= received_at + RECEIVED_BEFORE):
        return received_at
    return t


def function_of(event: dict[str, Any]) -> str | None:
    """The function an ``alert`` record belongs to, or None when it is not an attack or threat."""
    if event.get("event_type") != "alert":
        return None
    alert = event.get("alert")
    if not isinstance(alert, dict):
        return None
    engine = alert.get("engine")
    if isinstance(engine, str):
        fn = ENGINE_FUNCTION.get(engine)
    else:
        sid, gid = alert.get("signature_id"), alert.get("gid")
        fn = "ips" if isinstance(sid, int) and sid < 9_000_000 and gid in (1, None) else None
    if fn == "webfilter":
        wf = event.get("webfilter")
        if isinstance(wf, dict) and wf.get("where") in POLICY_WHERE:
            return None
    if fn == "antivirus" and _av_unscanned(event):
        return None
    return fn


def _av_unscanned(event: dict[str, Any]) -> bool:
    """An antivirus record about a file it could not judge (too large, timeout, encrypted or corrupt
    archive: ``av.reason`` other than ``infected``): not a threat found."""
    av = event.get("av")
    return isinstance(av, dict) and isinstance(av.get("reason"), str) and av["reason"] != "infected"


def _private(ip: str) -> bool:
    try:
        a = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return a.is_private or a.is_link_local


def lan_host(event: dict[str, Any]) -> tuple[str | None, str]:
    """The office PC of a record and its role: ("192.168.1.23", "source" | "target")."""
    src, dst = _text(event.get("src_ip"), 64), _text(event.get("dest_ip"), 64)
    for key in DETAIL_KEYS:
        sub = event.get(key)
        if isinstance(sub, dict):
            host = _text(sub.get("lan_host"), 64)
            if host:
                return host, "target" if host == dst and host != src else "source"
    side = event.get("in_iface")
    if side == "lan" and src:
        return src, "source"
    if side == "wan" and dst:
        return dst, "target"
    if src and _private(src):
        return src, "source"
    if dst and _private(dst):
        return dst, "target"
    return None, "source"


def _host_of(text: str) -> str:
    if "://" in text:
        try:
            return urlsplit(text).hostname or text
        except ValueError:
            return text
    return text.split("/", 1)[0]


def site_of(event: dict[str, Any], fn: str) -> str | None:
    """The site (host name or address) a blocked record was about."""
    if fn == "webfilter":
        wf = event.get("webfilter")
        if isinstance(wf, dict) and _text(wf.get("host")):
            return _host_of(_text(wf.get("host"), 253))
    if fn == "atp":
        a = event.get("atp")
        if isinstance(a, dict):
            for k in ("url", "seen", "indicator"):
                v = _text(a.get(k), 500)
                if v:
                    return _host_of(v)[:253]
    for key in ("av", "antivirus", "sandbox"):
        sub = event.get(key)
        if isinstance(sub, dict):
            for k in ("host", "url"):
                v = _text(sub.get(k), 500)
                if v:
                    return _host_of(v)[:253]
    http = event.get("http")
    if isinstance(http, dict) and _text(http.get("hostname")):
        return _text(http.get("hostname"), 253)
    return None


def categories_of(event: dict[str, Any], fn: str) -> list[str]:
    if fn == "atp":
        return [THREAT_CATEGORY]
    if fn != "webfilter":
        return []
    wf = event.get("webfilter")
    cats = wf.get("categories") if isinstance(wf, dict) else None
    if not isinstance(cats, list):
        return []
    return sorted({_text(c, 64) for c in cats[:16] if _text(c, 64)})


@dataclass(frozen=True)
class Threat:
    """One counted record."""

    function: str
    severity: str  # high | medium | low
    blocked: bool
    day: int  # 1-based day of the month (Japan time)
    host: str | None
    role: str
    site: str | None
    categories: tuple[str, ...]
    signature: str


def classify(event: dict[str, Any], received_at: dt.datetime, row_severity: int | None, month: Month) -> Threat | None:
    """The record as a counted threat of ``month``, or None (not a threat, or another month)."""
    fn = function_of(event)
    if fn is None:
        return None
    t = event_time(event, received_at)
    if not month.start <= t < month.end:
        return None
    alert = event["alert"]
    sev = alert.get("severity")
    sev = sev if isinstance(sev, int) and not isinstance(sev, bool) else row_severity
    host, role = lan_host(event)
    blocked = alert.get("action") == "blocked"
    return Threat(
        function=fn, severity=severity_class(sev), blocked=blocked, day=to_jst(t).day, host=host, role=role,
        site=site_of(event, fn) if blocked else None, categories=tuple(categories_of(event, fn)) if blocked else (),
        signature=_text(alert.get("signature"), 160) or "-")


@dataclass
class FunctionFigures:
    key: str
    name: Pair
    total: int = 0
    blocked: int = 0
    high: int = 0
    medium: int = 0
    low: int = 0
    reported: bool = False  # the box reported this engine in a check-in this month

    @property
    def detected_only(self) -> int:
        return self.total - self.blocked

    @property
    def has_data(self) -> bool:
        return self.total > 0 or self.reported


@dataclass
class HostFigures:
    ip: str
    total: int = 0
    by_function: dict[str, int] = field(default_factory=dict)
    as_target: int = 0  # records where the PC was the target (attacked from outside)
    blocked: int = 0
    signatures: list[tuple[str, int]] = field(default_factory=list)  # most frequent first
    categories: list[tuple[str, int]] = field(default_factory=list)


@dataclass
class UpdateFigures:
    applied: dict[str, int] = field(default_factory=dict)  # bundle kind -> activations this month
    rejected: int = 0
    rolled_back_bundles: int = 0
    upgrades: list[str] = field(default_factory=list)  # versions upgraded to
    upgrade_rollbacks: int = 0
    upgrade_failures: int = 0


@dataclass
class AlarmFigures:
    month: str
    functions: dict[str, FunctionFigures]
    by_day: dict[str, list[int]]  # function -> counts per day (index 0 = the 1st)
    hosts: list[HostFigures]  # the most involved first (TOP)
    categories: list[tuple[str, int]]  # blocked categories, most first (TOP)
    sites: list[tuple[str, int]]  # blocked sites, most first (TOP)
    policy_blocks: int  # web filter protocol blocks (QUIC, DoT): not counted as threats
    updates: UpdateFigures
    av_unscanned: int = 0  # files the antivirus could not judge (not counted as threats)
    hosts_total: int = 0  # distinct LAN hosts involved

    @property
    def total(self) -> int:
        return sum(f.total for f in self.functions.values())

    @property
    def blocked(self) -> int:
        return sum(f.blocked for f in self.functions.values())

    @property
    def high(self) -> int:
        return sum(f.high for f in self.functions.values())


def alarm_id_range(db: Database, month: Month) -> tuple[int | None, int | None]:
    """Ids of the alarms received in [start - 1 day, end + 31 days): (first id, first id after) by index seeks."""
    a, b = month.start - RECEIVED_BEFORE, month.end + RECEIVED_AFTER
    with db.read() as conn:
        lo = conn.execute(select(alarms.c.id).where(alarms.c.received_at >= a)
                          .order_by(alarms.c.received_at, alarms.c.id).limit(1)).scalar()
        hi = conn.execute(select(alarms.c.id).where(alarms.c.received_at >= b)
                          .order_by(alarms.c.received_at, alarms.c.id).limit(1)).scalar()
    return lo, hi


def load_alarms(db: Database, device_ids: list[str], month: Month,
                id_range: tuple[int | None, int | None] | None = None) -> Iterable[tuple[dt.datetime, int | None, dict]]:
    """(received_at, severity, event) of the devices' alarms that may belong to ``month``."""
    if not device_ids:
        return []
    lo, hi = id_range if id_range is not None else alarm_id_range(db, month)
    if lo is None:
        return []
    q = select(alarms.c.received_at, alarms.c.severity, alarms.c.event).where(and_(
        alarms.c.device_id.in_(device_ids), alarms.c.id >= lo))
    if hi is not None:
        q = q.where(alarms.c.id < hi)
    with db.read() as conn:
        return conn.execute(q).all()


def _updates(rows: Iterable[tuple[dt.datetime, int | None, dict]], month: Month) -> UpdateFigures:
    out = UpdateFigures()
    for received_at, _sev, ev in rows:
        et = ev.get("event_type")
        if et not in ("update", "upgrade") or not month.start <= event_time(ev, received_at) < month.end:
            continue
        body = ev.get(et)
        if not isinstance(body, dict):
            continue
        action = body.get("action")
        if et == "update":
            if action in ("activated", "applied", "installed"):
                kind = _text(body.get("kind"), 32) or "?"
                out.applied[kind] = out.applied.get(kind, 0) + 1
            elif action == "rejected":
                out.rejected += 1
            elif action in ("rolled_back", "rollback"):
                out.rolled_back_bundles += 1
        else:
            if action == "done":
                v = _text(body.get("version"), 40)
                if v and v not in out.upgrades:
                    out.upgrades.append(v)
            elif action == "rolled_back":
                out.upgrade_rollbacks += 1
            elif action in ("aborted", "failed"):
                out.upgrade_failures += 1
    return out


def compute(rows: list[tuple[dt.datetime, int | None, dict]], month: Month,
            reported_engines: Iterable[str] = ()) -> AlarmFigures:
    """The figures of ``month`` from alarm rows (received_at, severity, event)."""
    functions = {k: FunctionFigures(k, name) for k, name in FUNCTIONS.items()}
    for engine in reported_engines:
        fn = ENGINE_FUNCTION.get(engine)
        if fn:
            functions[fn].reported = True
    by_day = {k: [0] * month.days for k in FUNCTIONS}
    host_counts: dict[str, HostFigures] = {}
    host_sigs: dict[str, Counter[str]] = defaultdict(Counter)
    host_cats: dict[str, Counter[str]] = defaultdict(Counter)
    cats: Counter[str] = Counter()
    sites: Counter[str] = Counter()
    policy = unscanned = 0
    for received_at, row_sev, ev in rows:
        if not isinstance(ev, dict):
            continue
        th = classify(ev, received_at, row_sev, month)
        if th is None:
            if (ev.get("event_type") == "alert" and (_is_policy_block(ev) or _is_av_unscanned(ev))
                    and month.start <= event_time(ev, received_at) < month.end):
                if _is_policy_block(ev):
                    policy += 1
                else:
                    unscanned += 1
            continue
        f = functions[th.function]
        f.total += 1
        f.blocked += th.blocked
        setattr(f, th.severity, getattr(f, th.severity) + 1)
        by_day[th.function][th.day - 1] += 1
        if th.host:
            h = host_counts.get(th.host) or host_counts.setdefault(th.host, HostFigures(th.host))
            h.total += 1
            h.by_function[th.function] = h.by_function.get(th.function, 0) + 1
            h.as_target += th.role == "target"
            h.blocked += th.blocked
            host_sigs[th.host][th.signature] += 1
            for c in th.categories:
                host_cats[th.host][c] += 1
        for c in th.categories:
            cats[c] += 1
        if th.site:
            sites[th.site] += 1
    hosts = sorted(host_counts.values(), key=lambda h: (-h.total, _ip_key(h.ip)))[:TOP_HOSTS]
    for h in hosts:
        h.signatures = _top(host_sigs[h.ip], 3)
        h.categories = _top(host_cats[h.ip], 3)
    return AlarmFigures(month=month.key, functions=functions, by_day=by_day, hosts=hosts,
                        categories=_top(cats, TOP), sites=_top(sites, TOP), policy_blocks=policy,
                        updates=_updates(rows, month), hosts_total=len(host_counts), av_unscanned=unscanned)


def _is_policy_block(ev: dict[str, Any]) -> bool:
    wf = ev.get("webfilter")
    alert = ev.get("alert")
    return (ev.get("event_type") == "alert" and isinstance(alert, dict) and alert.get("engine") == "webfilter"
            and isinstance(wf, dict) and wf.get("where") in POLICY_WHERE)


def _is_av_unscanned(ev: dict[str, Any]) -> bool:
    alert = ev.get("alert")
    return isinstance(alert, dict) and ENGINE_FUNCTION.get(str(alert.get("engine"))) == "antivirus" and _av_unscanned(ev)


def _top(c: Counter[str], n: int) -> list[tuple[str, int]]:
    return sorted(c.items(), key=lambda kv: (-kv[1], kv[0]))[:n]


def _ip_key(ip: str) -> tuple[int, str]:
    try:
        return (0, f"{int(ipaddress.ip_address(ip)):040d}")
    except ValueError:
        return (1, ip)
