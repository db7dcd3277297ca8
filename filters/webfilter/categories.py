"""URL categories from UT1/squidGuard lists: loading, entry normalization and host / host-path look-ups."""
from __future__ import annotations

import enum
import hashlib
import ipaddress
import itertools
import logging
import re
import string
import time
import urllib.parse
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from filters.app.dns import normalize_name

log = logging.getLogger(__name__)

MAX_FILE_BYTES = 256 << 20  # one list file; bigger files are skipped whole (counted)
MAX_LINE = 4096  # characters in one list line or policy entry
MAX_NAME = 253  # characters in a host name (RFC 1035 text form)
MAX_HOST_INPUT = 1024  # characters of an untrusted host looked at (its rightmost part, where the domain is)
MAX_PATH = 4096  # characters of an untrusted request path looked at (its leftmost part)
MAX_EXAMPLE = 80  # characters of an offending line quoted in the log

EMPTY: frozenset[str] = frozenset()

# One list file of a category folder: squidGuard's `domains` / `urls`, or a numbered part of one
# (`domains.0`, `domains.1`, ... as mirrors split files too large for them).
_LIST_FILE = re.compile(r"(domains|urls)(?:\.[0-9]{1,4})?")
_CATEGORY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_NAME = re.compile(r"[a-z0-9_-]{1,63}(?:\.[a-z0-9_-]{1,63})*")
# The loader's fast path: a plain lower-case name that ends in a letter (so it is no IPv4 address)
# and does not start like a hosts-file line glued to its name ("0.0.0.0evil.example": the slow path
# recovers the name).
_FAST_NAME = re.compile(r"(?!(?:0\.0\.0\.0|127\.0\.0\.1)[^.])(?=.{1,253}\Z)[a-z0-9_-]{1,63}(?:\.[a-z0-9_-]{1,63})*(?<=[a-z])")
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_DOTTED_QUAD = re.compile(rf"{_OCTET}(?:\.{_OCTET}){{3}}")  # already canonical IPv4 text
_HOSTS_GLUE = re.compile(r"(?:0\.0\.0\.0|127\.0\.0\.1)[^.]")
_SCHEME = re.compile(r"[a-z][a-z0-9+.-]{0,15}://", re.IGNORECASE)
_WWW = re.compile(r"(?:www|web|ftp)[0-9]*\.(?=[^.]+\.)")  # squidGuard's "stripped URL" host prefix
_SLASHES = re.compile(r"//+")
_SPACE = re.compile(r"\s")
_BOUNDARY = re.compile(r"[/?&;=]")  # where a urls prefix may end inside a longer request path
_OCTAL = frozenset("01234567")
_HEX = frozenset(string.hexdigits)
_LETTERS = frozenset(string.ascii_lowercase)


class ListKind(enum.Enum):
    """The two squidGuard list types of a UT1 category folder."""

    DOMAINS = "domains"  # a name and all its subdomains, or one IP address
    URLS = "urls"  # a host/path prefix on exactly that host (leading "www." ignored)


class EntryError(ValueError):
    """A list line or policy entry that is not a usable domain or host/path prefix."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


@dataclass(frozen=True, slots=True)
class Entry:
    """One normalized list entry: a host (name or IP) and, for a URL prefix, its path."""

    host: str  # lower-case, punycode, no trailing dot; an IP in its canonical text form
    path: str | None = None  # None: domain entry; else a normalized path prefix starting with "/"
    ip: bool = False

    def __str__(self) -> str:
        host = f"[{self.host}]" if self.ip and ":" in self.host else self.host
        return host if self.path is None else host + self.path


@dataclass(frozen=True, slots=True)
class Match:
    """One list entry that matched a look-up, and the categories it carries."""

    entry: str
    categories: frozenset[str]


@dataclass(frozen=True, slots=True)
class _Prefixes:
    """The urls entries of one host: normalized path prefix -> categories."""

    table: Mapping[str, frozenset[str]]
    longest: int


def _ipv4_number(part: str) -> int | None:
    """One part of a WHATWG IPv4 host (decimal, 0x hex or 0-prefixed octal), or None."""
    if part[:2] == "0x":
        digits, base, allowed = part[2:], 16, _HEX
    elif len(part) > 1 and part[0] == "0":
        digits, base, allowed = part[1:], 8, _OCTAL
    else:
        digits, base, allowed = part, 10, None
    if not digits:
        return 0 if base == 16 else None
    if len(digits) > 12 or not digits.isascii():
        return None
    if (allowed is None and not digits.isdigit()) or (allowed is not None and not set(digits) <= allowed):
        return None
    return int(digits, base)


def ipv4_literal(name: str) -> str | None:
    """The dotted-quad form of ``name`` when a browser would read it as an IPv4 address, else None.

    Follows the WHATWG URL IPv4 parser: 1 to 4 parts, each decimal, ``0x`` hex or ``0`` octal,
    the last part filling the remaining bytes ("127.1" is 127.0.0.1, "0x7f000001" too).
    """
    if _DOTTED_QUAD.fullmatch(name):
        return name
    parts = name.split(".")
    if len(parts) > 4:
        return None
    numbers = []
    for part in parts:
        number = _ipv4_number(part) if part else None
        if number is None:
            return None
        numbers.append(number)
    last = numbers.pop()
    if any(n > 255 for n in numbers) or last >= 256 ** (4 - len(numbers)):
        return None
    value = last
    for i, n in enumerate(numbers):
        value += n << (8 * (3 - i))
    return str(ipaddress.IPv4Address(value))


def ipv6_literal(text: str) -> str | None:
    """The canonical form of an IPv6 address (without brackets), the IPv4 one for ::ffff:a.b.c.d; else None."""
    if "%" in text or len(text) > 45:
        return None
    try:
        address = ipaddress.IPv6Address(text)
    except ValueError:
        return None
    mapped = address.ipv4_mapped
    return str(mapped) if mapped is not None else address.compressed


def _host_and_port(host: str) -> tuple[str, bool]:
    """Split an IP literal out of ``host`` (brackets, port): (canonical IP, True), else (name part, False)."""
    if host.startswith("["):
        inside, sep, tail = host[1:].partition("]")
        ip = ipv6_literal(inside) if sep else None
        if ip is None or (tail and not (tail[0] == ":" and (tail[1:].isdigit() or tail == ":"))):
            raise EntryError("bad IPv6 literal")
        return ip, True
    if host.count(":") > 1:
        ip = ipv6_literal(host)
        if ip is None:
            raise EntryError("bad IPv6 literal")
        return ip, True
    name, sep, port = host.partition(":")
    if port and not (port.isascii() and port.isdigit()):
        raise EntryError("bad port")
    return name, False


def canonical_host(host: str) -> tuple[str, bool]:
    """A list entry's host as stored: (lower-case punycode name without trailing dot, False) or (IP, True).

    Accepts a squid-style leading dot (".example.com"), a port and user info (dropped, as
    squidGuard does for urls entries). Raises ``EntryError`` with a short reason otherwise.
    """
    host = host.rpartition("@")[2]
    host, is_ip = _host_and_port(host)
    if is_ip:
        return host, True
    name = host.lower().rstrip(".") if host.isascii() else normalize_name(host.encode("utf-8", "surrogatepass"))
    if name.startswith("."):
        name = name[1:]
    if not name:
        raise EntryError("empty name")
    if name[-1].isdigit():
        ip = ipv4_literal(name)
        if ip is not None:
            return ip, True
    glued = _HOSTS_GLUE.match(name)
    if glued:
        # A hosts-file line that lost its space ("0.0.0.0evil.example"): the list meant the name.
        name = name[glued.end() - 1:]
    if len(name) > MAX_NAME:
        raise EntryError("name too long")
    if not _NAME.fullmatch(name):
        labels = name.split(".")
        if any(len(label) > 63 for label in labels):
            raise EntryError("label too long")
        raise EntryError("empty label" if "" in labels else "bad character in name")
    return name, False


def _remove_dot_segments(path: str) -> str:
    """RFC 3986 5.2.4 on the path part ("/a/./b/../c" -> "/a/c"); the query is kept as it is."""
    head, sep, query = path.partition("?")
    segments = head.split("/")[1:]
    out: list[str] = []
    for i, segment in enumerate(segments):
        if segment in (".", ".."):
            if segment == ".." and out:
                out.pop()
            if i == len(segments) - 1:
                out.append("")
        else:
            out.append(segment)
    return "/" + "/".join(out) + sep + query


def normalize_path(path: str | bytes) -> str:
    """A request path (with query) or a urls entry's path as compared: percent-decoded, lower case,
    repeated slashes collapsed, dot segments removed, fragment dropped, at most ``MAX_PATH`` characters.

    Both sides get the same treatment, so "/B%61d//./x" and a "/bad/x" entry compare equal (squidGuard
    also unescapes and lower-cases URLs and collapses slashes against bypass attempts).
    """
    if isinstance(path, bytes):
        path = path[: MAX_PATH * 3].decode("utf-8", "replace")
    else:
        path = path[: MAX_PATH * 3]
    path = path.partition("#")[0]
    if "%" in path:
        path = urllib.parse.unquote(path)
    path = path.lower()
    if not path.startswith("/"):
        path = "/" + path
    if "//" in path:
        path = _SLASHES.sub("/", path)
    if "/." in path:
        path = _remove_dot_segments(path)
    return path[:MAX_PATH]


def parse_entry(text: str, kind: ListKind | None = None) -> Entry:
    """One list line or policy entry as an ``Entry``; raises ``EntryError`` (reason) when unusable.

    ``kind`` None (policy lists): "example.com" is a domain entry, "example.com/path" a URL prefix.
    ``ListKind.DOMAINS`` refuses a path; ``ListKind.URLS`` makes a bare host the prefix "host/".
    A leading "http://" or "https://" is dropped except in domains files.
    """
    text = text.strip()
    if not text:
        raise EntryError("empty")
    if len(text) > MAX_LINE:
        raise EntryError("line too long")
    if _SPACE.search(text):
        raise EntryError("whitespace inside the entry")
    if "*" in text:
        raise EntryError("wildcard (a domain entry already covers its subdomains)")
    if kind is not ListKind.DOMAINS:
        scheme = _SCHEME.match(text)
        if scheme is not None:
            text = text[scheme.end():]
    host, sep, rest = text.partition("/")
    if sep and kind is ListKind.DOMAINS:
        raise EntryError("path in a domains entry")
    name, is_ip = canonical_host(host)
    if not sep and kind is not ListKind.URLS:
        return Entry(name, None, is_ip)
    return Entry(name, normalize_path("/" + rest), is_ip)


def _quote_line(raw: bytes) -> str:
    return repr(raw[:MAX_EXAMPLE])[2:-1] + ("..." if len(raw) > MAX_EXAMPLE else "")


class _Builder:
    """The mutable tables while entries are added; ``build`` freezes them into a ``CategoryDB``."""

    __slots__ = ("domains", "ips", "urls", "counts", "skipped", "duplicates", "_singles", "_unions")

    def __init__(self) -> None:
        self.domains: dict[str, frozenset[str]] = {}
        self.ips: dict[str, frozenset[str]] = {}
        self.urls: dict[str, dict[str, frozenset[str]]] = {}
        self.counts: dict[str, Counter[str]] = {}
        self.skipped: Counter[str] = Counter()
        self.duplicates = 0
        self._singles: dict[str, frozenset[str]] = {}
        self._unions: dict[tuple[frozenset[str], str], frozenset[str]] = {}

    def category(self, name: str) -> frozenset[str]:
        """The interned one-category set of ``name`` (and its counters)."""
        single = self._singles.get(name)
        if single is None:
            single = self._singles[name] = frozenset((name,))
            self.counts[name] = Counter()
        return single

    def _put(self, table: dict[str, frozenset[str]], key: str, single: frozenset[str], cat: str) -> bool:
        prev = table.get(key)
        if prev is None:
            table[key] = single
        elif cat in prev:
            self.duplicates += 1
            return False
        else:
            union = self._unions.get((prev, cat))
            if union is None:
                union = self._unions[(prev, cat)] = prev | single
            table[key] = union
        return True

    def add_names(self, cat: str, names: list[str]) -> None:
        """Plain names already in canonical form (the loader's fast path): bulk insert of the new ones."""
        single = self.category(cat)
        domains = self.domains
        fresh = dict.fromkeys(names)
        self.duplicates += len(names) - len(fresh)
        added = 0
        for name in [name for name in fresh if name in domains]:
            del fresh[name]
            added += self._put(domains, name, single, cat)
        domains.update(dict.fromkeys(fresh, single))
        self.counts[cat][ListKind.DOMAINS.value] += added + len(fresh)

    def add(self, cat: str, entry: Entry) -> None:
        single = self.category(cat)
        if entry.path is not None:
            added = self._put(self.urls.setdefault(entry.host, {}), entry.path, single, cat)
            kind = ListKind.URLS
        else:
            added = self._put(self.ips if entry.ip else self.domains, entry.host, single, cat)
            kind = ListKind.DOMAINS
        self.counts[cat][kind.value] += added

    def version(self) -> str:
        """A content hash of the normalized entries, independent of file order, duplicates and formatting."""
        labels: dict[frozenset[str], str] = {}
        lines: list[str] = []
        for prefix, table in (("d", self.domains), ("i", self.ips)):
            for key, cats in table.items():
                label = labels.get(cats)
                if label is None:
                    label = labels[cats] = ",".join(sorted(cats))
                lines.append(f"{prefix} {key} {label}")
        for host, paths in self.urls.items():
            lines.extend(f"u {host}{path} {','.join(sorted(cats))}" for path, cats in paths.items())
        lines.sort()
        return hashlib.sha256("\n".join(lines).encode("utf-8", "surrogatepass")).hexdigest()[:16]

    def build(self, info: dict[str, Any]) -> CategoryDB:
        urls = {host: _Prefixes(paths, max(map(len, paths))) for host, paths in self.urls.items()}
        info["entries"] = {cat: {kind.value: c[kind.value] for kind in ListKind} for cat, c in sorted(self.counts.items())}
        info["skipped"] = dict(self.skipped)
        info["duplicates"] = self.duplicates
        return CategoryDB(self.domains, self.ips, urls, frozenset(self.counts), self.version(), info)


def _read_list(path: Path, builder: _Builder) -> bytes | None:
    """A list file's bytes, or None (counted and logged) when it is unreadable or too large."""
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            builder.skipped["file too large"] += 1
            log.error("%s: %d bytes, over the %d-byte limit; file skipped", path, size, MAX_FILE_BYTES)
            return None
        with path.open("rb") as f:
            return f.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        builder.skipped["unreadable file"] += 1
        log.error("%s: cannot read (%s); file skipped", path, exc.strerror or exc)
        return None


def _split_plain_names(data: bytes, kind: ListKind) -> tuple[list[str], list[bytes]]:
    """The loader's fast path: (plain names already canonical, every other raw line) of a list file."""
    if kind is not ListKind.DOMAINS:
        return [], data.splitlines()
    text = data.decode("utf-8", "surrogateescape").lower()  # undecodable bytes survive the round trip
    if "\r" in text:
        text = text.replace("\r\n", "\n")
    lines = text.split("\n")
    plain = list(map(_FAST_NAME.fullmatch, lines))
    names = list(itertools.compress(lines, plain))
    if len(names) == len(lines):
        return names, []
    return names, [line.encode("utf-8", "surrogateescape") for line, ok in zip(lines, plain) if ok is None]


def _load_file(builder: _Builder, cat: str, kind: ListKind, path: Path) -> None:
    """Add one list file; odd lines are skipped, counted by reason and summarized in one log line."""
    data = _read_list(path, builder)
    if data is None:
        return
    builder.category(cat)
    names, others = _split_plain_names(data, kind)
    builder.add_names(cat, names)
    reasons: Counter[str] = Counter()
    examples: dict[str, bytes] = {}
    for raw in others:
        line = raw.strip()
        if not line or line[0] == 0x23:  # blank or "#" comment: not an entry, not counted
            continue
        try:
            text = line.decode("ascii") if line.isascii() else line.decode("utf-8")
            if len(text) > MAX_LINE:
                raise EntryError("line too long")
            builder.add(cat, parse_entry(text, kind))
        except UnicodeDecodeError:
            reasons["not UTF-8"] += 1
            examples.setdefault("not UTF-8", raw)
        except EntryError as exc:
            reasons[exc.reason] += 1
            examples.setdefault(exc.reason, raw)
    if reasons:
        builder.skipped.update(reasons)
        summary = "; ".join(f"{r}: {n} (e.g. '{_quote_line(examples[r])}')" for r, n in reasons.most_common())
        log.warning("%s: skipped %d lines: %s", path, sum(reasons.values()), summary)


def _list_files(folder: Path, wanted: set[str] | None) -> list[tuple[str, ListKind, Path]]:
    """(category, kind, file) for every list file under ``folder``, sorted; odd names are logged."""
    found: list[tuple[str, ListKind, Path]] = []
    for sub in sorted(folder.iterdir()):
        if sub.name.startswith(".") or not sub.is_dir():
            continue
        if not _CATEGORY.fullmatch(sub.name):
            log.warning("%s: not a category name; folder skipped", sub)
            continue
        if wanted is not None and sub.name not in wanted:
            continue
        try:
            files = sorted(sub.iterdir())
        except OSError as exc:
            log.error("%s: cannot list (%s); category skipped", sub, exc.strerror or exc)
            continue
        for file in files:
            match = _LIST_FILE.fullmatch(file.name)
            if match is not None:
                found.append((sub.name, ListKind(match.group(1)), file))
    return found


@dataclass(frozen=True, slots=True, eq=False)
class CategoryDB:
    """Host and URL-prefix categories, immutable once built (``load`` or ``from_entries``).

    Domain entries match the name and every subdomain (label-wise: ``evil.example`` never matches
    ``notevil.example``); IP entries match only that address; urls entries match their host exactly
    (squidGuard also tries the host without a leading ``www``/``web``/``ftp`` label) and a path prefix
    that ends at a boundary (see ``lookup``).
    """

    _domains: Mapping[str, frozenset[str]] = field(repr=False)
    _ips: Mapping[str, frozenset[str]] = field(repr=False)
    _urls: Mapping[str, _Prefixes] = field(repr=False)
    categories: frozenset[str]
    version: str
    _info: Mapping[str, Any] = field(repr=False)
    _overflow: Counter[str] = field(default_factory=Counter, repr=False)  # capped untrusted input, by kind

    @classmethod
    def load(cls, folder: Path, *, categories: Iterable[str] | None = None) -> CategoryDB:
        """Load every ``<category>/domains`` and ``<category>/urls`` (and numbered parts) under a UT1-layout folder.

        ``categories`` limits the load to those folder names. Bad lines and unreadable files are
        skipped, counted by reason (``stats()["skipped"]``) and logged; a missing ``folder`` raises
        ``FileNotFoundError`` (an empty database would silently let everything through).
        """
        start = time.perf_counter()
        folder = Path(folder)
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: no such category folder")
        wanted = None if categories is None else set(categories)
        builder = _Builder()
        for cat, kind, path in _list_files(folder, wanted):
            _load_file(builder, cat, kind, path)
        missing = sorted((wanted or set()) - set(builder.counts))
        if missing:
            log.warning("%s: requested categories not found: %s", folder, ", ".join(missing))
        info: dict[str, Any] = {"source": str(folder), "missing_categories": missing}
        db = builder.build(info)
        info["load_seconds"] = round(time.perf_counter() - start, 3)
        log.info("loaded %d categories from %s in %.2f s (version %s, %d lines skipped)", len(db.categories), folder,
                 info["load_seconds"], db.version, sum(builder.skipped.values()))
        return db

    @classmethod
    def from_entries(cls, mapping: Mapping[str, Iterable[str]]) -> CategoryDB:
        """A database from ``{category: [entries]}``: "example.com" (domain), "1.2.3.4", "example.com/path" (URL prefix).

        Raises ``EntryError`` for an unusable entry (strict, unlike ``load``).
        """
        start = time.perf_counter()
        builder = _Builder()
        for cat, entries in mapping.items():
            if isinstance(entries, (str, bytes)):
                raise TypeError(f"{cat}: expected an iterable of entries, not a single string")
            builder.category(cat)
            for text in entries:
                builder.add(cat, parse_entry(text))
        info: dict[str, Any] = {"source": "entries", "missing_categories": []}
        db = builder.build(info)
        info["load_seconds"] = round(time.perf_counter() - start, 3)
        return db

    def _name(self, host: str | bytes) -> tuple[str, bool]:
        """The look-up key of an untrusted host: (canonical IP, True) or (name, False); "" when unusable."""
        if len(host) > MAX_HOST_INPUT:  # keep the rightmost labels: they carry the listed domain
            self._overflow["host"] += 1
            host = host[-MAX_HOST_INPUT:]
            host = host[host.find(b"." if isinstance(host, bytes) else ".") + 1:]
        if isinstance(host, bytes):
            name = host.decode("ascii").lower() if host.isascii() else normalize_name(host)
        else:
            name = host.lower() if host.isascii() else normalize_name(host.encode("utf-8", "surrogatepass"))
        if name.endswith("."):
            name = name.rstrip(".")
        if not name:
            return "", False
        if name[0] == "[" or ":" in name:
            try:
                name, is_ip = _host_and_port(name)
            except EntryError:
                return "", False
            if is_ip or not name:
                return name, is_ip
        if name[-1].isdigit():
            ip = ipv4_literal(name)
            if ip is not None:
                return ip, True
        if len(name) > MAX_NAME:
            self._overflow["host"] += 1
            name = name[-MAX_NAME:].partition(".")[2]
        return name, False

    def _domain_matches(self, name: str, is_ip: bool) -> list[tuple[str, frozenset[str]]]:
        if is_ip:
            cats = self._ips.get(name)
            return [(f"[{name}]" if ":" in name else name, cats)] if cats else []
        get = self._domains.get
        hits = [(name, get(name))]
        i = name.find(".")
        while i >= 0:
            suffix = name[i + 1:]
            hits.append((suffix, get(suffix)))
            i = name.find(".", i + 1)
        return [(key, cats) for key, cats in hits if cats]

    def _url_matches(self, name: str, is_ip: bool, path: str | bytes) -> list[tuple[str, frozenset[str]]]:
        if not self._urls or not name:
            return []
        hosts = [name]
        www = None if is_ip else _WWW.match(name)
        if www is not None and ipv4_literal(name[www.end():]) is None:
            hosts.append(name[www.end():])
        listed = [(host, self._urls[host]) for host in hosts if host in self._urls]
        if not listed:  # most hosts have no URL entries: no need to normalize the path
            return []
        if len(path) > MAX_PATH:
            self._overflow["path"] += 1
        norm = normalize_path(path)
        hits: list[tuple[str, frozenset[str]]] = []
        for host, prefixes in listed:
            table, longest = prefixes.table, prefixes.longest
            candidates = [norm] if len(norm) <= longest else []
            for m in _BOUNDARY.finditer(norm, 0, min(len(norm), longest + 1)):
                i = m.start()
                candidates += (norm[:i], norm[: i + 1])
            label = f"[{host}]" if ":" in host else host
            hits.extend((label + c, table[c]) for c in dict.fromkeys(candidates) if c in table)
        return hits

    def lookup(self, host: str | bytes, path: str | bytes = "") -> frozenset[str]:
        """The categories of ``host`` (and of ``host``/``path`` when a path is given).

        Host: the name and each parent domain are looked up exactly (case-insensitive, trailing dot
        ignored, IDN as punycode, a ":port" dropped); an IP literal (v4 in any WHATWG form, v6 in
        brackets) matches only IP entries equal to it. Path (request target with query, for plain
        HTTP): a urls entry matches when it equals the normalized path, ends with one of ``/?&;=``,
        or is followed in the path by one of them ("/ad" matches "/ad", "/ad/x", "/ad?x", not "/admin").
        """
        # Fast path: a short ASCII name ending in a letter (no trailing dot, port or IP literal).
        if host.__class__ is bytes and len(host) <= MAX_NAME and host.isascii():
            host = host.decode("ascii")
        name = host.lower() if host.__class__ is str and len(host) <= MAX_NAME and host.isascii() else ""
        if name[-1:] in _LETTERS and ":" not in name:
            is_ip = False
        else:
            name, is_ip = self._name(host)
        if is_ip:
            cats = self._ips.get(name, EMPTY)
        elif name:
            get = self._domains.get
            cats = get(name, EMPTY)
            i = name.find(".")
            while i >= 0:
                found = get(name[i + 1:])
                if found is not None:
                    cats = found if not cats else cats | found
                i = name.find(".", i + 1)
        else:
            return EMPTY
        if path:
            for _, found in self._url_matches(name, is_ip, path):
                cats = found if not cats else cats | found
        return cats

    def matches(self, host: str | bytes, path: str | bytes = "") -> tuple[Match, ...]:
        """The entries behind ``lookup(host, path)``: the most specific domain first, then URL prefixes."""
        if host.__class__ is bytes and len(host) <= MAX_NAME and host.isascii():
            host = host.decode("ascii")
        name = host.lower() if host.__class__ is str and len(host) <= MAX_NAME and host.isascii() else ""
        if name[-1:] in _LETTERS and ":" not in name:  # the fast path of lookup()
            is_ip = False
        else:
            name, is_ip = self._name(host)
        if not name:
            return ()
        hits = self._domain_matches(name, is_ip)
        if path:
            hits += self._url_matches(name, is_ip, path)
        return tuple(Match(entry, cats) for entry, cats in hits)

    def stats(self) -> dict[str, Any]:
        """Entries per category and kind, load time, skipped lines by reason, capped look-up inputs."""
        info = dict(self._info)
        info["version"] = self.version
        info["categories"] = len(self.categories)
        info["domain_keys"] = len(self._domains)
        info["ip_keys"] = len(self._ips)
        info["url_hosts"] = len(self._urls)
        info["lookup_overflow"] = dict(self._overflow)
        return info
