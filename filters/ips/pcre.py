"""Rule ``pcre`` values: parsing ``"/regex/flags"`` and compiling them with PCRE2, every match bounded.

The regex runs on PCRE2 itself (the ``pcre2`` binding, JIT-compiled), as in Suricata: the same
syntax and semantics, options from the modifier letters (``i s m x`` as usual, ``A`` anchored,
``E`` PCRE2_DOLLAR_ENDONLY, ``G`` PCRE2_UNGREEDY). Only hex escapes are rewritten before
compiling (the binding turns on PCRE2_ALT_BSUX, under which ``\\x{41}`` or ``\\x4`` would not
mean what Perl and Suricata read): every ``\\x`` escape becomes its two-digit form.

Every match is bounded. The pattern is compiled with ``(*LIMIT_MATCH=...)`` (and the depth and
heap limits) in front of it: Suricata's ``pcre.match-limit`` 3500 and ``match-limit-recursion``
1500 (the ``O`` modifier, which lifts Suricata's limits, cannot lift these). A rule that sets its
own start-of-pattern limits keeps the lower of the two. A match that runs into a limit raises
``RegexLimit``: the caller treats it as no match and counts it (see
``filters.ips.buffer_match`` and the engine's ``pcre.limit_hits`` counters).
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

import pcre2

log = logging.getLogger(__name__)

MAX_PATTERN_CHARS = 1 << 14  # one regex source
MATCH_LIMIT = 3500  # Suricata's pcre.match-limit default (backtracking steps per match)
DEPTH_LIMIT = 1500  # Suricata's pcre.match-limit-recursion default (backtracking depth)
HEAP_LIMIT_KIB = 4096  # heap for the interpreter's backtracking frames (PCRE2's default is 20 MiB)

# Modifier letter -> canonical buffer (Suricata's pcre buffer modifiers).
BUFFER_FLAGS = {
    "U": "http.uri",
    "I": "http.uri.raw",
    "P": "http.request_body",
    "Q": "file.data",  # Suricata: http_server_body / http.response_body are the file_data buffer
    "H": "http.header",
    "D": "http.header.raw",
    "M": "http.method",
    "C": "http.cookie",
    "S": "http.stat_code",
    "Y": "http.stat_msg",
    "V": "http.user_agent",
    "W": "http.host",
    "Z": "http.host.raw",
}
MATCH_FLAGS = frozenset("ismxAEGROB")

# PCRE2 compile options (pcre2.h)
_CASELESS = 0x00000008
_DOLLAR_ENDONLY = 0x00000010
_DOTALL = 0x00000020
_EXTENDED = 0x00000080
_MULTILINE = 0x00000400
_UNGREEDY = 0x00040000
_OPTION_BITS = {"i": _CASELESS, "s": _DOTALL, "m": _MULTILINE, "x": _EXTENDED, "E": _DOLLAR_ENDONLY, "G": _UNGREEDY}

# pcre2_match() results that mean "a resource limit stopped the match" (pcre2.h)
_LIMIT_ERRORS = {
    -46: "JIT stack limit",
    -47: "match limit",
    -48: "no memory",
    -53: "depth limit",
    -63: "heap limit",
}
_START_ITEM = re.compile(r"\(\*([A-Z_]+)(?:=(\d+))?\)")
_RULE_LIMITS = {"LIMIT_MATCH": "match", "LIMIT_DEPTH": "depth", "LIMIT_RECURSION": "depth", "LIMIT_HEAP": "heap"}


class PcreError(ValueError):
    """The pcre value is malformed (``unsupported`` False) or uses what this build cannot run
    (``unsupported`` True)."""

    def __init__(self, reason: str, unsupported: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.unsupported = unsupported


class RegexLimit(Exception):
    """A match ran into a PCRE2 resource limit (or failed inside PCRE2): it counts as no match."""

    def __init__(self, code: int, what: str) -> None:
        super().__init__(what)
        self.code = code
        self.what = what

    @property
    def is_limit(self) -> bool:
        """True for a resource limit (match steps, depth, heap, JIT stack), False for another error."""
        return self.code in _LIMIT_ERRORS


class Regex:
    """A compiled, bounded PCRE2 pattern: ``search``/``match`` like ``re``, raising ``RegexLimit``."""

    __slots__ = ("source", "_p")

    def __init__(self, source: bytes, compiled: Any) -> None:
        self.source = source  # what PCRE2 compiled, limits included
        self._p = compiled

    def search(self, subject: bytes, pos: int = 0) -> Any:
        try:
            return self._p.search(subject, pos)
        except pcre2.LibraryError as exc:
            raise RegexLimit(exc.code, _LIMIT_ERRORS.get(exc.code, str(exc))) from None

    def match(self, subject: bytes, pos: int = 0) -> Any:
        try:
            return self._p.match(subject, pos)
        except pcre2.LibraryError as exc:
            raise RegexLimit(exc.code, _LIMIT_ERRORS.get(exc.code, str(exc))) from None

    def __repr__(self) -> str:
        return f"Regex({self.source!r})"


@dataclass(frozen=True, slots=True)
class ParsedPcre:
    source: str  # "/regex/flags" as written
    pattern: str
    flags: str
    negated: bool
    buffer: str | None  # from a buffer modifier letter, if any
    regex: Regex


def parse_pcre(value: str) -> ParsedPcre:
    """Parse a pcre option value (``[!]"/re/flags"`` or unquoted ``/re/flags``) and compile it."""
    text = value.strip()
    negated = text.startswith("!")
    if negated:
        text = text[1:].strip()
    if text.startswith('"'):
        if len(text) < 2 or not text.endswith('"'):
            raise PcreError("pcre: unterminated quoted string", False)
        text = text[1:-1]
    last = text.rfind("/")
    if not text.startswith("/") or last <= 0:
        raise PcreError("pcre: expected /regex/flags", False)
    pattern, flags = text[1:last], text[last + 1 :]
    if len(pattern) > MAX_PATTERN_CHARS:
        raise PcreError("pcre: pattern too long", True)
    buffer = None
    for ch in flags:
        if ch in BUFFER_FLAGS:
            if buffer is not None:
                raise PcreError("pcre: more than one buffer modifier", False)
            buffer = BUFFER_FLAGS[ch]
        elif ch not in MATCH_FLAGS:
            raise PcreError(f"pcre: unknown modifier {ch!r}", False)
    if "B" in flags and buffer is not None:
        raise PcreError("pcre: modifier 'B' inconsistent with a buffer modifier", False)
    regex = compile_pcre(pattern, flags)
    return ParsedPcre(text, pattern, flags, negated, buffer, regex)


def compile_pcre(pattern: str, flags: str, *, match_limit: int = MATCH_LIMIT, depth_limit: int = DEPTH_LIMIT,
                 heap_limit_kib: int = HEAP_LIMIT_KIB) -> Regex:
    """Compile with PCRE2 under the match limits; raises PcreError when PCRE2 rejects the pattern."""
    options = 0
    for ch in flags:
        options |= _OPTION_BITS.get(ch, 0)
    body, limits = _start_items(pattern)
    limits = {
        "match": min(match_limit, limits.get("match", match_limit)),
        "depth": min(depth_limit, limits.get("depth", depth_limit)),
        "heap": min(heap_limit_kib, limits.get("heap", heap_limit_kib)),
    }
    text = (f"(*LIMIT_MATCH={limits['match']})(*LIMIT_DEPTH={limits['depth']})(*LIMIT_HEAP={limits['heap']})"
            + _hex_escapes(body))
    source = text.encode("utf-8", "surrogateescape")
    try:
        compiled = pcre2.compile(source, options, jit=True)
    except pcre2.PatternError as exc:
        raise PcreError(f"pcre: {exc.msg.split('; ', 1)[-1]}", False) from None
    except pcre2.LibraryError:  # JIT not available for this pattern: the interpreter (depth-limited too)
        try:
            compiled = pcre2.compile(source, options, jit=False)
        except pcre2.LibraryError as exc:
            raise PcreError(f"pcre: {exc}", False) from None
    return Regex(source, compiled)


def _start_items(pattern: str) -> tuple[str, dict[str, int]]:
    """Split the rule's own start-of-pattern items: its limits are taken out (kept if lower than
    ours), the others (``(*UTF)``, ``(*CRLF)``...) stay in front of the pattern."""
    pos, keep, limits = 0, [], {}
    while True:
        m = _START_ITEM.match(pattern, pos)
        if m is None:
            break
        kind = _RULE_LIMITS.get(m.group(1))
        if kind is not None and m.group(2) is not None:
            value = int(m.group(2))
            limits[kind] = min(value, limits.get(kind, value))
        else:
            keep.append(m.group(0))
        pos = m.end()
    return "".join(keep) + pattern[pos:], limits


def _hex_escapes(p: str) -> str:
    """Every ``\\x`` escape in its two-digit form (``\\x{41}`` and ``\\x4`` as Perl reads them);
    ``\\Q..\\E`` literals and the rest are kept as written. ``\\u``/``\\U`` are errors, as in
    PCRE2's default syntax."""
    out: list[str] = []
    i, n = 0, len(p)
    quoted = False
    while i < n:
        ch = p[i]
        if quoted:
            if p.startswith("\\E", i):
                quoted = False
                out.append("\\E")
                i += 2
            else:
                out.append(ch)
                i += 1
            continue
        if ch != "\\" or i + 1 >= n:
            out.append(ch)
            i += 1
            continue
        c = p[i + 1]
        if c == "Q":
            quoted = True
            out.append("\\Q")
            i += 2
        elif c == "x":
            i += 2
            if p.startswith("{", i):
                end = p.find("}", i)
                try:
                    value = int(p[i + 1 : end], 16) if end > i + 1 else -1
                except ValueError:
                    value = -1
                if value < 0:
                    raise PcreError("pcre: bad \\x{} escape", False)
                if value > 0xFF:
                    raise PcreError("pcre: character code point value in \\x{} is too large", False)
                i = end + 1
            else:
                j = i
                while j < n and j - i < 2 and p[j] in "0123456789abcdefABCDEF":
                    j += 1
                value = int(p[i:j], 16) if j > i else 0
                i = j
            out.append(f"\\x{value:02x}")
        elif c in "uU":
            raise PcreError(f"pcre: PCRE2 does not support \\{c}", False)
        else:
            out.append(p[i : i + 2])
            i += 2
    return "".join(out)
