"""Rule text lexing: splitting a rule into header and ``key:value;`` options, and decoding values (content strings, integers)."""
from __future__ import annotations

import logging
import re
from typing import NamedTuple

from filters.ips.rule import IntMatch, IntOp

log = logging.getLogger(__name__)

MAX_RULE_CHARS = 1 << 16  # one rule after joining continuation lines
MAX_OPTIONS = 1024  # options in one rule
MAX_CONTENT_BYTES = 1 << 16  # one decoded content string

_ENCODING = "utf-8"
_ERRORS = "surrogateescape"  # rule files are read so that any byte round-trips into content/pcre


class LexError(ValueError):
    """Malformed rule text (the message says what and where)."""


class Option(NamedTuple):
    name: str  # lower-cased keyword
    value: str | None  # raw value text (whitespace-trimmed); None for a keyword without ':'


def split_rule(text: str) -> tuple[list[str], str]:
    """Split ``action proto src sport dir dst dport (options)`` into 7 header fields and the option
    body (between the first ``(`` and the final ``)``)."""
    if len(text) > MAX_RULE_CHARS:
        raise LexError(f"rule longer than {MAX_RULE_CHARS} characters")
    open_at = text.find("(")
    if open_at < 0:
        raise LexError("no '(' starting the rule options")
    body_end = text.rstrip().rfind(")")
    if body_end < open_at or text[body_end + 1 :].strip():
        raise LexError("rule options do not end with ')'")
    header = _split_header(text[:open_at])
    if len(header) != 7:
        raise LexError(f"rule header needs 7 fields (action proto src sport dir dst dport), got {len(header)}")
    return header, text[open_at + 1 : body_end]


def _split_header(text: str) -> list[str]:
    """Whitespace-separated fields; spaces inside ``[...]`` stay in the field."""
    if "[" not in text:
        return text.split()
    fields: list[str] = []
    depth = 0
    cur: list[str] = []
    for ch in text:
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        if ch.isspace() and depth <= 0:
            if cur:
                fields.append("".join(cur))
                cur = []
            continue
        cur.append(ch)
    if cur:
        fields.append("".join(cur))
    return fields


_OPTION_RE = re.compile(r"([^;\\]*(?:\\.[^;\\]*)*);", re.DOTALL)
_KEYWORD_RE = re.compile(r"[a-z0-9_.\-]+")


def split_options(body: str) -> list[Option]:
    """Split the option body on unescaped ``;`` (quotes do not protect ``;``, as in Suricata)."""
    options: list[Option] = []
    end = 0
    for m in _OPTION_RE.finditer(body):
        if m.start() != end:
            break
        end = m.end()
        text = m.group(1).strip()
        if not text:
            continue
        if len(options) >= MAX_OPTIONS:
            raise LexError(f"more than {MAX_OPTIONS} options")
        name, sep, value = text.partition(":")
        name = name.strip().lower()
        if not _KEYWORD_RE.fullmatch(name):
            raise LexError(f"bad option {text[:40]!r}")
        options.append(Option(name, value.strip() if sep else None))
    tail = body[end:].strip()
    if tail:
        raise LexError(f"option {tail[:40]!r} is not terminated by ';'")
    return options


def unquote(value: str, what: str) -> str:
    """Strip surrounding double quotes (required to be balanced when present)."""
    if value.startswith('"'):
        body = value[1:-1]
        escaped_end = (len(body) - len(body.rstrip("\\"))) % 2 == 1
        if len(value) < 2 or not value.endswith('"') or escaped_end:
            raise LexError(f"{what}: unterminated quoted string")
        return body
    return value


def unescape_text(value: str) -> str:
    """msg/metadata-style text: ``\\"``, ``\\;``, ``\\:``, ``\\\\`` lose the backslash, other
    backslashes are kept (Suricata is lenient here)."""
    if "\\" not in value:
        return value
    return re.sub(r'\\([";:\\])', r"\1", value)


def decode_content(value: str, what: str = "content") -> tuple[bytes, bool]:
    """Decode a content value: optional leading ``!``, quotes, ``|hex|`` runs and the escapes
    ``\\" \\; \\: \\\\``. Returns (bytes, negated)."""
    value = value.strip()
    negated = value.startswith("!")
    if negated:
        value = value[1:].strip()
    if not (len(value) >= 2 and value[0] == '"' and value[-1] == '"'):
        raise LexError(f"{what}: expected a quoted string")
    raw = value[1:-1]
    if not raw:
        raise LexError(f"{what}: empty string")
    if "|" not in raw and "\\" not in raw and '"' not in raw:
        out_fast = raw.encode(_ENCODING, _ERRORS)
        if len(out_fast) > MAX_CONTENT_BYTES:
            raise LexError(f"{what}: longer than {MAX_CONTENT_BYTES} bytes")
        return out_fast, negated
    out = bytearray()
    i = 0
    n = len(raw)
    while i < n:
        ch = raw[i]
        if ch == "|":
            end = raw.find("|", i + 1)
            if end < 0:
                raise LexError(f"{what}: unterminated |hex| block")
            out += _hex_block(raw[i + 1 : end], what)
            i = end + 1
            continue
        if ch == "\\":
            if i + 1 >= n or raw[i + 1] not in '";:\\':
                raise LexError(f"{what}: invalid escape '\\{raw[i + 1:i + 2]}'")
            out += raw[i + 1].encode(_ENCODING, _ERRORS)
            i += 2
            continue
        if ch == '"':
            raise LexError(f"{what}: unescaped '\"' inside the string")
        out += ch.encode(_ENCODING, _ERRORS)
        i += 1
    if not out:
        raise LexError(f"{what}: empty string")
    if len(out) > MAX_CONTENT_BYTES:
        raise LexError(f"{what}: longer than {MAX_CONTENT_BYTES} bytes")
    return bytes(out), negated


def _hex_block(text: str, what: str) -> bytes:
    digits = "".join(text.split())
    if len(digits) % 2 or not all(c in "0123456789abcdefABCDEF" for c in digits):
        raise LexError(f"{what}: bad hex block |{text}|")
    return bytes.fromhex(digits)


def to_bytes(text: str) -> bytes:
    """Rule text back to the bytes it was read from."""
    return text.encode(_ENCODING, _ERRORS)


# -- numbers ----------------------------------------------------------------------------------------

_UNITS = {"kb": 1024, "kib": 1024, "mb": 1 << 20, "mib": 1 << 20, "gb": 1 << 30, "gib": 1 << 30}


def parse_int(text: str, what: str, lo: int | None = None, hi: int | None = None) -> int:
    """A decimal or 0x-hex integer, optionally bounded."""
    t = text.strip()
    try:
        value = int(t, 16) if t.lower().startswith(("0x", "-0x")) else int(t, 10)
    except ValueError:
        raise LexError(f"{what}: bad number {text!r}") from None
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise LexError(f"{what}: {value} out of range")
    return value


def _uint(text: str, what: str, hi: int) -> int:
    t = text.strip().lower()
    mult = 1
    for unit, m in _UNITS.items():
        if t.endswith(unit) and t[: -len(unit)].strip():
            t, mult = t[: -len(unit)].strip(), m
            break
    value = parse_int(t, what, 0) * mult
    if value > hi:
        raise LexError(f"{what}: {value} out of range")
    return value


_RANGE_RE = re.compile(r"^\s*(!?)\s*([0-9a-fA-Fx]+[a-zA-Z]*)\s*(?:-|<>)\s*([0-9a-fA-Fx]+[a-zA-Z]*)\s*$")
_MASK_RE = re.compile(r"^\s*&\s*([0-9a-fA-Fx]+)\s*(!?=)\s*([0-9a-fA-Fx]+)\s*$")
_CMP_RE = re.compile(r"^\s*(<=|>=|!=|=|<|>|!)?\s*([0-9a-fA-Fx]+[a-zA-Z]*)\s*$")
_CMP_OPS = {None: IntOp.EQ, "=": IntOp.EQ, "!": IntOp.NE, "!=": IntOp.NE, "<": IntOp.LT, "<=": IntOp.LE,
            ">": IntOp.GT, ">=": IntOp.GE}


def parse_intmatch(text: str, what: str, bits: int = 64) -> IntMatch:
    """Suricata integer-keyword syntax: ``N =N !N !=N <N <=N >N >=N A-B A<>B !A-B &M=V &M!=V``
    (ranges exclusive; hex and kb/mb/gb suffixes accepted)."""
    hi = (1 << bits) - 1
    m = _RANGE_RE.match(text)
    if m:
        a = _uint(m.group(2), what, hi)
        b = _uint(m.group(3), what, hi)
        if a >= b:
            raise LexError(f"{what}: range {text!r} is empty")
        return IntMatch(IntOp.NOT_RANGE if m.group(1) else IntOp.RANGE, a, b)
    m = _MASK_RE.match(text)
    if m:
        op = IntOp.MASK_EQ if m.group(2) == "=" else IntOp.MASK_NE
        return IntMatch(op, _uint(m.group(1), what, hi), _uint(m.group(3), what, hi))
    m = _CMP_RE.match(text)
    if not m:
        raise LexError(f"{what}: bad integer test {text!r}")
    return IntMatch(_CMP_OPS[m.group(1)], _uint(m.group(2), what, hi))


def split_args(value: str | None) -> list[str]:
    """Comma-separated arguments, trimmed (empty value -> [])."""
    if value is None or not value.strip():
        return []
    return [a.strip() for a in value.split(",")]
