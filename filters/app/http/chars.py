"""HTTP/1.x bytes as libhtp reads them: request methods, byte classes and line ends."""
from __future__ import annotations

import re

METHODS = frozenset(
    b"GET PUT POST DELETE CONNECT OPTIONS TRACE PATCH PROPFIND PROPPATCH MKCOL COPY MOVE LOCK UNLOCK "
    b"VERSION-CONTROL CHECKOUT UNCHECKOUT CHECKIN UPDATE LABEL REPORT MKWORKSPACE MKACTIVITY "
    b"BASELINE-CONTROL MERGE INVALID HEAD".split()
)
SP = frozenset(b" \t\r\n\x0b\x0c")  # libhtp is_space
SP_NUL = SP | {0}
LWS = frozenset(b" \t")  # nom is_space
FOLD = frozenset(b" \t\x00")  # folding_lws
SEPARATORS = frozenset(b'()<>@,;:\\"/[]?={} \t')
TOKEN = frozenset(c for c in range(32, 127) if c not in SEPARATORS)
HEXDIGITS = frozenset(b"0123456789abcdefABCDEF")
EOL_RESPONSE = re.compile(rb"[\r\n]")
