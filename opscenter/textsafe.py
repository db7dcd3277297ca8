"""Box-supplied text on its way to a terminal or a page: refused on arrival where it must be plain, made
visible on output everywhere (for what is already stored, and for free text such as alarm payloads).

"Unsafe" are the characters a terminal or a browser acts on instead of showing: C0 and C1 controls
(ESC, CSI, BEL, CR, ...), DEL, format characters (bidi overrides, zero-width marks), the line and
paragraph separators and lone surrogates. :func:`clean` shows each as an escape (``\\x1b``,
``\\u202e``), so the operator sees that something odd was sent and nothing is executed.
"""
from __future__ import annotations

import json
import re
import unicodedata
from typing import Annotated, Any

from pydantic import AfterValidator

_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})
# Fast path: printable ASCII needs no look-up.
_PLAIN = re.compile(r"[ -~]*")


def is_unsafe(ch: str) -> bool:
    return unicodedata.category(ch) in _UNSAFE_CATEGORIES


def has_unsafe(text: str) -> bool:
    return not _PLAIN.fullmatch(text) and any(is_unsafe(ch) for ch in text)


def _escape(ch: str) -> str:
    n = ord(ch)
    return f"\\x{n:02x}" if n < 0x100 else f"\\u{n:04x}" if n < 0x10000 else f"\\U{n:08x}"


def clean(value: Any) -> str:
    """``str(value)`` with every unsafe character shown as an escape."""
    text = value if isinstance(value, str) else str(value)
    if _PLAIN.fullmatch(text):
        return text
    return "".join(_escape(ch) if is_unsafe(ch) else ch for ch in text)


def json_text(data: Any, **kw: Any) -> str:
    """JSON for a terminal: non-ASCII text stays readable (Japanese), unsafe characters become ``\\uXXXX``
    escapes (``json.dumps`` escapes C0 itself, but not DEL, C1 such as CSI, or bidi overrides)."""
    text = json.dumps(data, ensure_ascii=False, **kw)
    if _PLAIN.fullmatch(text):
        return text
    # json.dumps has escaped C0 inside strings already, so a raw C0 character here is indentation. Every
    # other unsafe character (DEL and above) can only be inside a string, where \\uXXXX is valid.
    return "".join(_json_escape(ch) if ch >= "\x7f" and is_unsafe(ch) else ch for ch in text)


def _json_escape(ch: str) -> str:
    n = ord(ch)
    if n < 0x10000:
        return f"\\u{n:04x}"
    n -= 0x10000
    return f"\\u{0xD800 + (n >> 10):04x}\\u{0xDC00 + (n & 0x3FF):04x}"


def _plain(value: str) -> str:
    if has_unsafe(value):
        bad = next(ch for ch in value if is_unsafe(ch))
        raise ValueError(f"control or format characters are not allowed (found {_escape(bad)})")
    return value


# A string that must be plain text (serials, host names, versions, names shown in tables).
PlainStr = Annotated[str, AfterValidator(_plain)]


def check_plain(value: str, what: str) -> str:
    """For operator input (contract ids, serials on the command line): ValueError naming ``what``."""
    try:
        return _plain(value)
    except ValueError as exc:
        raise ValueError(f"{what}: {exc}") from None
