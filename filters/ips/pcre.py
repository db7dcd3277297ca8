"""Rule ``pcre`` values: parsing ``"/regex/flags"`` and translating PCRE syntax to a compiled Python bytes regex."""
from __future__ import annotations

import logging
import re
import warnings
from dataclasses import dataclass

log = logging.getLogger(__name__)

MAX_PATTERN_CHARS = 1 << 14  # one regex source

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

_POSIX = {
    "alpha": "a-zA-Z",
    "digit": "0-9",
    "alnum": "a-zA-Z0-9",
    "upper": "A-Z",
    "lower": "a-z",
    "space": "\\t\\n\\x0b\\x0c\\r ",
    "blank": "\\t ",
    "punct": re.escape("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~").replace("\\ ", " "),
    "xdigit": "0-9A-Fa-f",
    "word": "\\w",
    "cntrl": "\\x00-\\x1f\\x7f",
    "print": "\\x20-\\x7e",
    "graph": "\\x21-\\x7e",
    "ascii": "\\x00-\\x7f",
}
_HSPACE = "\\t \\xa0"
_VSPACE = "\\n\\x0b\\x0c\\r\\x85"
_QUANT_RE = re.compile(r"\{(\d+)(,(\d*))?\}")
_PY_FLAGS = frozenset("imsx")


class PcreError(ValueError):
    """The pcre value is malformed (``unsupported`` False) or uses PCRE syntax Python's ``re``
    cannot express (``unsupported`` True)."""

    def __init__(self, reason: str, unsupported: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.unsupported = unsupported


@dataclass(frozen=True, slots=True)
class ParsedPcre:
    source: str  # "/regex/flags" as written
    pattern: str
    flags: str
    negated: bool
    buffer: str | None  # from a buffer modifier letter, if any
    regex: re.Pattern[bytes]


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


def compile_pcre(pattern: str, flags: str) -> re.Pattern[bytes]:
    """Translate and compile; raises PcreError(unsupported=True) when Python cannot express it."""
    py = _Translator(pattern, flags).run()
    reflags = 0
    if "i" in flags:
        reflags |= re.IGNORECASE
    if "s" in flags:
        reflags |= re.DOTALL
    if "m" in flags:
        reflags |= re.MULTILINE
    if "x" in flags:
        reflags |= re.VERBOSE
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return re.compile(py.encode("utf-8", "surrogateescape"), reflags)
    except (re.error, OverflowError, RecursionError) as exc:
        reason = re.sub(r" at position \d+.*$", "", str(exc).split("\n")[0])
        raise PcreError(f"pcre: {reason}", True) from None


class _Translator:
    """One pass over a PCRE pattern producing Python ``re`` syntax (see module docstring)."""

    def __init__(self, pattern: str, flags: str) -> None:
        self.p = pattern
        self.i = 0
        self.out: list[str] = []
        self.extended = "x" in flags
        self.ungreedy = "G" in flags
        self.dollar_end = "E" in flags and "m" not in flags
        self.scopes: list[list[str]] = [[]]  # per open group: inline-flag scopes opened inside it

    def unsupported(self, what: str) -> PcreError:
        return PcreError(f"pcre: unsupported {what}", True)

    def run(self) -> str:
        p = self.p
        while self.i < len(p):
            ch = p[self.i]
            if ch == "\\":
                self.out.append(self.escape(in_class=False))
            elif ch == "[":
                self.out.append(self.char_class())
            elif ch == "(":
                self.open_group()
            elif ch == ")":
                self.close_group()
            elif ch == "|":
                self.alternation()
            elif ch in "*+?":
                self.i += 1
                self.quantifier(ch)
            elif ch == "{":
                self.brace()
            elif ch == "$":
                self.i += 1
                self.out.append("\\Z" if self.dollar_end else "$")
            elif ch == "#" and self.extended:
                end = p.find("\n", self.i)
                self.i = len(p) if end < 0 else end + 1
            else:
                self.out.append(ch)
                self.i += 1
        if len(self.scopes) > 1:
            raise PcreError("pcre: missing ')'", False)
        self.out.append(")" * len(self.scopes[-1]))
        return "".join(self.out)

    # -- groups --------------------------------------------------------------------------------

    def open_group(self) -> None:
        p, i = self.p, self.i
        if not p.startswith("(?", i):
            self.out.append("(")
            self.i += 1
            self.scopes.append([])
            return
        rest = p[i + 2 : i + 4]
        if rest.startswith("#"):
            end = p.find(")", i)
            if end < 0:
                raise PcreError("pcre: unterminated comment", False)
            self.i = end + 1
            return
        if rest[:1] in (":", "=", "!", ">") or rest in ("<=", "<!"):
            n = 4 if rest in ("<=", "<!") else 3
            self.out.append(p[i : i + n])
            self.i += n
            self.scopes.append([])
            return
        if p.startswith("(?P=", i):
            end = p.find(")", i)
            self.out.append(p[i : end + 1] if end > 0 else p[i:])
            self.i = end + 1 if end > 0 else len(p)
            return
        if rest[:1] in ("<", "'") or p.startswith("(?P<", i):
            self.named_group()
            return
        if rest[:1] == "(":
            self.condition()
            return
        self.flag_group()

    def named_group(self) -> None:
        p, i = self.p, self.i
        start = i + (4 if p.startswith("(?P<", i) else 3)
        close = ">" if p[start - 1] == "<" else "'"
        end = p.find(close, start)
        name = p[start:end] if end > 0 else ""
        if not name.isidentifier():
            raise PcreError("pcre: bad group name", False)
        self.out.append(f"(?P<{name}>")
        self.i = end + 1
        self.scopes.append([])

    def condition(self) -> None:
        p, i = self.p, self.i
        end = p.find(")", i + 3)
        cond = p[i + 3 : end] if end > 0 else ""
        if cond.startswith("<") and cond.endswith(">") or cond.startswith("'") and cond.endswith("'"):
            cond = cond[1:-1]
        if not (cond.isdigit() or cond.isidentifier()) or cond == "R" or cond.startswith("R"):
            raise self.unsupported("conditional group")
        self.out.append(f"(?({cond})")
        self.i = end + 1
        self.scopes.append([])

    def flag_group(self) -> None:
        p, i = self.p, self.i
        j = i + 2
        while j < len(p) and (p[j].isalpha() or p[j] == "-"):
            j += 1
        letters = p[i + 2 : j]
        term = p[j : j + 1]
        if not letters or term not in (":", ")"):
            raise self.unsupported("group construct")
        if any(c not in _PY_FLAGS and c != "-" for c in letters):
            raise self.unsupported(f"inline option (?{letters})")
        if term == ":":
            self.out.append(f"(?{letters}:")
            self.scopes.append([])
        else:  # (?i) switches the option on for the rest of the enclosing group
            self.out.append(f"(?{letters}:")
            self.scopes[-1].append(letters)
        self.i = j + 1

    def close_group(self) -> None:
        if len(self.scopes) == 1:
            raise PcreError("pcre: unmatched ')'", False)
        self.out.append(")" * len(self.scopes.pop()) + ")")
        self.i += 1

    def alternation(self) -> None:
        opened = self.scopes[-1]
        self.out.append(")" * len(opened) + "|" + "".join(f"(?{f}:" for f in opened))
        self.i += 1

    # -- quantifiers -----------------------------------------------------------------------------

    def quantifier(self, q: str) -> None:
        self.out.append(q)
        self.lazy_suffix()

    def brace(self) -> None:
        m = _QUANT_RE.match(self.p, self.i)
        if m is None:
            self.out.append("\\{")
            self.i += 1
            return
        self.out.append(m.group(0))
        self.i = m.end()
        self.lazy_suffix()

    def lazy_suffix(self) -> None:
        """Handle ``?``/``+`` after a quantifier, inverting greediness under /G."""
        nxt = self.p[self.i : self.i + 1]
        if nxt == "+":
            self.out.append("+")
            self.i += 1
        elif nxt == "?":
            self.i += 1
            if not self.ungreedy:
                self.out.append("?")
        elif self.ungreedy:
            self.out.append("?")

    # -- escapes ----------------------------------------------------------------------------------

    def escape(self, in_class: bool) -> str:
        p, i = self.p, self.i
        if i + 1 >= len(p):
            raise PcreError("pcre: trailing backslash", False)
        c = p[i + 1]
        self.i = i + 2
        if c == "x":
            return self.hex_escape()
        if c == "Q":
            end = p.find("\\E", self.i)
            end = len(p) if end < 0 else end
            lit = p[self.i : end]
            self.i = min(len(p), end + 2)
            return "".join("\\" + ch if not ch.isalnum() else ch for ch in lit)
        if c == "E":
            return ""
        simple = _CLASS_ESCAPES if in_class else _ESCAPES
        if c in simple:
            return simple[c]
        if c == "c":
            if self.i >= len(p):
                raise PcreError("pcre: \\c at end of pattern", False)
            ctrl = ord(p[self.i].upper()) ^ 0x40
            self.i += 1
            return f"\\x{ctrl:02x}"
        if c == "o" and p.startswith("{", self.i):
            end = p.find("}", self.i)
            try:
                value = int(p[self.i + 1 : end], 8)
            except ValueError:
                raise PcreError("pcre: bad \\o{} escape", False) from None
            self.i = end + 1
            return self.byte(value)
        if not in_class and c in "gk":
            return self.backref(c)
        if c in "pPXCKGR" or (in_class and c in "HVNR"):
            raise self.unsupported(f"escape \\{c}")
        return "\\" + c

    def hex_escape(self) -> str:
        p = self.p
        if p.startswith("{", self.i):
            end = p.find("}", self.i)
            try:
                value = int(p[self.i + 1 : end], 16)
            except ValueError:
                raise PcreError("pcre: bad \\x{} escape", False) from None
            self.i = end + 1
        else:
            digits = ""
            while len(digits) < 2 and self.i < len(p) and p[self.i] in "0123456789abcdefABCDEF":
                digits += p[self.i]
                self.i += 1
            value = int(digits, 16) if digits else 0
        return self.byte(value)

    def byte(self, value: int) -> str:
        if value > 0xFF:
            raise self.unsupported("code point above \\xff")
        return f"\\x{value:02x}"

    def backref(self, kind: str) -> str:
        p = self.p
        m = re.match(r"\{(-?\w+)\}|<(\w+)>|'(\w+)'|(-?\d+)", p[self.i :])
        if m is None:
            raise self.unsupported(f"escape \\{kind}")
        ref = next(g for g in m.groups() if g is not None)
        self.i += m.end()
        if ref.startswith("-") or (kind == "g" and m.group(2) is not None):
            raise self.unsupported("relative back reference or subroutine call")
        return f"(?:\\{ref})" if ref.isdigit() else f"(?P={ref})"

    def char_class(self) -> str:
        p = self.p
        self.i += 1
        parts = ["["]
        if p.startswith("^", self.i):
            parts.append("^")
            self.i += 1
        if p.startswith("]", self.i):
            parts.append("\\]")
            self.i += 1
        while self.i < len(p):
            ch = p[self.i]
            if ch == "]":
                self.i += 1
                parts.append("]")
                return "".join(parts)
            if ch == "\\":
                parts.append(self.escape(in_class=True))
                continue
            if ch == "[" and p.startswith("[:", self.i):
                parts.append(self.posix_class())
                continue
            parts.append("\\" + ch if ch in "[&~|" else ch)
            self.i += 1
        raise PcreError("pcre: missing terminating ] for character class", False)

    def posix_class(self) -> str:
        p = self.p
        end = p.find(":]", self.i + 2)
        name = p[self.i + 2 : end] if end > 0 else ""
        if name.startswith("^"):
            raise self.unsupported("negated POSIX class")
        if name not in _POSIX:
            raise PcreError(f"pcre: unknown POSIX class {name!r}", False)
        self.i = end + 2
        return _POSIX[name]


_ESCAPES = {
    "z": "\\Z",
    "Z": "(?=\\n?\\Z)",
    "h": f"[{_HSPACE}]",
    "H": f"[^{_HSPACE}]",
    "v": f"[{_VSPACE}]",
    "V": f"[^{_VSPACE}]",
    "R": f"(?:\\r\\n|[{_VSPACE}])",
    "N": "[^\\n]",
    "e": "\\x1b",
    "/": "/",
}
_CLASS_ESCAPES = {"h": _HSPACE, "v": _VSPACE, "e": "\\x1b", "/": "/"}
