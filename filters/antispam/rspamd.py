"""rspamd's HTTP protocol, client side: ``/checkv2`` on the scanner worker, ``/learnspam``,
``/learnham`` and ``/fuzzyadd`` on the controller. Standard library only (``http.client``), one
connection per call, so one client serves many threads.

The envelope goes in request headers as rspamd's protocol names them (``From``, one ``Rcpt`` per
recipient, ``Helo``, ``IP``); the answer of ``/checkv2`` is JSON: ``score``, ``required_score``,
``action`` and ``symbols`` (name -> {score, options, description}).
"""
from __future__ import annotations

import http.client
import json
import socket
import urllib.parse
from typing import Any, Iterable, Mapping


class RspamdError(Exception):
    """rspamd could not be asked (down, refused, timed out) or did not answer as its protocol says."""


class _UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP over a unix socket (rspamd's ``bind_socket = "/path/to.sock"``)."""

    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class RspamdClient:
    def __init__(self, url: str, *, timeout: float = 10.0, password: str = "", unix_socket: str = "") -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        self.url = url.rstrip("/")
        self.scheme = parts.scheme
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.prefix = parts.path.rstrip("/")
        self.timeout = timeout
        self.password = password
        self.unix_socket = unix_socket  # when set, the requests go there (the URL names only the path prefix)

    def _post(self, path: str, body: bytes, headers: Iterable[tuple[str, str]]) -> tuple[int, bytes]:
        if self.unix_socket:
            conn: http.client.HTTPConnection = _UnixHTTPConnection(self.unix_socket, self.timeout)
        else:
            cls = http.client.HTTPSConnection if self.scheme == "https" else http.client.HTTPConnection
            conn = cls(self.host, self.port, timeout=self.timeout)
        try:
            conn.putrequest("POST", self.prefix + path, skip_accept_encoding=True)
            for name, value in headers:
                conn.putheader(name, value)
            if self.password:
                conn.putheader("Password", self.password)
            conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body)
            resp = conn.getresponse()
            return resp.status, resp.read()
        except (OSError, http.client.HTTPException) as exc:
            where = f"{self.unix_socket} ({self.url})" if self.unix_socket else self.url
            raise RspamdError(f"rspamd {where}: {type(exc).__name__}: {exc}") from exc
        finally:
            conn.close()

    def check(self, raw: bytes, *, mail_from: str = "", rcpt_to: Iterable[str] = (), helo: str = "",
              client_ip: str = "") -> dict[str, Any]:
        """rspamd's result for one message (``/checkv2``)."""
        headers: list[tuple[str, str]] = []
        if mail_from:
            headers.append(("From", _header_value(mail_from)))
        headers += [("Rcpt", _header_value(r)) for r in rcpt_to if r]
        if helo:
            headers.append(("Helo", _header_value(helo)))
        if client_ip:
            headers.append(("IP", _header_value(client_ip)))
        status, body = self._post("/checkv2", raw, headers)
        if status != 200:
            raise RspamdError(f"rspamd {self.url}/checkv2: HTTP {status}: {body[:200]!r}")
        try:
            out = json.loads(body)
        except ValueError as exc:
            raise RspamdError(f"rspamd {self.url}/checkv2: not JSON: {body[:200]!r}") from exc
        if not isinstance(out, Mapping) or not isinstance(out.get("score"), (int, float)):
            raise RspamdError(f"rspamd {self.url}/checkv2: no score in {body[:200]!r}")
        return dict(out)

    def learn(self, raw: bytes, spam: bool) -> dict[str, Any]:
        """Teach the Bayes classifier (controller ``/learnspam`` or ``/learnham``). A message it
        already learnt as that class is not an error (``{"success": false, "already": true}``), nor
        one its learn condition declines (already classified so with certainty: ``"skipped"``)."""
        status, body = self._post("/learnspam" if spam else "/learnham", raw, ())
        return _controller_answer(self.url, status, body)

    def fuzzy_add(self, raw: bytes, flag: int, weight: float = 10.0) -> dict[str, Any]:
        """Add the message's fuzzy hashes with ``flag`` (controller ``/fuzzyadd``)."""
        status, body = self._post("/fuzzyadd", raw, (("Flag", str(int(flag))), ("Weight", f"{weight:g}")))
        return _controller_answer(self.url, status, body)


def _header_value(v: str) -> str:
    return "".join(c for c in str(v) if c not in "\r\n")[:998]


def _controller_answer(url: str, status: int, body: bytes) -> dict[str, Any]:
    try:
        out = json.loads(body) if body else {}
    except ValueError:
        out = {"raw": body[:200].decode("utf-8", "replace")}
    if status == 200:
        return {"success": True, **(out if isinstance(out, dict) else {})}
    if status == 204:  # the learn condition declined (e.g. Bayes already sure of that class): nothing to do
        return {"success": False, "skipped": True}
    text = str(out.get("error", "")) if isinstance(out, dict) else ""
    if status in (208, 404) and ("already learned" in text.lower() or "already" in text.lower()):
        return {"success": False, "already": True, "error": text}
    raise RspamdError(f"rspamd controller {url}: HTTP {status}: {text or body[:200]!r}")
