"""Threat-intel feeds for Advanced Threat Protection: C&C and malware indicator lists parsed, merged, looked up."""
from __future__ import annotations

import bisect
import csv
import enum
import hashlib
import ipaddress
import logging
import re
import socket
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping

from filters.app.dns import normalize_name
from filters.engine import ConfigError

log = logging.getLogger(__name__)

# Feeds are untrusted text. Every parser is lenient about layout (commented or bare CSV headers,
# hosts-file lines, URLs with or without scheme) and strict about limits: lines longer than
# ``FeedLimits.max_line`` and indicators beyond ``max_entries`` are dropped and counted; a line
# that gives no indicator is counted under one ``Skip`` reason; no input makes a parser raise.
#
# Policy decisions:
#
# * Non-public addresses (RFC 1918, loopback, link-local, documentation, multicast, ...) never
#   become IP/CIDR/ip:port indicators: a feed mistake must not cut the LAN off the bridge.
#   CIDRs wider than /8 (IPv4) or /16 (IPv6) are refused for the same reason.
# * Feodo Tracker: every row gives an ip:port indicator (precise attribution, and the only thing
#   kept for ``offline`` C2s, whose addresses are often re-assigned). Rows whose C2 is ``online``
#   also give a whole-IP indicator: Feodo publishes this list for IP blocking, the C2 is live, and
#   botnets move ports. ``include_offline=False`` drops offline rows, ``block_whole_ip=False``
#   keeps only ip:port. ThreatFox ip:port IOCs stay ip:port (no curated "block the host" promise).
# * URLs are matched by prefix at a separator boundary (ABP ``^``: the listed URL ends where the
#   request ends or is followed by a character other than a letter, digit, ``_ - . %``), so
#   ``host/i`` does not match ``host/index.html``. URLs from ABP lists (``||host/path^``) also
#   match subdomains and compare the path case-insensitively (the URLhaus ABP list is lower-cased);
#   URLs from the other feeds match the exact host and compare the path byte for byte.
# * Kernel sets: IPs and CIDRs go to ``hash:net`` sets; ip:port indicators to ``hash:ip,port`` sets
#   as ``ip,tcp:port`` (C2 channels are TCP), minus addresses a ``hash:net`` entry already covers.

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

MAX_FEED_BYTES = 256 * 1024 * 1024  # load_feed refuses bigger files (keep the previous set instead)


class IndicatorKind(enum.Enum):
    IP = "ip"
    CIDR = "cidr"
    IP_PORT = "ip_port"
    DOMAIN = "domain"
    URL = "url"


class UrlMatch(enum.Enum):
    """How a feed's URL indicators compare with requests."""

    EXACT = "exact"  # the listed host only; the path prefix compared byte for byte
    ABP = "abp"  # ``||host/path^``: the host or any subdomain; the path compared case-insensitively


class Skip(enum.StrEnum):
    """Why a feed line (or one name of a hosts-file line) gave no indicator."""

    LINE_TOO_LONG = "line_too_long"
    OVER_ENTRY_CAP = "over_entry_cap"
    BAD_SYNTAX = "bad_syntax"
    BAD_ENCODING = "bad_encoding"
    BAD_IP = "bad_ip"
    BAD_CIDR = "bad_cidr"
    CIDR_TOO_WIDE = "cidr_too_wide"
    NON_PUBLIC_IP = "non_public_ip"
    BAD_PORT = "bad_port"
    BAD_DOMAIN = "bad_domain"
    SINGLE_LABEL = "single_label"
    HOSTS_BUILTIN = "hosts_builtin"
    BAD_URL = "bad_url"
    UNSUPPORTED_SCHEME = "unsupported_scheme"
    PATH_ONLY = "path_only"
    BAD_CSV_ROW = "bad_csv_row"
    OFFLINE = "offline"
    HASH_IOC = "hash_ioc"
    UNSUPPORTED_IOC_TYPE = "unsupported_ioc_type"
    LOW_CONFIDENCE = "low_confidence"
    ABP_EXCEPTION = "abp_exception"
    ABP_COSMETIC = "abp_cosmetic"
    ABP_OPTIONS = "abp_options"
    ABP_WILDCARD = "abp_wildcard"
    ABP_UNSUPPORTED = "abp_unsupported"
    INTERNAL_ERROR = "internal_error"  # a parser bug, caught so one line cannot stop an update


@dataclass(frozen=True, slots=True)
class Indicator:
    """One blockable thing from a feed. ``value`` is normalized (see the module docstring)."""

    kind: IndicatorKind
    value: str  # "1.2.3.4", "10.0.0.0/8", "1.2.3.4:443", "[2001:db8::1]:443", "evil.example", "host/path"
    threat: str  # "Emotet", "botnet_cc", "malware_download"; merged indicators join all names with ", "
    source: str  # feed name; merged indicators join all feeds with ","
    port: int | None = None  # the port of an ip:port indicator, or a URL's explicit port
    tags: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class FeedLimits:
    """Caps on one feed: an attacker (or a broken mirror) controls its content."""

    max_line: int = 4096
    max_entries: int = 2_000_000
    max_tags: int = 16
    max_text: int = 128  # threat names and tags are cut to this many characters
    min_prefix_v4: int = 8
    min_prefix_v6: int = 16
    # The lab's "internet" uses the documentation ranges (RFC 5737/3849); a lab config opts in so
    # its C&C servers there can be listed. Never set on a real box.
    allow_documentation: bool = False


@dataclass(frozen=True, slots=True)
class ParseResult:
    indicators: list[Indicator]
    skipped: Counter[str]  # Skip reason -> count
    total_lines: int
    source: str = ""
    url_match: UrlMatch = UrlMatch.EXACT


@dataclass(frozen=True, slots=True)
class _Entry:
    kind: IndicatorKind
    value: str
    port: int | None = None


_NON_PUBLIC_V4 = tuple(ipaddress.IPv4Network(n) for n in (
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
    "192.0.0.0/24", "192.0.2.0/24", "192.168.0.0/16", "198.18.0.0/15", "198.51.100.0/24",
    "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4"))
_NON_PUBLIC_V6 = tuple(ipaddress.IPv6Network(n) for n in (
    "::/8", "64:ff9b:1::/48", "100::/64", "2001::/23", "2001:db8::/32", "fc00::/7", "fe80::/10", "ff00::/8"))
_RESERVED_V4 = tuple((int(n.network_address), int(n.broadcast_address)) for n in _NON_PUBLIC_V4)
_RESERVED_V6 = tuple((int(n.network_address), int(n.broadcast_address)) for n in _NON_PUBLIC_V6)
_DOCUMENTATION = frozenset({"192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32"})
_NON_PUBLIC_LAB_V4 = tuple(n for n in _NON_PUBLIC_V4 if str(n) not in _DOCUMENTATION)
_NON_PUBLIC_LAB_V6 = tuple(n for n in _NON_PUBLIC_V6 if str(n) not in _DOCUMENTATION)
_RESERVED_LAB_V4 = tuple((int(n.network_address), int(n.broadcast_address)) for n in _NON_PUBLIC_LAB_V4)
_RESERVED_LAB_V6 = tuple((int(n.network_address), int(n.broadcast_address)) for n in _NON_PUBLIC_LAB_V6)
_HOSTS_BUILTIN = frozenset({
    "localhost", "localhost.localdomain", "local", "broadcasthost", "ip6-localhost", "ip6-loopback",
    "ip6-localnet", "ip6-mcastprefix", "ip6-allnodes", "ip6-allrouters", "ip6-allhosts", "0.0.0.0"})
_ABP_OPTIONS_OK = frozenset({"all", "doc", "document", "important", "popup"})

_SCHEME_RE = re.compile(r"([A-Za-z][A-Za-z0-9+.-]{0,15})://")
_CIDR_RE = re.compile(r"[0-9A-Fa-f:.]+/[0-9]{1,3}")
_DOMAIN_RE = re.compile(r"(?:[a-z0-9_-]{1,63}\.)+(?=[a-z0-9-]*[a-z])[a-z0-9-]{1,63}")
_NUMERIC_RE = re.compile(r"[0-9.]+")
_IPV4_RE = re.compile(r"[0-9]{1,3}(?:\.[0-9]{1,3}){3}")
_CTRL_RE = re.compile(r"[\x00-\x20\x7f]")
_INLINE_COMMENT_RE = re.compile(r"\s+[#;].*")
_MALTRAIL_COMMENT_RE = re.compile(r"\s*#.*")
_ABP_OPTIONS_RE = re.compile(r"[A-Za-z0-9_~=,|.-]+")
_SEPARATOR_RE = re.compile(r"[^\w.%-]")


# --- small parsers shared by the feeds ------------------------------------------------------------

def _parse_ip(text: str) -> IPAddress | None:
    """An IP address (IPv4-mapped IPv6 becomes IPv4); None when ``text`` is not one."""
    if not (_IPV4_RE.fullmatch(text) or (":" in text and "%" not in text)):
        return None  # cheap pre-check: most tokens are host names
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if ip.version == 6 and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _public(ip: IPAddress, limits: FeedLimits) -> bool:
    number = int(ip)
    if limits.allow_documentation:
        reserved = _RESERVED_LAB_V4 if ip.version == 4 else _RESERVED_LAB_V6
    else:
        reserved = _RESERVED_V4 if ip.version == 4 else _RESERVED_V6
    return not any(lo <= number <= hi for lo, hi in reserved)


def _parse_port(text: str) -> int | None:
    if not (text.isascii() and text.isdigit()) or len(text) > 5:
        return None
    port = int(text)
    return port if 0 < port <= 65535 else None


def _ip_text(ip: IPAddress) -> str:
    return str(ip) if ip.version == 4 else f"[{ip}]"


def _ip_entry(ip: IPAddress, limits: FeedLimits) -> _Entry | Skip:
    return _Entry(IndicatorKind.IP, str(ip)) if _public(ip, limits) else Skip.NON_PUBLIC_IP


def _ip_port_entry(ip: IPAddress, port: int, limits: FeedLimits) -> _Entry | Skip:
    if not _public(ip, limits):
        return Skip.NON_PUBLIC_IP
    return _Entry(IndicatorKind.IP_PORT, f"{_ip_text(ip)}:{port}", port)


def _cidr_entry(text: str, limits: FeedLimits) -> _Entry | Skip:
    try:
        net = ipaddress.ip_network(text, strict=False)
    except ValueError:
        return Skip.BAD_CIDR
    if net.prefixlen == net.max_prefixlen:
        return _ip_entry(net.network_address, limits)
    if net.prefixlen < (limits.min_prefix_v4 if net.version == 4 else limits.min_prefix_v6):
        return Skip.CIDR_TOO_WIDE
    if limits.allow_documentation:
        reserved = _NON_PUBLIC_LAB_V4 if net.version == 4 else _NON_PUBLIC_LAB_V6
    else:
        reserved = _NON_PUBLIC_V4 if net.version == 4 else _NON_PUBLIC_V6
    if any(net.overlaps(other) for other in reserved):  # type: ignore[arg-type]
        return Skip.NON_PUBLIC_IP
    return _Entry(IndicatorKind.CIDR, str(net))


def _split_host_port(text: str) -> tuple[str, int | None] | Skip:
    """``host``, ``host:port``, ``[v6]`` or ``[v6]:port``; a bare IPv6 address is one host."""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            return Skip.BAD_IP
        host, rest = text[1:end], text[end + 1:]
        if not rest or rest == ":":
            return host, None
        port = _parse_port(rest[1:]) if rest.startswith(":") else None
        return (host, port) if port is not None else Skip.BAD_PORT
    if text.count(":") != 1:
        return text, None
    host, _, digits = text.partition(":")
    if not digits:
        return host, None
    port = _parse_port(digits)
    return (host, port) if port is not None else Skip.BAD_PORT


def _norm_domain(text: str) -> str | Skip:
    """A host name as DNS look-ups see it (``normalize_name``); at least two labels, TLD not numeric."""
    if text.startswith("*."):
        text = text[2:]
    elif text.startswith("."):
        text = text[1:]
    if "\ufffd" in text:
        return Skip.BAD_ENCODING
    if text.isascii():
        name = text.rstrip(".").lower()
    else:
        try:
            name = normalize_name(text.encode("utf-8"))
        except UnicodeEncodeError:
            return Skip.BAD_ENCODING
    if len(name) > 253 or not _DOMAIN_RE.fullmatch(name):
        if name and "." not in name and _DOMAIN_RE.fullmatch(name + ".x"):
            return Skip.SINGLE_LABEL
        return Skip.BAD_IP if _NUMERIC_RE.fullmatch(name) else Skip.BAD_DOMAIN
    return name


def _domain_entry(text: str) -> _Entry | Skip:
    name = _norm_domain(text)
    return name if isinstance(name, Skip) else _Entry(IndicatorKind.DOMAIN, name)


def _url_host(host: str, bracketed: bool) -> str | Skip:
    ip = _parse_ip(host)
    if ip is not None:
        return _ip_text(ip)
    if bracketed or ":" in host:
        return Skip.BAD_URL
    return _norm_domain(host)


def _url_entry(text: str) -> _Entry | Skip:
    """``[scheme://][user@]host[:port][/path][?query][#fragment]`` -> host + path (fragment dropped)."""
    match = _SCHEME_RE.match(text)
    rest = text
    if match:
        if match.group(1).lower() not in ("http", "https"):
            return Skip.UNSUPPORTED_SCHEME
        rest = text[match.end():]
    rest = rest.partition("#")[0]
    cut = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
    authority, path = rest[:cut].rpartition("@")[2], rest[cut:]
    if not path.startswith("/"):
        path = "/" + path
    if _CTRL_RE.search(path) or not authority:
        return Skip.BAD_URL
    split = _split_host_port(authority)
    if isinstance(split, Skip):
        return split
    host = _url_host(split[0], authority.startswith("["))
    if isinstance(host, Skip):
        return host
    return _Entry(IndicatorKind.URL, host + path, split[1])


def _classify(token: str, limits: FeedLimits) -> _Entry | Skip:
    """One bare indicator: URL (with or without scheme), CIDR, ip:port, IP or domain."""
    if "://" in token:
        return _url_entry(token)
    if "/" in token:
        return _cidr_entry(token, limits) if _CIDR_RE.fullmatch(token) else _url_entry(token)
    split = _split_host_port(token)
    if isinstance(split, Skip):
        return split
    host, port = split
    ip = _parse_ip(host)
    if ip is not None:
        return _ip_entry(ip, limits) if port is None else _ip_port_entry(ip, port, limits)
    if ":" in host or token.startswith("["):
        return Skip.BAD_IP
    return _domain_entry(host)  # a domain's port, if any, is dropped: the whole name is blocked


def _tags(values: Iterable[str], limits: FeedLimits) -> tuple[str, ...]:
    out: dict[str, None] = {}
    for value in values:
        for tag in value.split(","):
            tag = tag.strip()[:limits.max_text]
            if tag and tag.lower() not in ("none", "unknown malware"):
                out[tag] = None
    return tuple(out)[:limits.max_tags]


# --- the driver every parser uses -----------------------------------------------------------------

class _Collector:
    """Indicators and skip counts of one parse; enforces the entry cap."""

    __slots__ = ("source", "limits", "indicators", "skipped", "total", "_threats")

    def __init__(self, source: str, limits: FeedLimits) -> None:
        self.source = source
        self.limits = limits
        self.indicators: list[Indicator] = []
        self.skipped: Counter[str] = Counter()
        self.total = 0
        self._threats: dict[str, str] = {}  # raw threat name -> cleaned (names repeat a lot)

    def skip(self, reason: Skip) -> None:
        self.skipped[reason.value] += 1

    def add(self, entry: _Entry | Skip, threat: str, tags: tuple[str, ...] = ()) -> None:
        if isinstance(entry, Skip):
            self.skip(entry)
        elif len(self.indicators) >= self.limits.max_entries:
            self.skip(Skip.OVER_ENTRY_CAP)
        else:
            clean = self._threats.get(threat)
            if clean is None:
                clean = _CTRL_RE.sub(" ", threat).strip()[:self.limits.max_text] or "unknown"
                if len(self._threats) < 4096:
                    self._threats[threat] = clean
            self.indicators.append(Indicator(entry.kind, entry.value, clean, self.source, entry.port, tags))


_LineHandler = Callable[[str, _Collector], None]


def _lines(text: str) -> list[str]:
    if text.startswith("\ufeff"):
        text = text[1:]
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    return lines


def _run(text: str, source: str, limits: FeedLimits, handler: _LineHandler,
         url_match: UrlMatch = UrlMatch.EXACT) -> ParseResult:
    out = _Collector(source, limits)
    for raw in _lines(text):
        out.total += 1
        if len(raw) > limits.max_line:
            out.skip(Skip.LINE_TOO_LONG)
            continue
        line = raw.strip()
        if not line:
            continue
        try:
            handler(line, out)
        except Exception:  # a parser bug must not stop the update: count the line, keep going
            log.debug("%s: line %d not parsed", source, out.total, exc_info=True)
            out.skip(Skip.INTERNAL_ERROR)
    return ParseResult(out.indicators, out.skipped, out.total, source, url_match)


# --- plain lists and hosts files ------------------------------------------------------------------

def parse_plain(text: str, source: str, *, threat: str = "malware",
                limits: FeedLimits = FeedLimits()) -> ParseResult:
    """One indicator per line (IP, CIDR, ip:port, domain, URL with or without scheme); ``#``/``;``
    comments, also after whitespace; hosts-file lines (``0.0.0.0 evil.example other.example``)."""

    def handle(line: str, out: _Collector) -> None:
        if line[0] in "#;":
            return
        tokens = _INLINE_COMMENT_RE.sub("", line).split()
        if len(tokens) == 1:
            out.add(_classify(tokens[0], limits), threat)
        elif tokens and _parse_ip(tokens[0]) is not None:
            for name in tokens[1:]:
                _add_hosts_name(name, out, threat)
        elif tokens:
            out.skip(Skip.BAD_SYNTAX)

    return _run(text, source, limits, handle)


def _add_hosts_name(name: str, out: _Collector, threat: str) -> None:
    if name.lower() in _HOSTS_BUILTIN:
        out.skip(Skip.HOSTS_BUILTIN)
    else:
        out.add(_domain_entry(name), threat)


# --- maltrail trails ------------------------------------------------------------------------------

def _maltrail_aliases(text: str, limits: FeedLimits) -> tuple[str, ...]:
    """``# Aliases: a, b`` from the comment block before the first trail."""
    for raw in text[:64 * 1024].split("\n")[:100]:
        line = raw.strip()
        if line and not line.startswith("#"):
            break
        if line[:1] == "#" and len(line) <= limits.max_line:
            key, _, value = line.lstrip("# ").partition(":")
            if key.strip().lower() == "aliases":
                return _tags((value,), limits)
    return ()


def parse_maltrail(text: str, source: str, *, filename: str = "",
                   limits: FeedLimits = FeedLimits()) -> ParseResult:
    """A maltrail static trail file (``trails/static/malware/<name>.txt``).

    The threat is the file name with ``_`` as space, as maltrail names it; without a file name,
    the first ``# Aliases:`` entry, else ``source``. Aliases become tags. As in maltrail, inline
    ``#`` comments are cut, ``http://host`` is the URL ``host/`` (any path on that host), a
    trailing ``/`` of a longer path is dropped; host-less path trails (``/panel/login.php``)
    cannot be attributed to a host and are skipped.
    """
    aliases = _maltrail_aliases(text, limits)
    stem = Path(filename).stem.replace("_", " ").strip() if filename else ""
    threat = stem or (aliases[0] if aliases else "") or source

    def handle(line: str, out: _Collector) -> None:
        if line.startswith("#"):
            return
        line = _MALTRAIL_COMMENT_RE.sub("", line)
        match = _SCHEME_RE.match(line)
        body = line[match.end():] if match else line
        if match and "/" not in body:
            body += "/"
        if not body:
            return
        if body.startswith("/"):
            out.skip(Skip.PATH_ONLY)
        elif match and match.group(1).lower() not in ("http", "https"):
            out.skip(Skip.UNSUPPORTED_SCHEME)
        elif "/" in body and not _CIDR_RE.fullmatch(body):
            out.add(_url_entry(body.rstrip("/") if body.count("/") > 1 else body), threat, aliases)
        else:
            out.add(_classify(body, limits), threat, aliases)

    return _run(text, source, limits, handle)


# --- abuse.ch CSV exports -------------------------------------------------------------------------

def _column(name: str) -> str:
    return name.strip().strip('"').lower().replace("_", "").replace(" ", "")


def _csv_fields(line: str) -> list[str]:
    try:
        return next(csv.reader((line,), skipinitialspace=True), [])
    except csv.Error:
        return []


@dataclass(frozen=True, slots=True)
class _CsvLayout:
    columns: tuple[str, ...]  # column order when the file carries no header
    required: frozenset[str]  # a line naming all of these is the header


class _CsvRows:
    """Lines of an abuse.ch CSV as dicts; takes the header whether commented, quoted or bare."""

    __slots__ = ("layout", "columns", "data_seen")

    def __init__(self, layout: _CsvLayout) -> None:
        self.layout = layout
        self.columns = layout.columns
        self.data_seen = False  # a bare header comes before the data; after it, only commented ones

    def row(self, line: str, out: _Collector) -> dict[str, str] | None:
        commented = line.startswith("#")
        fields = _csv_fields(line.lstrip("#").strip() if commented else line)
        if (commented or not self.data_seen) and len(fields) >= len(self.layout.required):
            names = [_column(f) for f in fields]
            if self.layout.required.issubset(names):
                self.columns = tuple(names)
                return None
        if commented:
            return None
        if len(fields) != len(self.columns):
            out.skip(Skip.BAD_CSV_ROW)
            return None
        self.data_seen = True
        return dict(zip(self.columns, (f.strip() for f in fields)))


_FEODO = _CsvLayout(("firstseenutc", "dstip", "dstport", "c2status", "lastonline", "malware"),
                    frozenset({"dstip", "dstport"}))
_URLHAUS = _CsvLayout(("id", "dateadded", "url", "urlstatus", "lastonline", "threat", "tags", "urlhauslink",
                       "reporter"), frozenset({"url", "dateadded"}))
_THREATFOX = _CsvLayout(("firstseenutc", "iocid", "iocvalue", "ioctype", "threattype", "fkmalware", "malwarealias",
                         "malwareprintable", "lastseenutc", "confidencelevel", "iscompromised", "reference", "tags",
                         "anonymous", "reporter"), frozenset({"iocvalue", "ioctype"}))


def _csv_parse(text: str, source: str, limits: FeedLimits, layout: _CsvLayout,
               handle_row: Callable[[dict[str, str], _Collector], None]) -> ParseResult:
    rows = _CsvRows(layout)

    def handle(line: str, out: _Collector) -> None:
        row = rows.row(line, out)
        if row is not None:
            handle_row(row, out)

    return _run(text, source, limits, handle)


def parse_feodo_csv(text: str, source: str, *, include_offline: bool = True, block_whole_ip: bool = True,
                    limits: FeedLimits = FeedLimits()) -> ParseResult:
    """Feodo Tracker botnet C2 CSV (``dst_ip``, ``dst_port``, ``c2_status``, ``malware``; the old
    ``DstIP,DstPort`` header too). Every row gives ip:port; online rows also the whole IP."""

    def handle_row(row: dict[str, str], out: _Collector) -> None:
        ip = _parse_ip(row.get("dstip", ""))
        port = _parse_port(row.get("dstport", ""))
        if ip is None or port is None:
            out.skip(Skip.BAD_IP if ip is None else Skip.BAD_PORT)
            return
        online = row.get("c2status", "online").lower() != "offline"
        public = _public(ip, limits)
        if not public or not (online or include_offline):
            out.skip(Skip.OFFLINE if public else Skip.NON_PUBLIC_IP)
            return
        family = row.get("malware", "")
        out.add(_ip_port_entry(ip, port, limits), family)
        if online and block_whole_ip:
            out.add(_ip_entry(ip, limits), family)

    return _csv_parse(text, source, limits, _FEODO, handle_row)


def parse_urlhaus_csv(text: str, source: str, *, limits: FeedLimits = FeedLimits()) -> ParseResult:
    """URLhaus CSV (``id,dateadded,url,url_status,last_online,threat,tags,urlhaus_link,reporter``),
    with the ``#`` banner and commented header or with a bare header. URL -> URL indicator only."""

    def handle_row(row: dict[str, str], out: _Collector) -> None:
        tags = _tags((row.get("tags", ""),), limits)
        out.add(_url_entry(row.get("url", "")), row.get("threat", "") or "malware_download", tags)

    return _csv_parse(text, source, limits, _URLHAUS, handle_row)


def parse_threatfox_csv(text: str, source: str, *, min_confidence: int = 0,
                        limits: FeedLimits = FeedLimits()) -> ParseResult:
    """ThreatFox CSV: ``ip:port``, ``domain`` and ``url`` IOCs; hash IOCs are skipped (no network
    indicator). Threat is ``threat_type`` (``botnet_cc``...); the malware name leads the tags."""

    def handle_row(row: dict[str, str], out: _Collector) -> None:
        ioc_type, value = row.get("ioctype", "").lower(), row.get("iocvalue", "")
        confidence = row.get("confidencelevel", "")
        if "hash" in ioc_type:
            out.skip(Skip.HASH_IOC)
            return
        if min_confidence and not (confidence.isdigit() and int(confidence) >= min_confidence):
            out.skip(Skip.LOW_CONFIDENCE)
            return
        tags = _tags((row.get("malwareprintable", ""), row.get("tags", "")), limits)
        if ioc_type == "ip:port":
            out.add(_threatfox_ip_port(value, limits), row.get("threattype", ""), tags)
        elif ioc_type == "domain":
            out.add(_domain_entry(value), row.get("threattype", ""), tags)
        elif ioc_type == "url":
            out.add(_url_entry(value), row.get("threattype", ""), tags)
        else:
            out.skip(Skip.UNSUPPORTED_IOC_TYPE)

    return _csv_parse(text, source, limits, _THREATFOX, handle_row)


def _threatfox_ip_port(value: str, limits: FeedLimits) -> _Entry | Skip:
    split = _split_host_port(value)
    if isinstance(split, Skip):
        return split
    ip = _parse_ip(split[0])
    if ip is None:
        return Skip.BAD_IP
    return _ip_port_entry(ip, split[1], limits) if split[1] is not None else Skip.BAD_PORT


# --- Adblock Plus / uBlock Origin lists -----------------------------------------------------------

def parse_abp(text: str, source: str, *, threat: str = "malware_download",
              limits: FeedLimits = FeedLimits()) -> ParseResult:
    """ABP/uBO network filters as in the URLhaus filter list: bare IP -> IP, bare host -> DOMAIN,
    ``||host^`` -> DOMAIN, ``||host/path^`` -> URL (ABP semantics, see ``UrlMatch.ABP``). Only the
    options ``all``/``document``/``important``/``popup`` are accepted; exceptions, cosmetic
    filters, regexes and wildcards are skipped and counted."""

    def handle(line: str, out: _Collector) -> None:
        if line[0] in "![":
            return
        reason = _abp_unsupported(line)
        if reason is not None:
            out.skip(reason)
            return
        pattern, options = _abp_split_options(line)
        if options is not None and not {o.strip().lower() for o in options.split(",")} <= _ABP_OPTIONS_OK:
            out.skip(Skip.ABP_OPTIONS)
        elif pattern.startswith("||"):
            out.add(_abp_anchored(pattern[2:], limits), threat)
        elif any(c in pattern for c in "|^*/$"):
            out.skip(Skip.ABP_UNSUPPORTED)
        else:
            _abp_bare(pattern.split(), out, threat, limits)

    return _run(text, source, limits, handle, UrlMatch.ABP)


def _abp_unsupported(line: str) -> Skip | None:
    if line.startswith("@@"):
        return Skip.ABP_EXCEPTION
    if any(marker in line for marker in ("##", "#@#", "#?#", "#$#", "#%#")):
        return Skip.ABP_COSMETIC
    if line.startswith("/"):
        return Skip.ABP_UNSUPPORTED  # regex or path-substring filter
    return None


def _abp_split_options(line: str) -> tuple[str, str | None]:
    pattern, dollar, options = line.rpartition("$")
    if dollar and pattern and _ABP_OPTIONS_RE.fullmatch(options):
        return pattern, options
    return line, None


def _abp_anchored(body: str, limits: FeedLimits) -> _Entry | Skip:
    for end in ("^|", "^", "|"):
        if body.endswith(end):
            body = body[:-len(end)]
            break
    if not body or any(c in body for c in "*^|"):
        return Skip.ABP_WILDCARD
    if "/" in body or "?" in body:
        return _url_entry(body)
    entry = _classify(body, limits)
    if isinstance(entry, _Entry) and entry.kind is IndicatorKind.IP_PORT:
        return _url_entry(body)  # ||1.2.3.4:8080^ is a URL prefix, not a kernel ip:port
    return entry


def _abp_bare(tokens: list[str], out: _Collector, threat: str, limits: FeedLimits) -> None:
    if len(tokens) > 1 and _parse_ip(tokens[0]) is not None:  # uBO reads hosts files too
        for name in tokens[1:]:
            _add_hosts_name(name, out, threat)
        return
    entry = _classify(tokens[0], limits) if len(tokens) == 1 else Skip.BAD_SYNTAX
    if isinstance(entry, _Entry) and entry.kind not in (IndicatorKind.IP, IndicatorKind.DOMAIN):
        entry = Skip.ABP_UNSUPPORTED
    out.add(entry, threat)


# --- format detection and loading -----------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class _Format:
    parser: Callable[..., ParseResult]
    options: frozenset[str]


_FORMATS: Mapping[str, _Format] = {
    "plain": _Format(parse_plain, frozenset({"threat", "limits"})),
    "maltrail": _Format(parse_maltrail, frozenset({"filename", "limits"})),
    "feodo_csv": _Format(parse_feodo_csv, frozenset({"include_offline", "block_whole_ip", "limits"})),
    "urlhaus_csv": _Format(parse_urlhaus_csv, frozenset({"limits"})),
    "threatfox_csv": _Format(parse_threatfox_csv, frozenset({"min_confidence", "limits"})),
    "abp": _Format(parse_abp, frozenset({"threat", "limits"})),
}
FORMATS = tuple(_FORMATS)


def detect_format(name: str, text_head: str) -> str:
    """The parser for a feed, from its file name (or path) and first few KiB: one of ``FORMATS``."""
    head, lname = text_head[:16384].lower(), name.lower()
    is_csv = lname.endswith(".csv")
    if "dst_ip" in head or "dstip" in head or (is_csv and "feodo" in lname):
        return "feodo_csv"
    if "ioc_value" in head or "ioc_type" in head or (is_csv and "threatfox" in lname):
        return "threatfox_csv"
    if "urlhaus_link" in head or "dateadded" in head or (is_csv and "urlhaus" in lname):
        return "urlhaus_csv"
    first = next((line.strip() for line in head.split("\n") if line.strip()), "")
    if first.startswith(("[adblock", "!")) or "\n||" in "\n" + head:
        return "abp"
    if "maltrail" in head or "/trails/" in "/" + lname.replace("\\", "/"):
        return "maltrail"
    return "plain"


def load_feed(path: Path, *, format: str | None = None, source: str | None = None,
              **options: Any) -> ParseResult:
    """Read and parse one feed file; ``options`` go to the parser (e.g. ``include_offline=False``).

    Raises ConfigError for an unreadable or oversized file, an unknown format or option: the
    caller keeps its previous intel then. Bad lines inside the file never raise.
    """
    path = Path(path)
    try:
        with path.open("rb") as fh:
            data = fh.read(MAX_FEED_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read feed: {exc.strerror or exc}", path=str(path)) from exc
    if len(data) > MAX_FEED_BYTES:
        raise ConfigError(f"feed larger than {MAX_FEED_BYTES} bytes", path=str(path))
    text = data.decode("utf-8", "replace")
    fmt = format or detect_format(str(path), text[:16384])
    spec = _FORMATS.get(fmt)
    if spec is None:
        raise ConfigError(f"unknown feed format {fmt!r}, expected one of {', '.join(FORMATS)}",
                          path=str(path), key="format")
    unknown = sorted(set(options) - spec.options)
    if unknown:
        raise ConfigError(f"unknown option(s) {', '.join(unknown)} for format {fmt}", path=str(path))
    if fmt == "maltrail":
        options.setdefault("filename", path.name)
    result = spec.parser(text, source or path.stem, **options)
    log.info("feed %s (%s): %d indicators from %d lines, skipped %s", path, fmt, len(result.indicators),
             result.total_lines, dict(result.skipped) or "none")
    return result


# --- look-up structures ---------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class _Ranges:
    """Nested or disjoint CIDRs flattened to segments: start points, the most specific owner of each."""

    starts: tuple[int, ...]
    owners: tuple[Indicator | None, ...]

    @classmethod
    def build(cls, nets: Iterable[tuple[int, int, Indicator]]) -> _Ranges:
        starts: list[int] = []
        owners: list[Indicator | None] = []

        def mark(pos: int, owner: Indicator | None) -> None:
            if starts and starts[-1] == pos:
                owners[-1] = owner
            elif not owners or owners[-1] is not owner:
                starts.append(pos)
                owners.append(owner)

        stack: list[tuple[int, Indicator]] = []
        for lo, hi, ind in sorted(nets, key=lambda n: (n[0], -n[1])):
            while stack and stack[-1][0] < lo:
                end = stack.pop()[0]
                mark(end + 1, stack[-1][1] if stack else None)
            stack.append((hi, ind))
            mark(lo, ind)
        while stack:
            end = stack.pop()[0]
            mark(end + 1, stack[-1][1] if stack else None)
        return cls(tuple(starts), tuple(owners))

    def find(self, value: int) -> Indicator | None:
        i = bisect.bisect_right(self.starts, value) - 1
        return self.owners[i] if i >= 0 else None


@dataclass(frozen=True, slots=True)
class _HostPaths:
    """The listed paths of one host. A listed path matches where the request path ends or has a
    separator (ABP ``^``: not a letter, digit or ``_ - . %``) right after or right before the cut."""

    lengths: frozenset[int]  # distinct listed path lengths
    longest: int
    paths: Mapping[str, Indicator]

    def find(self, path: str) -> Indicator | None:
        cuts = {len(path)} if len(path) <= self.longest else set()
        for sep in _SEPARATOR_RE.finditer(path, 0, self.longest + 1):  # work bounded by the list
            cuts.add(sep.start())
            cuts.add(sep.start() + 1)
        for n in sorted(cuts & self.lengths, reverse=True):  # the most specific listing first
            hit = self.paths.get(path[:n])
            if hit is not None:
                return hit
        return None


@dataclass(frozen=True, slots=True)
class _UrlTable:
    hosts: Mapping[str, _HostPaths]
    fold_case: bool
    subdomains: bool

    @classmethod
    def build(cls, indicators: Iterable[Indicator], *, abp: bool) -> _UrlTable:
        grouped: dict[str, dict[str, Indicator]] = {}
        for ind in indicators:
            host, slash, rest = ind.value.partition("/")
            path = slash + rest
            grouped.setdefault(host, {}).setdefault(path.lower() if abp else path, ind)
        hosts = {host: _HostPaths(frozenset(len(p) for p in paths), max(len(p) for p in paths), paths)
                 for host, paths in grouped.items()}
        return cls(hosts, fold_case=abp, subdomains=abp)

    def find(self, host: str, path: str) -> Indicator | None:
        if not self.hosts:
            return None
        if self.fold_case:
            path = path.lower()
        for candidate in (_suffixes(host) if self.subdomains else (host,)):
            entry = self.hosts.get(candidate)
            if entry is not None:
                hit = entry.find(path)
                if hit is not None:
                    return hit
        return None


def _suffixes(name: str) -> Iterator[str]:
    """``name`` and each parent domain, skipping parents too long to be listed (> 253 chars)."""
    start = 0
    while len(name) - start > 253:
        dot = name.find(".", start)
        if dot < 0:
            return
        start = dot + 1
    while True:
        yield name[start:]
        dot = name.find(".", start)
        if dot < 0:
            return
        start = dot + 1


def _unmap(number: int) -> tuple[int, int]:
    return (4, number & 0xFFFFFFFF) if number >> 32 == 0xFFFF else (6, number)


def _addr_key(addr: str | bytes) -> tuple[int, int] | None:
    """(family, integer) for an address: text, or packed network-order bytes (4 or 16)."""
    if isinstance(addr, (bytes, bytearray)):
        if len(addr) == 4:
            return 4, int.from_bytes(addr, "big")
        return _unmap(int.from_bytes(addr, "big")) if len(addr) == 16 else None
    try:
        return 4, int.from_bytes(socket.inet_pton(socket.AF_INET, addr), "big")
    except (OSError, ValueError, TypeError):
        pass
    if addr.startswith("[") and addr.endswith("]"):
        addr = addr[1:-1]
    try:
        return _unmap(int.from_bytes(socket.inet_pton(socket.AF_INET6, addr), "big"))
    except (OSError, ValueError, TypeError):
        return None


def _text(value: str | bytes) -> str:
    return value.decode("utf-8", "surrogateescape") if isinstance(value, (bytes, bytearray)) else value


def _request_host(host: str | bytes) -> str:
    """A request's host as URL indicators spell it: lower case, port dropped, IP literals canonical."""
    text = _text(host).strip()
    if text.startswith("[") or text.count(":") > 1:
        ip = _parse_ip(text[1:text.find("]")] if text.startswith("[") else text)
        return _ip_text(ip) if ip is not None else ""
    text = text.partition(":")[0]
    if _IPV4_RE.fullmatch(text):
        try:
            return socket.inet_ntop(socket.AF_INET, socket.inet_pton(socket.AF_INET, text))
        except OSError:
            return text
    if text.isascii():
        return text.rstrip(".").lower()
    return normalize_name(text.encode("utf-8", "surrogateescape"))


# --- the merged intel -----------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class IntelStats:
    indicators: int  # after merging duplicates
    by_kind: dict[str, int]  # after merging
    by_source: dict[str, int]  # as parsed, per feed
    skipped: dict[str, int]  # Skip reason -> count, all feeds
    lines: int
    version: str

    def as_dict(self) -> dict[str, Any]:
        return {"indicators": self.indicators, "by_kind": dict(self.by_kind), "by_source": dict(self.by_source),
                "skipped": dict(self.skipped), "lines": self.lines, "version": self.version}


_Key = tuple[UrlMatch, IndicatorKind, str]


def _combine(group: list[Indicator]) -> Indicator:
    """One indicator listed by several feeds (or rows): all threat names, sources and tags kept."""
    if len(group) == 1:
        return group[0]
    first = group[0]
    threats = ", ".join(sorted({part for ind in group for part in ind.threat.split(", ")}))
    sources = ",".join(sorted({part for ind in group for part in ind.source.split(",")}))
    ports = {ind.port for ind in group}
    tags = tuple(dict.fromkeys(tag for ind in group for tag in ind.tags))[:32]
    return Indicator(first.kind, first.value, threats, sources, first.port if len(ports) == 1 else None, tags)


def _merge(results: Iterable[ParseResult]) -> tuple[dict[_Key, Indicator], IntelStats]:
    groups: dict[_Key, list[Indicator]] = {}
    by_source: Counter[str] = Counter()
    skipped: Counter[str] = Counter()
    lines = 0
    for result in results:
        lines += result.total_lines
        skipped.update(result.skipped)
        for ind in result.indicators:
            mode = result.url_match if ind.kind is IndicatorKind.URL else UrlMatch.EXACT
            groups.setdefault((mode, ind.kind, ind.value), []).append(ind)
            by_source[ind.source] += 1
    merged = {key: _combine(group) for key, group in groups.items()}
    digest = hashlib.sha256()
    for key in sorted(merged, key=lambda k: (k[0].value, k[1].value, k[2])):
        ind = merged[key]
        digest.update(f"{key[0].value}\t{ind.kind.value}\t{ind.value}\t{ind.port}\t{ind.threat}\t"
                      f"{ind.source}\t{','.join(ind.tags)}\n".encode("utf-8", "surrogateescape"))
    by_kind = Counter(key[1].value for key in merged)
    stats = IntelStats(len(merged), {k.value: by_kind.get(k.value, 0) for k in IndicatorKind}, dict(by_source),
                       dict(skipped), lines, digest.hexdigest()[:16])
    return merged, stats


def _ipset_lists(ips: Mapping[int, Mapping[int, Indicator]], nets: list[tuple[int, int, int, str]]
                 ) -> tuple[list[str], list[str]]:
    """``hash:net`` entries per family, minus entries a wider listed CIDR already covers."""
    spans = [(fam, n, n, str(ipaddress.ip_address(n) if fam == 4 else ipaddress.IPv6Address(n)))
             for fam, table in ips.items() for n in table]
    out: dict[int, list[str]] = {4: [], 6: []}
    cover_end: dict[int, int] = {4: -1, 6: -1}
    for fam, lo, hi, text in sorted(spans + nets, key=lambda s: (s[0], s[1], -s[2])):
        if hi <= cover_end[fam]:
            continue
        cover_end[fam] = hi
        out[fam].append(text)
    return out[4], out[6]


@dataclass(frozen=True, slots=True, eq=False)
class ThreatIntel:
    """All feeds merged, with look-ups for the packet path. Immutable: rebuild and swap to update."""

    indicators: tuple[Indicator, ...]
    version: str  # content hash: same feeds content, same version
    _stats: IntelStats = field(repr=False)
    _ips: Mapping[int, Mapping[int, Indicator]] = field(repr=False)  # family -> address -> indicator
    _ip_ports: Mapping[int, Mapping[tuple[int, int], Indicator]] = field(repr=False)
    _nets: Mapping[int, _Ranges] = field(repr=False)
    _domains: Mapping[str, Indicator] = field(repr=False)
    _urls: tuple[_UrlTable, ...] = field(repr=False)
    _ipset: tuple[tuple[str, ...], tuple[str, ...]] = field(repr=False)

    @classmethod
    def build(cls, results: Iterable[ParseResult]) -> ThreatIntel:
        merged, stats = _merge(results)
        ips: dict[int, dict[int, Indicator]] = {4: {}, 6: {}}
        ip_ports: dict[int, dict[tuple[int, int], Indicator]] = {4: {}, 6: {}}
        nets: list[tuple[int, int, int, str]] = []
        net_owners: dict[int, list[tuple[int, int, Indicator]]] = {4: [], 6: []}
        domains: dict[str, Indicator] = {}
        urls: dict[UrlMatch, list[Indicator]] = {UrlMatch.EXACT: [], UrlMatch.ABP: []}
        for (mode, kind, value), ind in merged.items():
            if kind is IndicatorKind.IP:
                ip = ipaddress.ip_address(value)
                ips[ip.version][int(ip)] = ind
            elif kind is IndicatorKind.IP_PORT:
                host, _, port = value.rpartition(":")
                ip = ipaddress.ip_address(host.strip("[]"))
                ip_ports[ip.version][(int(ip), int(port))] = ind
            elif kind is IndicatorKind.CIDR:
                net = ipaddress.ip_network(value)
                lo, hi = int(net.network_address), int(net.broadcast_address)
                nets.append((net.version, lo, hi, value))
                net_owners[net.version].append((lo, hi, ind))
            elif kind is IndicatorKind.DOMAIN:
                domains[value] = ind
            else:
                urls[mode].append(ind)
        ipset = _ipset_lists(ips, nets)
        intel = cls(tuple(merged.values()), stats.version, stats, ips, ip_ports,
                    {fam: _Ranges.build(owners) for fam, owners in net_owners.items()}, domains,
                    (_UrlTable.build(urls[UrlMatch.EXACT], abp=False), _UrlTable.build(urls[UrlMatch.ABP], abp=True)),
                    (tuple(ipset[0]), tuple(ipset[1])))
        log.info("threat intel %s: %d indicators %s from %d lines", intel.version, stats.indicators,
                 stats.by_kind, stats.lines)
        return intel

    def __len__(self) -> int:
        return len(self.indicators)

    def match_ip(self, addr: str | bytes, port: int | None = None) -> Indicator | None:
        """The most specific indicator for an address (text, or packed 4/16 bytes): ip:port (when
        ``port`` is given), then the exact IP, then the narrowest CIDR holding it."""
        key = _addr_key(addr)
        if key is None:
            return None
        family, number = key
        if port is not None:
            hit = self._ip_ports[family].get((number, port))
            if hit is not None:
                return hit
        hit = self._ips[family].get(number)
        return hit if hit is not None else self._nets[family].find(number)

    def match_domain(self, name: str | bytes) -> Indicator | None:
        """The indicator for ``name`` or its nearest listed parent (label-wise: ``notevil.example``
        never matches ``evil.example``)."""
        if isinstance(name, str):
            text = name.rstrip(".").lower() if name.isascii() else normalize_name(name.encode("utf-8", "replace"))
        else:
            text = normalize_name(bytes(name))
        for suffix in _suffixes(text):
            hit = self._domains.get(suffix)
            if hit is not None:
                return hit
        return None

    def match_url(self, host: str | bytes, path: str | bytes) -> Indicator | None:
        """A listed URL that is a prefix (at a separator) of ``host`` + ``path``. Pass the request
        path as sent (not percent-decoded): feeds list URLs as they were seen on the wire."""
        host_text = _request_host(host)
        if not host_text:
            return None
        path_text = _text(path)
        if not path_text.startswith("/"):
            path_text = "/" + path_text
        for table in self._urls:
            hit = table.find(host_text, path_text)
            if hit is not None:
                return hit
        return None

    def ipset_entries(self) -> tuple[list[str], list[str]]:
        """(IPv4, IPv6) entries for ``hash:net`` sets: listed IPs and CIDRs, minus covered ones."""
        return list(self._ipset[0]), list(self._ipset[1])

    def ipset_ip_port_entries(self, protocols: tuple[str, ...] = ("tcp",)) -> tuple[list[str], list[str]]:
        """(IPv4, IPv6) entries for ``hash:ip,port`` sets (``1.2.3.4,tcp:443``), minus addresses the
        ``hash:net`` sets already block whole."""
        out: dict[int, list[str]] = {4: [], 6: []}
        for family, table in self._ip_ports.items():
            for number, port in sorted(table):
                if number in self._ips[family] or self._nets[family].find(number) is not None:
                    continue
                addr = ipaddress.ip_address(number) if family == 4 else ipaddress.IPv6Address(number)
                out[family].extend(f"{addr},{proto}:{port}" for proto in protocols)
        return out[4], out[6]

    def stats(self) -> IntelStats:
        return self._stats
