"""Files seen in traffic: ``FileEvent``s made from complete HTTP bodies (uploads and downloads).

The file is the body the HTTP parser kept (de-chunked, decoded through every Content-Encoding
layer, capped at the body limit; when a file engine asked for more, ``file_depth``, the bytes past
the limit went by as ``FileTail`` chunks and the event has the whole file's size and SHA-256 with
``streamed`` set), except:

- a ``multipart/form-data`` request body (a browser's form upload) is split into its parts: one
  file per part that names a file (Content-Disposition ``filename`` or ``filename*``), as
  Suricata/libhtp do; form fields without a file name are not files;
- a ``206 Partial Content`` response (a range request) is a part of a file only: its FileEvent is
  ``partial`` with the ``Content-Range`` it covers (a ``multipart/byteranges`` response gives one
  partial file per range).

File names are decoded to UTF-8: RFC 2231/5987 ``filename*`` (with continuations), RFC 2047
encoded words, and raw bytes as browsers send them (UTF-8, or Shift_JIS from older Japanese
Windows clients). The type (``magic``) is detected from the bytes (``filters.app.magic``), never
from the name or Content-Type. Mail attachments are later work.
"""
from __future__ import annotations

import email.errors
import email.header
import hashlib
import re
import urllib.parse
from dataclasses import dataclass
from typing import Any

from filters.app.events import FileEvent, HttpEvent
from filters.app.magic import detect
from filters.packet import Side

MAX_PARTS = 256  # parts of one multipart body looked at; the rest are not files (hostile bodies)
_RANGE = re.compile(rb"^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$", re.IGNORECASE)


# -- parameters and file names ------------------------------------------------------------------
def header_params(value: bytes) -> list[tuple[bytes, bytes]]:
    """``name=value`` parameters of a header value such as Content-Disposition or Content-Type
    (the leading type is skipped), names lower-cased, quotes removed.

    A quoted value ends at the first ``"`` followed by ``;`` or the end: a backslash is not an
    escape, as browsers send file names (and Shift_JIS names hold 0x5C as a second byte)."""
    out: list[tuple[bytes, bytes]] = []
    i, n = value.find(b";"), len(value)
    if i < 0:
        return out
    i += 1
    while i < n and len(out) < 64:
        while i < n and value[i] in b" \t;":
            i += 1
        eq = value.find(b"=", i)
        semi = value.find(b";", i)
        if eq < 0 or (0 <= semi < eq):
            if semi < 0:
                break
            i = semi + 1
            continue
        name = value[i:eq].strip().lower()
        j = eq + 1
        while j < n and value[j] in b" \t":
            j += 1
        if j < n and value[j] == 0x22:  # quoted
            k = j + 1
            end = -1
            while True:
                q = value.find(b'"', k)
                if q < 0:
                    break
                rest = value[q + 1:].lstrip(b" \t")
                if not rest or rest.startswith(b";"):
                    end = q
                    break
                k = q + 1
            if end < 0:  # no closing quote: the rest of the value
                out.append((name, value[j + 1:]))
                break
            out.append((name, value[j + 1:end]))
            i = end + 1
        else:
            k = value.find(b";", j)
            k = n if k < 0 else k
            out.append((name, value[j:k].strip()))
            i = k + 1
    return out


def _charset_decode(raw: bytes, charset: str) -> str | None:
    try:
        return raw.decode(charset or "utf-8")
    except (LookupError, UnicodeDecodeError):
        return None


def decode_name(raw: bytes) -> bytes:
    """A file name as sent (raw bytes, maybe RFC 2047 encoded words) as UTF-8 bytes: UTF-8 kept,
    else Shift_JIS (cp932) or EUC-JP decoded, else the bytes as they were."""
    if b"=?" in raw and b"?=" in raw:
        try:
            text = str(email.header.make_header(email.header.decode_header(raw.decode("ascii"))))
            return text.encode("utf-8")
        except (UnicodeError, ValueError, LookupError, email.errors.HeaderParseError):
            pass
    for charset in ("utf-8", "cp932", "euc_jp"):
        text = _charset_decode(raw, charset)
        if text is not None:
            return text.encode("utf-8")
    return raw


def _extended(value: bytes) -> bytes | None:
    """RFC 2231/5987 ``charset'lang'percent-encoded`` as UTF-8 bytes (None when malformed)."""
    parts = value.split(b"'", 2)
    if len(parts) != 3:
        return None
    charset = parts[0].decode("ascii", "replace").strip().lower()
    text = _charset_decode(urllib.parse.unquote_to_bytes(parts[2]), charset)
    return text.encode("utf-8") if text is not None else decode_name(urllib.parse.unquote_to_bytes(parts[2]))


def _basename(name: bytes) -> bytes:
    """Old browsers send the PC's full path (``C:\\Users\\...\\a.exe``): its last segment. Cut on
    the decoded text so a Shift_JIS 0x5C second byte is not taken for a backslash."""
    text = name.decode("utf-8", "surrogateescape")
    text = text.replace("\\", "/").rsplit("/", 1)[-1]
    return text.encode("utf-8", "surrogateescape")


def disposition_filename(value: bytes | None) -> bytes:
    """The file name of a Content-Disposition value, as UTF-8 bytes (b"" when it names none):
    ``filename*`` (RFC 2231, with ``filename*0*=``... continuations) wins over ``filename``."""
    if not value:
        return b""
    params = header_params(value)
    plain, star, pieces = None, None, {}
    for name, val in params:
        if name == b"filename" and plain is None:
            plain = val
        elif name == b"filename*" and star is None:
            star = val
        elif name.startswith(b"filename*"):
            m = re.fullmatch(rb"filename\*(\d{1,3})(\*?)", name)
            if m:
                pieces[int(m.group(1))] = (val, bool(m.group(2)))
    if star is not None:
        decoded = _extended(star)
        if decoded is not None:
            return _basename(decoded)
    if pieces:
        first = pieces.get(0)
        charset, joined = "", b""
        for i in sorted(pieces):
            val, encoded = pieces[i]
            if encoded:
                if i == 0 and first is not None and val.count(b"'") >= 2:
                    cs, _lang, val = val.split(b"'", 2)
                    charset = cs.decode("ascii", "replace").lower()
                joined += urllib.parse.unquote_to_bytes(val)
            else:
                joined += val
        text = _charset_decode(joined, charset) if charset else None
        return _basename(text.encode("utf-8") if text is not None else decode_name(joined))
    if plain is not None:
        return _basename(decode_name(plain))
    return b""


def uri_filename(uri: bytes) -> bytes:
    """The last segment of a URI's path (b"" for a directory)."""
    path = uri.split(b"?", 1)[0].split(b"#", 1)[0]
    return path.rsplit(b"/", 1)[-1]


def lan_addr(flow: Any) -> bytes:
    """The flow's LAN-side address; the client's when neither side is known to be the LAN."""
    if flow.client_side is Side.WAN:
        return flow.server_addr
    return flow.client_addr


# -- multipart ----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Part:
    headers: list[tuple[bytes, bytes]]
    data: bytes
    complete: bool  # its closing delimiter was seen (else the body ended inside it)

    def header(self, name: bytes) -> bytes | None:
        for k, v in self.headers:
            if k == name:
                return v
        return None


def boundary_of(content_type: bytes | None) -> bytes:
    """The ``boundary`` parameter of a multipart Content-Type (b"" when none)."""
    if not content_type:
        return b""
    for name, val in header_params(content_type):
        if name == b"boundary":
            return val[:200]
    return b""


def _line_end(body: bytes, i: int) -> int:
    """Index after the end of the line that starts at or after ``i`` (len(body) when none)."""
    j = body.find(b"\n", i)
    return len(body) if j < 0 else j + 1


def multipart_parts(body: bytes, boundary: bytes) -> list[Part]:
    """The parts of a multipart body (RFC 2046), leniently: LF or CRLF line ends, a preamble and
    transport padding skipped; a body cut before its closing delimiter ends its last part
    incomplete. At most ``MAX_PARTS`` parts."""
    if not boundary:
        return []
    delim = b"--" + boundary
    if body.startswith(delim):
        i = 0
    else:
        i = body.find(b"\n" + delim)
        if i < 0:
            return []
        i += 1
    parts: list[Part] = []
    while len(parts) < MAX_PARTS:
        i += len(delim)
        if body[i:i + 2] == b"--":  # the closing delimiter
            break
        i = _line_end(body, i)
        headers: list[tuple[bytes, bytes]] = []
        while i < len(body):
            j = _line_end(body, i)
            line = body[i:j].rstrip(b"\r\n")
            i = j
            if not line:
                break
            if line[:1] in (b" ", b"\t") and headers:  # folded header line
                k, v = headers[-1]
                headers[-1] = (k, v + b" " + line.strip())
            elif b":" in line:
                k, v = line.split(b":", 1)
                headers.append((k.strip().lower(), v.strip()))
        else:
            if i >= len(body):  # cut inside the headers: no data
                parts.append(Part(headers, b"", False))
                break
        end = body.find(b"\n" + delim, i)
        if end < 0:
            parts.append(Part(headers, body[i:], False))
            break
        stop = end - 1 if end > i and body[end - 1:end] == b"\r" else end
        parts.append(Part(headers, body[i:stop], True))
        i = end + 1
    return parts


def content_range(value: bytes | None) -> tuple[int, int, int | None] | None:
    """``bytes first-last/total`` as (first, last, total or None); None when absent or malformed."""
    m = _RANGE.match(value or b"")
    if not m:
        return None
    first, last = int(m.group(1)), int(m.group(2))
    if last < first:
        return None
    return first, last, int(m.group(3)) if m.group(3) != b"*" else None


# -- files of a transaction ---------------------------------------------------------------------
def _event(flow: Any, tx: Any, upload: bool, name: bytes, data: bytes, truncated: bool, ctype: bytes,
           part: int = 0, parts: int = 1, rng: tuple[int, int, int | None] | None = None,
           partial: bool = False, tail: Any = None) -> FileEvent:
    magic = detect(data)
    if rng is not None and rng[0] > 0:
        magic = ""  # the middle of a file: its type cannot be told from these bytes
    if tail is not None:  # went on past the body limit: the whole file's size and hash
        size, sha256 = tail.size, tail.sha256
    else:
        size, sha256 = len(data), hashlib.sha256(data).hexdigest()
    return FileEvent(
        name=name, data=data, size=size, sha256=sha256, to_server=upload, streamed=tail is not None,
        proto="http2" if tx.protocol == b"HTTP/2" else "http", tx_id=tx.tx_id, tx=tx, lan_addr=lan_addr(flow),
        content_type=ctype, magic=magic, truncated=truncated, part=part, parts=parts,
        partial=partial or rng is not None, range=rng,
    )


def _ctype(value: bytes | None) -> bytes:
    return (value or b"").split(b";", 1)[0].strip().lower()


def http_files(flow: Any, ev: HttpEvent) -> list[FileEvent]:
    """The files of an HTTP message that just completed (``*_done``): none when it has no body,
    one per file part of a multipart form upload, one per range of a partial response."""
    tx, upload = ev.tx, ev.to_server
    data = tx.request_body if upload else tx.response_body
    if not data:
        return []
    if upload:
        truncated = tx.request_body_truncated or tx.request_body_incomplete
        ctype = tx.request_content_type
    else:
        truncated = tx.response_body_truncated or tx.response_body_incomplete
        ctype = tx.response_content_type
    full_ctype = tx.header(b"content-type", response=not upload)
    name = disposition_filename(tx.header(b"content-disposition", response=not upload)) or uri_filename(tx.uri)
    partial = not upload and tx.status_code == b"206"
    if ctype.startswith(b"multipart/") and (upload and ctype == b"multipart/form-data"
                                             or partial and ctype == b"multipart/byteranges"):
        boundary = boundary_of(full_ctype)
        parts = multipart_parts(data, boundary)
        if parts:
            chosen: list[tuple[bytes, Part, Any]] = []
            for p in parts:
                if upload:
                    fname = disposition_filename(p.header(b"content-disposition"))
                    has_name = any(k.startswith(b"filename") for k, _ in header_params(p.header(b"content-disposition") or b""))
                    if has_name and (p.data or fname):
                        chosen.append((fname, p, None))
                else:
                    chosen.append((name, p, content_range(p.header(b"content-range"))))
            out = []
            for idx, (fname, p, rng) in enumerate(chosen):
                cut = truncated and not p.complete
                out.append(_event(flow, tx, upload, fname, p.data, cut, _ctype(p.header(b"content-type")), idx,
                                  len(chosen), rng, partial))
            return out
    rng = content_range(tx.header(b"content-range", response=True)) if partial else None
    tail = tx.request_file if upload else tx.response_file
    if tail is not None and tail.size > len(data):  # past the body limit, up to the file engines' depth
        truncated = tail.cut or (tx.request_body_incomplete if upload else tx.response_body_incomplete)
        return [_event(flow, tx, upload, name, data, truncated, ctype, rng=rng, partial=partial, tail=tail)]
    return [_event(flow, tx, upload, name, data, truncated, ctype, rng=rng, partial=partial)]


def http_file(flow: Any, ev: HttpEvent) -> FileEvent | None:
    """The first file of an HTTP message that just completed (see ``http_files``)."""
    files = http_files(flow, ev)
    return files[0] if files else None
