"""Payload keyword parsing: content and its modifiers, pcre, byte_*, isdataat, bsize, urilen, base64, sticky buffers and transforms, assembled into BufferSections in Suricata's list order."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import Callable

# Same import list as buffer_match.py: both name the rule types they build / match, one a line.
from filters.ips.rule import (
    BASE64_DATA,
    BUFFERS,
    PKT,
    Base64Decode,
    Bsize,
    BufferSection,
    ByteExtract,
    ByteJump,
    ByteTest,
    ContentMatch,
    Endian,
    FastPattern,
    IsDataAt,
    MatchItem,
    Num,
    PcreMatch,
    Transform,
    UriLen,
)
from filters.ips.pcre import PcreError, parse_pcre
from filters.ips.rule_lexer import LexError, decode_content, parse_int, parse_intmatch, split_args

log = logging.getLogger(__name__)

MAX_ITEMS = 256  # payload items in one rule (the matcher recurses once per item)
MAX_OFFSET = 1 << 20  # offset/depth/distance/within magnitude
MAX_BASE64_BYTES = 1 << 16

# Sticky buffer keyword (and legacy alias) -> canonical buffer name.
STICKY: dict[str, str] = {name: name for name in BUFFERS if name not in (PKT, BASE64_DATA)}
STICKY.update(
    {
        "file_data": "file.data",
        "http_request_line": "http.request_line",
        "http_accept": "http.accept",
        "http_accept_enc": "http.accept_enc",
        "http_accept_lang": "http.accept_lang",
        "http_referer": "http.referer",
        "http_header_names": "http.header_names",
        "http_content_type": "http.content_type",
        "http_content_len": "http.content_len",
        "http_connection": "http.connection",
        "http_start": "http.start",
        "http_protocol": "http.protocol",
        "http_response_line": "http.response_line",
        "http_server": "http.server",
        "http_location": "http.location",
        "http.response_body": "file.data",  # Suricata: the same buffer as file_data
        "tls_sni": "tls.sni",
        "tls_cert_subject": "tls.cert_subject",
        "tls_cert_issuer": "tls.cert_issuer",
        "tls_cert_serial": "tls.cert_serial",
        "tls_cert_fingerprint": "tls.cert_fingerprint",
        "ja3_hash": "ja3.hash",
        "ja3_string": "ja3.string",
        "dns_query": "dns.query",
        "ssh_proto": "ssh.proto",
        "ssh_software": "ssh.software",
    }
)
# Legacy content modifiers: move the preceding content into this buffer.
MODIFIERS: dict[str, str] = {
    "http_uri": "http.uri",
    "http_raw_uri": "http.uri.raw",
    "http_method": "http.method",
    "http_header": "http.header",
    "http_raw_header": "http.header.raw",
    "http_cookie": "http.cookie",
    "http_user_agent": "http.user_agent",
    "http_client_body": "http.request_body",
    "http_server_body": "file.data",
    "http_stat_code": "http.stat_code",
    "http_stat_msg": "http.stat_msg",
    "http_host": "http.host",
    "http_raw_host": "http.host.raw",
}
# Keywords naming a protocol-neutral buffer but implying an app protocol.
KEYWORD_APP = {"http.response_body": "http", "http_server_body": "http"}
TRANSFORMS: dict[str, Transform] = {t.value: t for t in Transform}

Key = tuple[str, tuple[Transform, ...]]  # (buffer, transforms): one Suricata list
_PKT_KEY: Key = (PKT, ())
_B64_KEY: Key = (BASE64_DATA, ())


class PayloadError(ValueError):
    def __init__(self, reason: str, unsupported: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.unsupported = unsupported


# Same fields as rule.ContentMatch: kept apart because this is the mutable builder (modifiers may
# still come, offset unset = None, fp_* as written) and ContentMatch the checked, matched-against result.
@dataclass(slots=True)
class _Content:
    """A content while its modifiers are still arriving."""

    pattern: bytes
    negated: bool
    nocase: bool = False
    offset: Num | None = None
    depth: Num | None = None
    distance: Num | None = None
    within: Num | None = None
    startswith: bool = False
    endswith: bool = False
    fast_pattern: bool = False
    fp_only: bool = False
    fp_chop: tuple[int, int] | None = None
    moved_relative: bool = False  # moved by a legacy modifier while already relative

    @property
    def relative(self) -> bool:
        return self.distance is not None or self.within is not None


@dataclass(slots=True)
class _Item:
    kind: str  # content | pcre | byte_test | byte_jump | byte_extract | isdataat | bsize | urilen | base64
    obj: object
    key: Key
    relative: bool = False
    retry: bool = False


@dataclass
class PayloadBuilder:
    """Collects one rule's payload keywords (see ``apply``) and returns its sections."""

    lists: dict[Key, list[_Item]] = field(default_factory=dict)
    sticky: Key | None = None  # None: Suricata's "list not set" (content goes to pkt)
    last_content: _Item | None = None
    last_payload: _Item | None = None  # last content/pcre/byte_*/isdataat, any list
    last_cp: _Item | None = None  # last content/pcre, any list
    variables: set[str] = field(default_factory=set)
    app_protos: set[str] = field(default_factory=set)
    fast_pattern_seen: bool = False
    count: int = 0

    def handles(self, name: str) -> bool:
        return name in _HANDLERS or name in STICKY or name in MODIFIERS or name in TRANSFORMS

    def apply(self, name: str, value: str | None) -> None:
        """Apply one payload keyword. Raises PayloadError (or LexError for malformed values)."""
        if name in TRANSFORMS:
            self._transform(name, value)
            return
        if name in STICKY:
            self._no_value(name, value)
            self._set_sticky(STICKY[name], KEYWORD_APP.get(name))
        elif name in MODIFIERS:
            self._no_value(name, value)
            self._modifier(name, MODIFIERS[name], KEYWORD_APP.get(name))
        else:
            _HANDLERS[name](self, value or "")

    # -- lists -----------------------------------------------------------------------------------

    @staticmethod
    def _no_value(name: str, value: str | None) -> None:
        if value:
            raise PayloadError(f"{name} takes no value")

    def _set_sticky(self, buffer: str, app: str | None = None) -> None:
        app = app or BUFFERS[buffer].app_proto
        if app:
            self.app_protos.add(app)
        self.sticky = (buffer, ())

    def _transform(self, name: str, value: str | None) -> None:
        """A transform applies to the keywords after it: it opens the list (buffer, transforms +
        this one). Suricata accepts it right after the sticky buffer or later (ET relies on it)."""
        self._no_value(name, value)
        if self.sticky is None or self.sticky[0] == BASE64_DATA:
            raise PayloadError(f"transform {name} must follow a sticky buffer")
        buffer, transforms = self.sticky
        if len(transforms) >= 8:
            raise PayloadError("too many transforms")
        self.sticky = (buffer, transforms + (TRANSFORMS[name],))

    def _append(self, item: _Item) -> _Item:
        self.count += 1
        if self.count > MAX_ITEMS:
            raise PayloadError(f"more than {MAX_ITEMS} payload keywords")
        self.lists.setdefault(item.key, []).append(item)
        if item.kind not in ("bsize", "urilen", "base64"):
            self.last_payload = item
        if item.kind in ("content", "pcre"):
            self.last_cp = item
        return item

    def _relative_key(self, relative: bool) -> Key:
        """The list a non-content keyword goes to (Suricata: the sticky list, else the list of
        the previous payload keyword when relative, else pkt)."""
        if self.sticky is not None:
            return self.sticky
        if relative and self.last_payload is not None:
            return self.last_payload.key
        return _PKT_KEY

    def _modifier(self, name: str, buffer: str, app: str | None = None) -> None:
        if self.sticky is not None:
            raise PayloadError(f"{name} seen with a sticky buffer still set (reset it with pkt_data)")
        item = self._last_content_in(_PKT_KEY)
        if item is None:
            raise PayloadError(f"{name} needs a preceding content")
        app = app or BUFFERS[buffer].app_proto
        if app:
            self.app_protos.add(app)
        self.lists[_PKT_KEY].remove(item)
        item.key = (buffer, ())
        content: _Content = item.obj  # type: ignore[assignment]
        content.moved_relative = content.relative
        self.lists.setdefault(item.key, []).append(item)

    def _last_content_in(self, key: Key) -> _Item | None:
        for item in reversed(self.lists.get(key, ())):
            if item.kind == "content":
                return item
        return None

    def previous_match(self) -> _Item | None:
        """The content/pcre before the last content, in that content's list."""
        if self.last_content is None:
            return None
        found = None
        for item in self.lists.get(self.last_content.key, ()):
            if item is self.last_content:
                return found
            if item.kind in ("content", "pcre"):
                found = item
        return found

    def content_for(self, name: str) -> _Content:
        if self.last_content is None:
            raise PayloadError(f"{name} needs a preceding content")
        return self.last_content.obj  # type: ignore[return-value]

    def resolve_num(self, text: str, what: str, lo: int, hi: int) -> Num:
        """A literal in [lo, hi] or a byte_extract variable defined earlier in the rule."""
        t = text.strip()
        if t and (t[0].isalpha() or t[0] == "_"):
            if t not in self.variables:
                raise PayloadError(f"{what}: unknown byte_extract variable {t!r}")
            return t
        return parse_int(t, what, lo, hi)

    # -- finish --------------------------------------------------------------------------------

    def finish(self) -> tuple[BufferSection, ...]:
        b64_items = self.lists.pop(_B64_KEY, [])
        b64 = None
        if b64_items:
            _set_retry(b64_items)
            b64 = BufferSection(BASE64_DATA, tuple(_freeze(i) for i in b64_items))
        sections: list[BufferSection] = []
        for key, items in self.lists.items():
            if not items:
                continue
            if key == ("http.host", ()):
                _check_host_case(items)
            _set_retry(items)
            frozen = tuple(_freeze(i, b64) for i in items)
            sections.append(BufferSection(key[0], frozen, key[1]))
        if b64 is not None and not any(
            isinstance(it, Base64Decode) for s in sections for it in s.items
        ):
            raise PayloadError("base64_data without base64_decode")
        return tuple(sections)


# -- content and modifiers ------------------------------------------------------------------------


def _content(b: PayloadBuilder, value: str) -> None:
    pattern, negated = decode_content(value)
    c = _Content(pattern, negated)
    key = b.sticky if b.sticky is not None else _PKT_KEY
    b.last_content = b._append(_Item("content", c, key))


def _uricontent(b: PayloadBuilder, value: str) -> None:
    if b.sticky is not None:
        raise PayloadError("uricontent seen with a sticky buffer still set")
    _content(b, value)
    b._modifier("uricontent", "http.uri")


def _nocase(b: PayloadBuilder, value: str) -> None:
    c = b.content_for("nocase")
    if c.nocase:
        raise PayloadError("multiple nocase for the same content")
    c.nocase = True


def _depth(b: PayloadBuilder, value: str) -> None:
    c = b.content_for("depth")
    if c.depth is not None:
        raise PayloadError("multiple depth/startswith for the same content")
    if c.relative:
        raise PayloadError("depth cannot be mixed with distance/within on the same content")
    depth = b.resolve_num(value, "depth", 0, MAX_OFFSET)
    if isinstance(depth, int) and depth < len(c.pattern):
        raise PayloadError(f"depth {depth} is smaller than the content length {len(c.pattern)}")
    c.depth = depth


def _offset(b: PayloadBuilder, value: str) -> None:
    c = b.content_for("offset")
    if c.offset is not None:
        raise PayloadError("multiple offset for the same content")
    if c.relative or c.startswith:
        raise PayloadError("offset cannot be mixed with distance/within/startswith")
    c.offset = b.resolve_num(value, "offset", 0, MAX_OFFSET)


def _distance(b: PayloadBuilder, value: str) -> None:
    c = b.content_for("distance")
    if c.distance is not None:
        raise PayloadError("multiple distance for the same content")
    _check_relative(b, c, "distance")
    c.distance = b.resolve_num(value, "distance", -MAX_OFFSET, MAX_OFFSET)


def _within(b: PayloadBuilder, value: str) -> None:
    c = b.content_for("within")
    if c.within is not None:
        raise PayloadError("multiple within for the same content")
    _check_relative(b, c, "within")
    within = b.resolve_num(value, "within", -MAX_OFFSET, MAX_OFFSET)
    if isinstance(within, int) and within < len(c.pattern):
        raise PayloadError(f"within {within} is smaller than the content length {len(c.pattern)}")
    c.within = within


def _check_relative(b: PayloadBuilder, c: _Content, name: str) -> None:
    prev = b.previous_match()
    if prev is not None and prev.kind == "content" and prev.obj.fp_only:  # type: ignore[attr-defined]
        raise PayloadError(f"{name}: the previous content has fast_pattern:only")
    if c.depth is not None or c.offset is not None or c.startswith:
        raise PayloadError(f"{name} cannot be mixed with depth/offset/startswith on the same content")
    if c.negated and c.fast_pattern:
        raise PayloadError("a relative negated content cannot be the fast_pattern")
    if c.fp_only:
        raise PayloadError("fast_pattern:only content cannot be relative")


def _startswith(b: PayloadBuilder, value: str) -> None:
    c = b.content_for("startswith")
    if c.depth is not None or c.offset is not None or c.relative:
        raise PayloadError("startswith cannot be mixed with depth/offset/distance/within")
    c.startswith = True
    c.offset = 0
    c.depth = len(c.pattern)


def _endswith(b: PayloadBuilder, value: str) -> None:
    b.content_for("endswith").endswith = True


def _fast_pattern(b: PayloadBuilder, value: str) -> None:
    c = b.content_for("fast_pattern")
    if b.fast_pattern_seen:
        raise PayloadError("fast_pattern can be set on only one content")
    b.fast_pattern_seen = True
    c.fast_pattern = True
    arg = value.strip()
    if not arg:
        if c.negated and c.relative:
            raise PayloadError("a relative negated content cannot be the fast_pattern")
        return
    if arg == "only":
        if c.negated or c.relative or c.depth is not None or c.offset is not None:
            raise PayloadError("fast_pattern:only cannot be used with negation, depth/offset or distance/within")
        c.fp_only = True
        return
    parts = split_args(arg)
    if len(parts) != 2:
        raise PayloadError(f"fast_pattern: bad argument {arg!r}")
    off = parse_int(parts[0], "fast_pattern offset", 0, 65535)
    length = parse_int(parts[1], "fast_pattern length", 1, 65535)
    if off + length > len(c.pattern):
        raise PayloadError("fast_pattern chop goes past the end of the content")
    c.fp_chop = (off, length)


def _rawbytes(b: PayloadBuilder, value: str) -> None:
    b.content_for("rawbytes")


def _pkt_data(b: PayloadBuilder, value: str) -> None:
    b.sticky = None


def _base64_data(b: PayloadBuilder, value: str) -> None:
    b.sticky = _B64_KEY


# -- pcre ---------------------------------------------------------------------------------------------


def _pcre(b: PayloadBuilder, value: str) -> None:
    try:
        parsed = parse_pcre(value)
    except PcreError as exc:
        raise PayloadError(exc.reason, exc.unsupported) from None
    relative = "R" in parsed.flags
    if parsed.buffer is not None:
        if b.sticky is not None and b.sticky != (parsed.buffer, ()):
            raise PayloadError("pcre buffer modifier conflicts with the active sticky buffer")
        b.app_protos.add("http")
        key: Key = (parsed.buffer, ())
    elif b.sticky is not None:
        key = b.sticky
    else:
        key = _PKT_KEY
    if relative and b.sticky is None and not any(i.kind in ("content", "pcre") for i in b.lists.get(key, ())):
        raise PayloadError("pcre with /R needs a preceding content or pcre in the same buffer")
    pm = PcreMatch(parsed.source, parsed.flags, parsed.regex, parsed.negated, relative, "A" in parsed.flags)
    b._append(_Item("pcre", pm, key, relative))


# -- byte_* / isdataat / bsize / urilen / base64 ----------------------------------------------------


def _number(text: str, what: str) -> int:
    """A byte_test value: decimal, 0x-hex or 0-prefixed octal (strtoull base 0)."""
    t = text.strip().lower()
    try:
        if t.startswith("0x"):
            return int(t, 16)
        if len(t) > 1 and t.startswith("0"):
            return int(t, 8)
        return int(t, 10)
    except ValueError:
        raise LexError(f"{what}: bad number {text!r}") from None


_BASES = {"dec": 10, "hex": 16, "oct": 8}
_ENDIANS = {"big": Endian.BIG, "little": Endian.LITTLE, "dce": Endian.DCE}


@dataclass(slots=True)
class _ByteFlags:
    relative: bool = False
    endian: Endian = Endian.BIG
    string: bool = False
    base: int | None = None
    bitmask: int | None = None
    align: int = 0
    multiplier: int = 1
    post_offset: int = 0
    from_beginning: bool = False
    from_end: bool = False


def _byte_flags(args: list[str], what: str, allowed: frozenset[str]) -> _ByteFlags:
    f = _ByteFlags()
    for arg in args:
        word, _, rest = arg.partition(" ")
        word = word.lower()
        if word not in allowed:
            raise PayloadError(f"{what}: unknown option {arg!r}")
        if word == "relative":
            f.relative = True
        elif word in _ENDIANS:
            f.endian = _ENDIANS[word]
        elif word == "string":
            f.string = True
        elif word in _BASES:
            f.base = _BASES[word]
        elif word == "bitmask":
            f.bitmask = _number(rest, f"{what} bitmask")
        elif word == "align":
            f.align = parse_int(rest, f"{what} align", 2, 4) if rest.strip() else 4
        elif word == "multiplier":
            f.multiplier = parse_int(rest, f"{what} multiplier", 1, 65535)
        elif word == "post_offset":
            f.post_offset = parse_int(rest, f"{what} post_offset", -65535, 65535)
        elif word == "from_beginning":
            f.from_beginning = True
        elif word == "from_end":
            f.from_end = True
    if f.base is not None and not f.string:
        raise PayloadError(f"{what}: a number base needs 'string'")
    if f.string and f.base is None:
        f.base = 10
    return f


def _nbytes(b: PayloadBuilder, text: str, f: _ByteFlags, what: str) -> Num:
    n = b.resolve_num(text, f"{what} nbytes", 0, 23)
    if isinstance(n, int):
        if f.string and n > 23 or not f.string and not 1 <= n <= 8:
            raise PayloadError(f"{what}: cannot read {n} bytes{' as a string' if f.string else ''}")
    return n


_BT_FLAGS = frozenset({"relative", "big", "little", "dce", "string", "dec", "hex", "oct", "bitmask"})
_BT_OPS = frozenset({"<", ">", "=", "<=", ">=", "&", "^"})


def _byte_test(b: PayloadBuilder, value: str) -> None:
    args = split_args(value)
    if len(args) < 4:
        raise PayloadError("byte_test needs nbytes, operator, value, offset")
    f = _byte_flags(args[4:], "byte_test", _BT_FLAGS)
    op = args[1].replace(" ", "")
    negated = op.startswith("!")
    op = op[1:] if negated else op
    if negated and op == "":
        op = "="
    if op not in _BT_OPS:
        raise PayloadError(f"byte_test: bad operator {args[1]!r}")
    nbytes = _nbytes(b, args[0], f, "byte_test")
    if nbytes == 0 and not f.string:
        raise PayloadError("byte_test: cannot read 0 bytes")
    val = args[2].strip()
    if val[:1].isalpha() or val[:1] == "_":
        value_n: Num = b.resolve_num(val, "byte_test value", 0, 0)
    else:
        value_n = _number(val, "byte_test value")
    offset = b.resolve_num(args[3], "byte_test offset", -65535, 65535)
    bt = ByteTest(nbytes, op, value_n, offset, negated, f.relative, f.endian, f.base if f.string else None, f.bitmask)
    b._append(_Item("byte_test", bt, b._relative_key(f.relative), f.relative))


_BJ_FLAGS = frozenset(
    {"relative", "big", "little", "dce", "string", "dec", "hex", "oct", "bitmask", "align", "multiplier",
     "post_offset", "from_beginning", "from_end"}
)


def _byte_jump(b: PayloadBuilder, value: str) -> None:
    args = split_args(value)
    if len(args) < 2:
        raise PayloadError("byte_jump needs nbytes, offset")
    f = _byte_flags(args[2:], "byte_jump", _BJ_FLAGS)
    if f.from_beginning and f.from_end:
        raise PayloadError("byte_jump: from_beginning and from_end are exclusive")
    nbytes = _nbytes(b, args[0], f, "byte_jump")
    if nbytes == 0:
        raise PayloadError("byte_jump: cannot read 0 bytes")
    offset = b.resolve_num(args[1], "byte_jump offset", -65535, 65535)
    bj = ByteJump(nbytes, offset, f.relative, f.multiplier, f.endian, f.base if f.string else None,
                  bool(f.align), f.from_beginning, f.from_end, f.post_offset, f.bitmask)
    b._append(_Item("byte_jump", bj, b._relative_key(f.relative), f.relative))


_BE_FLAGS = frozenset(
    {"relative", "big", "little", "dce", "string", "dec", "hex", "oct", "bitmask", "align", "multiplier"}
)


def _byte_extract(b: PayloadBuilder, value: str) -> None:
    args = split_args(value)
    if len(args) < 3:
        raise PayloadError("byte_extract needs nbytes, offset, name")
    f = _byte_flags(args[3:], "byte_extract", _BE_FLAGS)
    nbytes = parse_int(args[0], "byte_extract nbytes", 1, 23 if f.string else 8)
    offset = parse_int(args[1], "byte_extract offset", -65535, 65535)
    name = args[2]
    if not name.isidentifier():
        raise PayloadError(f"byte_extract: bad variable name {name!r}")
    be = ByteExtract(nbytes, offset, name, f.relative, f.multiplier, f.endian, f.base if f.string else None,
                     f.align, f.bitmask)
    b.variables.add(name)
    b._append(_Item("byte_extract", be, b._relative_key(f.relative), f.relative))


def _isdataat(b: PayloadBuilder, value: str) -> None:
    args = split_args(value)
    if not args or len(args) > 3:
        raise PayloadError("isdataat: expected [!]N[, relative][, rawbytes]")
    first = args[0]
    negated = first.startswith("!")
    amount = b.resolve_num(first[1:] if negated else first, "isdataat", 0, 65535)
    extra = [a.lower() for a in args[1:]]
    if any(a not in ("relative", "rawbytes") for a in extra):
        raise PayloadError(f"isdataat: unknown option in {value!r}")
    relative = "relative" in extra
    prev = b.last_cp if b.sticky is not None else b.last_payload
    if relative and negated and amount == 1 and prev is not None and prev.kind == "content":
        prev.obj.endswith = True  # type: ignore[attr-defined]  # Suricata's 'ends with' rewrite
        return
    b._append(_Item("isdataat", IsDataAt(amount, relative, negated), b._relative_key(relative), relative))


def _bsize(b: PayloadBuilder, value: str) -> None:
    if b.sticky is None:
        raise PayloadError("bsize needs a sticky buffer")
    b._append(_Item("bsize", Bsize(parse_intmatch(value, "bsize")), b.sticky))


def _urilen(b: PayloadBuilder, value: str) -> None:
    args = split_args(value)
    if not args or len(args) > 2 or (len(args) == 2 and args[1].lower() not in ("raw", "norm")):
        raise PayloadError("urilen: expected N[, raw|norm]")
    raw = len(args) == 2 and args[1].lower() == "raw"
    b.app_protos.add("http")
    ul = UriLen(parse_intmatch(args[0], "urilen", 16), raw)
    b._append(_Item("urilen", ul, ("http.uri.raw" if raw else "http.uri", ())))


def _base64_decode(b: PayloadBuilder, value: str) -> None:
    nbytes: int | None = None
    offset = 0
    relative = False
    for arg in split_args(value):
        word, _, rest = arg.partition(" ")
        if word == "bytes":
            nbytes = parse_int(rest, "base64_decode bytes", 1, MAX_BASE64_BYTES)
        elif word == "offset":
            offset = parse_int(rest, "base64_decode offset", 0, 65535)
        elif word == "relative":
            relative = True
        else:
            raise PayloadError(f"base64_decode: unknown option {arg!r}")
    key = b.sticky if b.sticky is not None else (b.last_cp.key if b.last_cp is not None else _PKT_KEY)
    b._append(_Item("base64", Base64Decode(nbytes, offset, relative), key, relative))


_HANDLERS: dict[str, Callable[[PayloadBuilder, str], None]] = {
    "content": _content,
    "uricontent": _uricontent,
    "nocase": _nocase,
    "depth": _depth,
    "offset": _offset,
    "distance": _distance,
    "within": _within,
    "startswith": _startswith,
    "endswith": _endswith,
    "fast_pattern": _fast_pattern,
    "rawbytes": _rawbytes,
    "pkt_data": _pkt_data,
    "base64_data": _base64_data,
    "pcre": _pcre,
    "byte_test": _byte_test,
    "byte_jump": _byte_jump,
    "byte_extract": _byte_extract,
    "isdataat": _isdataat,
    "bsize": _bsize,
    "urilen": _urilen,
    "base64_decode": _base64_decode,
}


# -- freezing ------------------------------------------------------------------------------------------


def _set_retry(items: list[_Item]) -> None:
    """Suricata's WITHIN_NEXT/RELATIVE_NEXT flags: which content/pcre is searched again when a
    later item of the same list fails."""
    prev: _Item | None = None
    for item in items:
        if prev is not None:
            if item.kind == "content":
                c: _Content = item.obj  # type: ignore[assignment]
                if c.within is not None:
                    prev.retry = True
                elif c.distance is not None and (prev.kind == "pcre" or c.negated or c.moved_relative):
                    prev.retry = True
            elif item.relative:
                prev.retry = True
        if item.kind in ("content", "pcre"):
            prev = item


def _check_host_case(items: list[_Item]) -> None:
    """Suricata rejects case-sensitive uppercase patterns on the (lower-cased) http.host buffer."""
    for item in items:
        c = item.obj
        if item.kind == "content" and not c.nocase and c.pattern != c.pattern.lower():  # type: ignore[attr-defined]
            raise PayloadError("http.host content has uppercase characters; the buffer is lower-cased")


def _freeze(item: _Item, b64: BufferSection | None = None) -> MatchItem:
    if item.kind == "content":
        c: _Content = item.obj  # type: ignore[assignment]
        return ContentMatch(
            c.pattern, c.negated, c.nocase, c.offset if c.offset is not None else 0, c.depth, c.distance,
            c.within, c.startswith, c.endswith, c.fast_pattern, c.fp_only, c.fp_chop, item.retry,
            c.pattern.lower() if c.nocase else c.pattern,
        )
    if item.kind == "pcre":
        return replace(item.obj, retry=item.retry)  # type: ignore[type-var]
    if item.kind == "base64":
        return replace(item.obj, data=b64)  # type: ignore[type-var]
    return item.obj  # type: ignore[return-value]


# -- fast pattern -----------------------------------------------------------------------------------


def pattern_strength(pattern: bytes) -> int:
    """Suricata's PatternStrength: rarer-looking, more varied patterns score higher."""
    seen: set[int] = set()
    score = 0
    for ch in pattern:
        if ch in seen:
            score += 1
            continue
        seen.add(ch)
        if 65 <= ch <= 90 or 97 <= ch <= 122:
            score += 3
        elif 32 <= ch <= 126 or ch in (0x00, 0x01, 0xFF):
            score += 4
        else:
            score += 6
    return score


def select_fast_pattern(sections: tuple[BufferSection, ...]) -> FastPattern | None:
    """The prefilter content, chosen like Suricata's RetrieveFPForSig: an explicit fast_pattern;
    else among non-negated contents of the highest-priority buffers, the longest, then the
    strongest, then the first in rule order. Negated-only rules (and a negated explicit
    fast_pattern) get None: they cannot be prefiltered on presence."""
    candidates: list[tuple[int, int, ContentMatch]] = []
    for si, section in enumerate(sections):
        if not BUFFERS[section.buffer].mpm:
            continue
        for ii, item in enumerate(section.items):
            if not isinstance(item, ContentMatch):
                continue
            if item.fast_pattern:
                return None if item.negated else _fast(sections, si, ii, item, True)
            if not item.negated:
                candidates.append((si, ii, item))
    if not candidates:
        return None
    best_prio = min(BUFFERS[sections[si].buffer].priority for si, _, _ in candidates)
    pool = [c for c in candidates if BUFFERS[sections[c[0]].buffer].priority == best_prio]
    max_len = max(len(c[2].pattern) for c in pool)
    pool = [c for c in pool if len(c[2].pattern) == max_len]
    si, ii, item = max(pool, key=lambda c: pattern_strength(c[2].pattern))  # max keeps the first on ties
    return _fast(sections, si, ii, item, False)


def _fast(sections: tuple[BufferSection, ...], si: int, ii: int, c: ContentMatch, explicit: bool) -> FastPattern:
    section = sections[si]
    pattern = c.pattern
    if c.fast_pattern_chop is not None:
        off, length = c.fast_pattern_chop
        pattern = pattern[off : off + length]
    offset, depth = 0, None
    if not c.relative and c.fast_pattern_chop is None and isinstance(c.offset, int):
        offset = c.offset
        if isinstance(c.depth, int):
            depth = c.offset + c.depth
    return FastPattern(section.buffer, pattern, c.nocase, c.fast_pattern_only, section.transforms, si, ii,
                       explicit, offset, depth)
