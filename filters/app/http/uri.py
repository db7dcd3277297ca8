"""HTTP request URIs: splitting, percent-decoding and path normalization (libhtp's IDS personality), Host values."""
from __future__ import annotations

import re

from filters.app.http.chars import HEXDIGITS

_URI_AUTHORITY = re.compile(  # scheme ":" [["//" [userinfo "@"]] host [":" port]], libhtp-style
    rb"[A-Za-z][A-Za-z0-9+.-]*:(?:(?://(?!/)(?:[^/?#@]*@)?)? *(?P<host>\[[^/?#\]]*\]?|[^/?#:]+)(?::[^/?#]*)?)?")


def _pct_decode(data: bytes, *, path: bool) -> bytes:
    """%XX and %uXXXX decoding; invalid escapes keep their percent sign. Path mode also maps
    backslashes to slashes (IDS personality)."""
    if b"%" not in data and not (path and b"\\" in data):
        return data
    out = bytearray()
    i, n = 0, len(data)
    while i < n:
        c = data[i]
        if c == 0x25:
            h = data[i + 1:i + 3]
            if len(h) == 2 and h[0] in HEXDIGITS and h[1] in HEXDIGITS:
                c = int(h, 16)
                i += 3
            elif data[i + 1:i + 2] in (b"u", b"U") and len(data[i + 2:i + 6]) == 4 and all(
                    x in HEXDIGITS for x in data[i + 2:i + 6]):
                cp = int(data[i + 2:i + 6], 16)
                c = cp if cp < 0x100 else (cp - 0xFEE0 if 0xFF01 <= cp <= 0xFF5E else 0x3F)
                i += 6
            else:
                i += 1
        else:
            i += 1
        if path and c == 0x5C:
            c = 0x2F
        out.append(c)
    return bytes(out)


def _bestfit_utf8(path: bytes) -> bytes:
    """IDS personality: a valid UTF-8 path is mapped to single bytes (fullwidth ASCII to ASCII)."""
    if path.isascii():
        return path
    try:
        text = path.decode("utf-8")
    except UnicodeDecodeError:
        return path
    out = bytearray()
    for ch in text:
        cp = ord(ch)
        out.append(cp if cp < 0x100 else (cp - 0xFEE0 if 0xFF01 <= cp <= 0xFF5E else 0x3F))
    return bytes(out)


def remove_dot_segments(path: bytes) -> bytes:
    """RFC 3986 section 5.2.4."""
    if b"." not in path:
        return path
    absolute = path.startswith(b"/")
    segs = path.split(b"/")
    out: list[bytes] = []
    for i, seg in enumerate(segs):
        last = i == len(segs) - 1
        if seg == b".":
            if last:
                out.append(b"")
            continue
        if seg == b"..":
            if out and not (len(out) == 1 and out[0] == b"" and absolute):
                out.pop()
            if last:
                out.append(b"")
            continue
        out.append(seg)
    result = b"/".join(out)
    if absolute and not result.startswith(b"/"):
        result = b"/" + result
    return result


def normalize_path(raw: bytes) -> bytes:
    """http.uri path: decoded, backslashes and %2f as separators, slashes compressed, dots removed."""
    p = _bestfit_utf8(_pct_decode(raw, path=True))
    while b"//" in p:
        p = p.replace(b"//", b"/")
    return remove_dot_segments(p)


def split_uri(uri: bytes) -> tuple[bytes, bytes, bytes | None, bytes | None]:
    """(authority host, path, query, fragment) as libhtp's parse_uri: a host only after a scheme."""
    host, rest = b"", uri
    m = _URI_AUTHORITY.match(uri) if uri[:1] != b"/" else None
    if m is not None:
        host, rest = (m.group("host") or b"").rstrip(b" "), uri[m.end():]
    frag = query = None
    h = rest.find(b"#")
    if h >= 0:
        rest, frag = rest[:h], rest[h + 1:]
    q = rest.find(b"?")
    if q >= 0:
        rest, query = rest[:q], rest[q + 1:]
    return host, rest, query, frag


def normalize_uri(uri: bytes) -> tuple[bytes, bytes]:
    """(http.uri, host from the URI authority, lowercased) for a request URI."""
    host, path, query, frag = split_uri(uri)
    out = normalize_path(path)
    if query is not None:
        out += b"?" + _pct_decode(query, path=False)
    if frag is not None:
        out += b"#" + _pct_decode(frag, path=False)
    return out, _pct_decode(host, path=False).lower().rstrip(b".")


def host_from_header(value: bytes) -> bytes:
    """http.host from a Host header value: hostname only, lowercased, port stripped."""
    v = value
    if v.startswith(b"//"):
        v = v[2:]
    v = v.lstrip(b" ")
    if v.startswith(b"["):
        end = v.find(b"]")
        host = v[:end + 1] if end >= 0 else v
    else:
        m = re.match(rb"[^/?#:]*", v)
        host = m.group() if m else b""
    return host.rstrip(b" ").lower()


def content_type(value: bytes) -> bytes:
    m = re.match(rb"\s*([^;, ]*)", value)
    return m.group(1).lower() if m else b""
