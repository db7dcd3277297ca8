"""HTTP/1.x stream parsing for the IPS: one sans-IO ``HttpParser`` per TCP flow, read like libhtp's IDS personality.

Modules, in the order the bytes meet them:

* ``chars``     request methods, byte classes and line ends;
* ``values``    Content-Length, chunk length, status code and protocol parsers;
* ``uri``       URI splitting, percent-decoding and path normalization, Host values;
* ``headers``   header-block grammar and the header list of one message;
* ``decoding``  Content-Encoding layers (gzip, deflate, zlib, lzma) with libhtp's recovery;
* ``body``      one direction's body of a transaction: decoding chain, body limit, bomb caps;
* ``streams``   the per-direction message state machine;
* ``book``      what HTTP/1 and HTTP/2 parsers share: transactions, held bytes, events;
* ``parser``    ``HttpParser``: both directions, transactions, limits and events.
"""
from filters.app.http.book import DEFAULT_BODY_MEMCAP
from filters.app.http.parser import (
    DEFAULT_BODY_LIMIT,
    DEFAULT_DECOMPRESS_LAYERS,
    DEFAULT_DECOMPRESS_RATIO,
    DEFAULT_MAX_DECOMPRESSED,
    DEFAULT_MAX_HEADER_LINE,
    DEFAULT_MAX_HEADER_BYTES,
    DEFAULT_MAX_HEADERS,
    DEFAULT_MAX_PENDING_REQUESTS,
    DEFAULT_MAX_TRANSACTIONS,
    HttpParser,
)
from filters.app.http.uri import normalize_path, normalize_uri, split_uri
from filters.app.http.values import parse_chunk_length, parse_content_length

__all__ = [
    "DEFAULT_BODY_LIMIT",
    "DEFAULT_BODY_MEMCAP",
    "DEFAULT_DECOMPRESS_LAYERS",
    "DEFAULT_DECOMPRESS_RATIO",
    "DEFAULT_MAX_DECOMPRESSED",
    "DEFAULT_MAX_HEADER_LINE",
    "DEFAULT_MAX_HEADER_BYTES",
    "DEFAULT_MAX_HEADERS",
    "DEFAULT_MAX_PENDING_REQUESTS",
    "DEFAULT_MAX_TRANSACTIONS",
    "HttpParser",
    "normalize_path",
    "normalize_uri",
    "parse_chunk_length",
    "parse_content_length",
    "split_uri",
]
