"""Sandbox on the box: files that carry code are judged by the center's sandbox before they complete.

Sans-IO. For a download (an HTTP response body; uploads with ``check_uploads``) whose bytes carry
code (filters/sandbox/types.py: PE, ELF, Mach-O, Office with macros, PDF with JavaScript, scripts,
archives holding them), the packet that completes the file is held (``Hold`` with
``IORequest("sandbox_check")``) while the agent asks (agent/link/sandbox.py): the box's verdict
cache (kept on disk across restarts), then the center's verdicts shared by every box, and for an
unknown file a submission and the wait for its verdict. Other flows never wait.

- malicious: blocked like a virus (the block page when nothing of the response reached the PC yet,
  else both sides reset), with an alarm;
- suspicious: an alarm (blocked with ``block_suspicious``);
- clean: passed;
- no verdict within ``hold_timeout`` seconds: passed with an alarm (``hold_until_verdict``: held up
  to ``verdict_wait`` and blocked when no verdict came). When the verdict comes later and is
  malicious, a retro alarm names the LAN host that received the file, so the center can act.

Verdicts are also kept in the engine (per worker) so a known file is decided without a hold. The
antivirus runs first on the same file (its hold comes first; a virus is never submitted).
"""
from __future__ import annotations

import os
import time
from collections import OrderedDict
from typing import Any, ClassVar, Iterable, Literal, Mapping

from pydantic import Field, model_validator

from filters.app.events import FileEvent, HttpEvent
from filters.av.engine import Antivirus, FileData, ScannedFile, block_injects
from filters.engine import (Action, ConfigError, Decision, Engine, EngineConfig, EngineContext, Hold, IORequest,
                            Scope, Verdict)
from filters.sandbox.types import KINDS, code_kind
from filters.webfilter.blocking import BoxName
from filters.webfilter.lookup import AUTH_FILE
from filters.webfilter.page import render_file

SID_MALICIOUS = 9_600_001
SID_SUSPICIOUS = 9_600_002
SID_TIMEOUT = 9_600_003
SID_RETRO = 9_600_004
SID_UNCHECKED = 9_600_005
SID_HELD_OUT = 9_600_006
CATEGORY = "A Network Trojan was detected"
POLICY_CATEGORY = "Potentially Bad Traffic"
BAD = ("malicious", "suspicious")
# What the block page says the verdict was (Japanese / English).
PAGE_VERDICTS = {"malicious": "危険 / malicious", "suspicious": "疑わしい / suspicious",
                 "no_verdict": "未判定: 検査が時間内に終わりませんでした / not judged in time"}


class SandboxConfig(EngineConfig):
    """``engines.sandbox``: unknown files that carry code judged by the center's sandbox."""

    url: str = Field("", description="the https:// base URL of the operations center (its sandbox endpoints "
                                     "/api/v1/sandbox/...); required when enabled")
    ca_file: str = Field("", description="the center's CA file, the only CA trusted (never the system's); required "
                                         "when enabled")
    auth_file: str = Field(AUTH_FILE, description="the box's center credential (written by activation)")
    cache_file: str = Field("/var/lib/vcr-agent/sandbox-verdicts.db",
                            description="the box's verdict cache (SQLite), kept across restarts")
    kinds: list[Literal["pe", "elf", "macho", "office", "pdf", "script", "archive"]] = Field(
        list(KINDS), description="kinds of files judged: pe, elf, macho, office (with macros), pdf (with JavaScript), "
                                 "script, archive (holding any of these)")
    check_uploads: bool = Field(False, description="judge files the PCs upload too (by default only downloads)")
    hold_timeout: float = Field(10.0, ge=0.1, le=120, description="seconds the packet completing an unknown file "
                                "waits for the verdict; then the file passes with an alarm")
    hold_until_verdict: bool = Field(False, description="hold an unknown file until its verdict (at most "
                                     "verdict_wait seconds, then it is blocked) instead of passing it at hold_timeout")
    verdict_wait: float = Field(600.0, ge=1, le=3600, description="seconds the box waits for the verdict of a "
                                "submitted file (a malicious verdict after the file passed raises a retro alarm)")
    poll_interval: float = Field(2.0, ge=0.2, le=60, description="seconds between verdict queries while waiting")
    submit: bool = Field(True, description="submit unknown files to the center (false: look up known hashes only)")
    max_submit_size: int = Field(10 << 20, ge=1024, le=256 << 20, description="bytes: larger files are looked up "
                                 "but not submitted")
    submit_rate: float = Field(30.0, gt=0, le=6000, description="files submitted per minute at most, per worker")
    submit_burst: int = Field(10, ge=1, le=1000, description="files submitted at once before submit_rate applies")
    clean_ttl: float = Field(6 * 3600.0, ge=0, le=30 * 86400, description="seconds a clean verdict is kept")
    bad_ttl: float = Field(7 * 86400.0, ge=0, le=365 * 86400, description="seconds a malicious or suspicious verdict "
                           "is kept")
    unknown_ttl: float = Field(60.0, ge=0, le=86400, description="seconds a file that could not be judged (not "
                               "submitted, analysis failed) is not asked about again")
    memory_ttl: float = Field(30.0, ge=0, le=86400, description="seconds a worker keeps a verdict in memory "
                              "(then it asks the cache on disk, which the check-ins update: a verdict changed at the "
                              "center applies within a check-in plus this)")
    memory_entries: int = Field(100_000, ge=16, le=10_000_000, description="verdicts kept in memory per worker")
    block_suspicious: bool = Field(False, description="block suspicious files too (by default: an alarm)")
    monitor_only: bool = Field(False, description="raise alarms instead of blocking")
    timeout: float = Field(10.0, ge=0.5, le=60, description="seconds one request to the center may take")
    box_name: BoxName = Field("", description="the box's name on the block page; default: the host name")

    @model_validator(mode="after")
    def _center(self) -> "SandboxConfig":
        if (self.enabled or self.url) and not self.url.lower().startswith("https://"):
            raise ConfigError("expected the https:// URL of the operations center (http:// would send the box's token "
                              "in clear text)", key="url")
        if self.enabled and not self.ca_file:
            raise ConfigError("expected the center's CA file (the sandbox trusts that CA only)", key="ca_file")
        return self


class Sandbox(Engine):
    Config = SandboxConfig
    name: ClassVar[str] = "sandbox"

    def __init__(self) -> None:
        super().__init__()
        self.conf = SandboxConfig()
        self.box = ""
        self.known: OrderedDict[str, tuple[str, float, tuple[str, ...]]] = OrderedDict()

    def configure(self, section: Mapping[str, Any], ctx: EngineContext = EngineContext()) -> None:
        self.conf = self.check_section(section)
        self.box = self.conf.box_name or os.uname().nodename

    def summary(self) -> dict[str, Any]:
        return {"center": self.conf.url, "cache_file": self.conf.cache_file, "kinds": list(self.conf.kinds),
                "verdicts_in_memory": len(self.known)}

    # -- the in-memory verdicts ------------------------------------------------------------------
    def _known(self, sha: str) -> tuple[str, float, tuple[str, ...]] | None:
        hit = self.known.get(sha)
        if hit is None:
            return None
        if hit[1] < time.monotonic():
            del self.known[sha]
            return None
        return hit

    def _learn(self, sha: str, result: Any) -> None:
        if not isinstance(result, Mapping):
            return
        verdict = str(result.get("verdict") or "")
        ttl = self.conf.bad_ttl if verdict in BAD else self.conf.clean_ttl if verdict == "clean" else 0
        ttl = min(ttl, self.conf.memory_ttl)
        if ttl <= 0:
            return
        reasons = tuple(str(r) for r in (result.get("reasons") or [])[:5])
        self.known[sha] = (verdict, time.monotonic() + ttl, reasons)
        self.known.move_to_end(sha)
        while len(self.known) > self.conf.memory_entries:
            self.known.popitem(last=False)

    # -- files -----------------------------------------------------------------------------------
    def _state(self, flow: Any) -> dict[str, Any]:
        return flow.engine_data.setdefault(self.name, {"packets": 0, "starts": {}})

    def on_packet(self, pkt: Any, flow: Any) -> Iterable[Decision] | None:
        if flow is not None and flow.engine_data.get(self.name) is not None:
            flow.engine_data[self.name]["packets"] += 1
        return None

    needs_empty_acks = Antivirus.needs_empty_acks  # its on_packet numbers the packets as the antivirus's does
    needs_handshake = Antivirus.needs_handshake

    def on_http_response(self, flow: Any, ev: HttpEvent) -> Iterable[Decision] | None:
        if ev.stage == "response_headers":
            st = self._state(flow)
            st["starts"][ev.tx.tx_id] = st["packets"]  # the packet that carries this response's start
        return None

    def file_depth(self) -> int:
        """Files are hashed whole up to ``max_submit_size`` (past the IPS body limit: incrementally,
        not kept), so a known executable is judged by its SHA-256 whatever its size."""
        return self.conf.max_submit_size

    def on_file(self, flow: Any, file: FileEvent) -> Iterable[Decision] | None:
        st = self._state(flow)
        start = st["starts"].pop(file.tx_id, None) if not file.to_server else None
        if file.proto not in ("http", "http2"):  # mail attachments: the mail path decides
            return None
        if file.to_server and not self.conf.check_uploads:
            return None
        kind = code_kind(file.data, file.magic, file.name)
        if kind is None or kind not in self.conf.kinds:
            return None
        self.count(f"files.{kind}")
        scanned = ScannedFile.of(file)
        if file.truncated:  # the hash is not the file's: nothing to look up
            self.count("unchecked.incomplete")
            return [self._alarm(SID_UNCHECKED, "file not checked (incomplete)", scanned, kind, "incomplete",
                                Action.ALERT, 3)]
        page_ok = not file.to_server and start == st["packets"]
        known = self._known(file.sha256)
        if known is not None:
            self.count("verdicts.memory")
            return self._judged(scanned, kind, known[0], list(known[2]), "memory", page_ok)
        req = IORequest("sandbox_check", {
            "url": self.conf.url, "ca_file": self.conf.ca_file, "auth_file": self.conf.auth_file,
            "cache_file": self.conf.cache_file, "sha256": file.sha256,
            # past the body limit only the hash of the whole file is known (its head is kept, not the
            # rest): looked up by hash, not submitted (counted unsubmitted.streamed)
            "data": FileData(b"" if file.streamed else file.data),
            "name": scanned.name, "lan_host": file.lan_ip, "magic": file.magic,
            "submit": self.conf.submit and not file.streamed,
            "max_submit_size": self.conf.max_submit_size, "submit_rate": self.conf.submit_rate,
            "submit_burst": self.conf.submit_burst, "verdict_wait": self.conf.verdict_wait,
            "poll_interval": self.conf.poll_interval, "clean_ttl": self.conf.clean_ttl, "bad_ttl": self.conf.bad_ttl,
            "unknown_ttl": self.conf.unknown_ttl, "timeout": self.conf.timeout,
            "file": scanned, "kind": kind, "page": page_ok, "started": time.monotonic(),
        })
        self.count("checks")
        if file.streamed:
            self.count("unsubmitted.streamed")
        if self.conf.hold_until_verdict:
            v = self._alarm(SID_HELD_OUT, "no verdict in time, file blocked", scanned, kind, "no_verdict",
                            Action.DROP, 2, block=True, page=page_ok)
            return [Hold(self.name, req, timeout=self.conf.verdict_wait, on_timeout=Action.DROP,
                         reason="sandbox verdict timeout: blocked", timeout_verdict=v)]
        v = self._alarm(SID_TIMEOUT, "unknown file passed before its verdict", scanned, kind, "timeout", Action.ALERT, 3,
                        extra={"hold_timeout": self.conf.hold_timeout})
        return [Hold(self.name, req, timeout=self.conf.hold_timeout, on_timeout=Action.PASS,
                     reason="sandbox verdict timeout: passed", timeout_verdict=v)]

    def on_io_result(self, flow: Any, request: IORequest, result: Any, error: str | None) -> Iterable[Decision] | None:
        file: ScannedFile = request.args["file"]
        kind = str(request.args.get("kind", ""))
        if error is not None or not isinstance(result, Mapping):
            self.count("unchecked.center")
            return [self._alarm(SID_UNCHECKED, "file not checked (center unavailable), passed", file, kind,
                                "unavailable", Action.ALERT, 3, extra={"error": (error or "no result")[:200]})]
        self._learn(file.sha256, result)
        verdict = str(result.get("verdict") or "unknown")
        reasons = [str(r) for r in (result.get("reasons") or [])][:5]
        out = self._judged(file, kind, verdict, reasons, str(result.get("source") or "center"),
                           bool(request.args.get("page")), submitted=bool(result.get("submitted")))
        if out is None and self.conf.hold_until_verdict:  # no verdict came: blocked, as the hold's timeout does
            self.count("held_out")
            return [self._alarm(SID_HELD_OUT, "no verdict in time, file blocked", file, kind, "no_verdict", Action.DROP,
                                2, extra={"verdict": verdict, "why": reasons[:2]}, block=True,
                                page=bool(request.args.get("page")))]
        if out is None and verdict not in ("clean",):
            self.count(f"unchecked.{verdict}")
            return [self._alarm(SID_UNCHECKED, f"file not judged ({verdict}), passed", file, kind, verdict,
                                Action.ALERT, 3, extra={"why": reasons[:2]})]
        return out

    def on_io_late(self, request: IORequest, result: Any, error: str | None) -> Iterable[Decision] | None:
        """The verdict of a file that already passed: learnt, and a retro alarm when it is bad."""
        file: ScannedFile = request.args["file"]
        if error is not None or not isinstance(result, Mapping):
            return None
        self._learn(file.sha256, result)
        verdict = str(result.get("verdict") or "")
        if verdict not in BAD:
            return None
        self.count("retro_alarms")
        reasons = [str(r) for r in (result.get("reasons") or [])][:5]
        sev = 1 if verdict == "malicious" else 2
        return [self._alarm(SID_RETRO, f"{verdict} file already delivered to {file.lan_ip or 'a LAN host'}", file,
                            str(request.args.get("kind", "")), "retro", Action.ALERT, sev,
                            extra={"verdict": verdict, "reasons": reasons, "retro": True})]

    # -- verdicts --------------------------------------------------------------------------------
    def _judged(self, file: ScannedFile, kind: str, verdict: str, reasons: list[str], source: str, page: bool,
                submitted: bool = False) -> list[Decision] | None:
        extra = {"verdict": verdict, "reasons": reasons, "source": source, "submitted": submitted}
        if verdict == "malicious":
            self.count("malicious")
            return [self._alarm(SID_MALICIOUS, "malicious file", file, kind, "malicious", Action.DROP, 1, extra=extra,
                                block=True, page=page)]
        if verdict == "suspicious":
            self.count("suspicious")
            return [self._alarm(SID_SUSPICIOUS, "suspicious file", file, kind, "suspicious", Action.ALERT, 2,
                                extra=extra, block=self.conf.block_suspicious, page=page)]
        if verdict == "clean":
            self.count("clean")
            return []
        return None

    def _alarm(self, sid: int, what: str, file: ScannedFile, kind: str, reason: str, action: Action, severity: int,
               *, extra: Mapping[str, Any] | None = None, block: bool = False, page: bool = False) -> Verdict:
        block = block and not self.conf.monitor_only
        meta: dict[str, Any] = {
            "fileinfo": dict(file.info),
            "sandbox": {"action": "blocked" if block else "passed", "reason": reason, "kind": kind,
                        "direction": "upload" if file.to_server else "download", "lan_host": file.lan_ip,
                        **(extra or {})},
        }
        if file.http:
            meta["http"] = dict(file.http)
        category = CATEGORY if reason in ("malicious", "retro") else POLICY_CATEGORY
        if not block:
            return Verdict(Action.ALERT if action >= Action.ALERT else action, self.name, rule_id=sid,
                           signature=f"VCR Sandbox: {what}", category=category, severity=severity, reason=reason,
                           scope=Scope.PACKET, metadata=meta)
        verdict = PAGE_VERDICTS.get(reason, reason)
        html = render_file("sandbox", file.site, threat=verdict, filename=file.name, box=self.box, ref=file.sha256[:12])
        return Verdict(Action.DROP, self.name, rule_id=sid, signature=f"VCR Sandbox: {what}", category=category,
                       severity=severity, reason=reason, scope=Scope.FLOW, metadata=meta,
                       inject=block_injects(html, file, page))

    needs_more = Antivirus.needs_more  # the same flows: TCP that is (or may still be) HTTP, not encrypted
