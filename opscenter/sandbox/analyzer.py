"""The sandbox's analyzer interface and the reference static analyzer.

``Analyzer.analyze(data, meta) -> Analysis(score, verdict, reasons)``: everything behind the queue
(opscenter/sandbox/queue.py) and its worker sees only this. The reference analyzer is static, made
of well-kept libraries: YARA rules (yara-python; the repo's rules in opscenter/sandbox/rules/),
PE structure and imports (pefile), Office macros (oletools' olevba), PDF JavaScript, scripts, and
ClamAV (the center's own clamd over its socket, when configured). A dynamic sandbox (CAPEv2) plugs
in behind the same interface: docs/sandbox.md.

Every check is bounded and hostile input never raises out of ``analyze``: a check that fails on a
malformed file adds a reason ("PE structure malformed") instead.
"""
from __future__ import annotations

import io
import logging
import math
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Protocol

from filters.av.clamd import ClamdError, instream

log = logging.getLogger("vcr-opscenter.sandbox")
logging.getLogger("olevba").setLevel(logging.WARNING)  # it logs every file it opens at INFO

RULES_DIR = Path(__file__).with_name("rules")
MALICIOUS = 70  # score at or above: malicious (the boxes block it)
SUSPICIOUS = 30  # at or above: suspicious (an alarm; blocked only where the box says so)
VERDICTS = ("malicious", "suspicious", "clean")


def verdict_of(score: int) -> str:
    return "malicious" if score >= MALICIOUS else "suspicious" if score >= SUSPICIOUS else "clean"


@dataclass(frozen=True)
class Analysis:
    """One analyzer's judgement: ``score`` 0-100, ``verdict`` (malicious, suspicious, clean) and the
    reasons behind the score, each like "yara VCR_Sandbox_Test_Marker: ... (+100)"."""

    score: int
    verdict: str
    reasons: tuple[str, ...] = ()
    analyzer: str = ""
    details: Mapping[str, Any] = field(default_factory=dict)


class Analyzer(Protocol):
    """What the queue's worker calls. ``meta``: filename, magic, size, sha256 (as submitted).
    Must not raise on hostile input (the worker still records a failure when it does)."""

    name: str

    def analyze(self, data: bytes, meta: Mapping[str, Any]) -> Analysis: ...


class _Score:
    def __init__(self) -> None:
        self.parts: list[tuple[int, str]] = []

    def add(self, points: int, reason: str) -> None:
        self.parts.append((points, reason))

    @property
    def total(self) -> int:
        return max(0, min(100, sum(p for p, _ in self.parts)))

    def reasons(self) -> tuple[str, ...]:
        return tuple(f"{r} (+{p})" if p else r for p, r in sorted(self.parts, key=lambda x: -x[0]))


# -- the static checks -----------------------------------------------------------------------------
SUSPICIOUS_IMPORTS: dict[str, tuple[int, str]] = {
    # groups of imports that together mean a technique, with its points
    "injection": (35, "process injection imports (VirtualAllocEx, WriteProcessMemory, CreateRemoteThread)"),
    "download_exec": (25, "download-and-execute imports (URLDownloadToFile with WinExec/ShellExecute/CreateProcess)"),
    "keylogger": (25, "keylogging imports (SetWindowsHookEx with GetAsyncKeyState/GetKeyState)"),
    "anti_debug": (10, "anti-debugging imports (IsDebuggerPresent, CheckRemoteDebuggerPresent)"),
    "crypto_files": (15, "file encryption imports (CryptEncrypt with FindFirstFile/FindNextFile)"),
    "dynamic_only": (15, "imports only LoadLibrary/GetProcAddress (resolves its API at run time, as packers do)"),
}


def _entropy(data: bytes) -> float:
    if not data:
        return 0.0
    counts = [0] * 256
    for b in data:
        counts[b] += 1
    n = len(data)
    return -sum(c / n * math.log2(c / n) for c in counts if c)


def _pe_checks(data: bytes, score: _Score) -> None:
    import pefile

    try:
        pe = pefile.PE(data=data, fast_load=True)
        pe.parse_data_directories(directories=[pefile.DIRECTORY_ENTRY["IMAGE_DIRECTORY_ENTRY_IMPORT"]])
    except Exception as exc:  # pefile raises PEFormatError and others on hostile headers
        score.add(10, f"PE structure malformed ({str(exc)[:80]})")
        return
    try:
        names: set[str] = set()
        for entry in getattr(pe, "DIRECTORY_ENTRY_IMPORT", [])[:256]:
            for imp in entry.imports[:4096]:
                if imp.name:
                    names.add(imp.name.decode("ascii", "replace").rstrip("AW") if imp.name[-1:] in b"AW"
                              else imp.name.decode("ascii", "replace"))
        has = names.__contains__
        if has("VirtualAllocEx") and has("WriteProcessMemory") and (has("CreateRemoteThread") or has("NtCreateThreadEx")
                                                                     or has("QueueUserAPC")):
            score.add(*SUSPICIOUS_IMPORTS["injection"])
        if has("URLDownloadToFile") and (has("WinExec") or has("ShellExecute") or has("CreateProcess")):
            score.add(*SUSPICIOUS_IMPORTS["download_exec"])
        if has("SetWindowsHookEx") and (has("GetAsyncKeyState") or has("GetKeyState")):
            score.add(*SUSPICIOUS_IMPORTS["keylogger"])
        if has("IsDebuggerPresent") or has("CheckRemoteDebuggerPresent"):
            score.add(*SUSPICIOUS_IMPORTS["anti_debug"])
        if has("CryptEncrypt") and (has("FindFirstFile") or has("FindFirstFileEx")) and has("FindNextFile"):
            score.add(*SUSPICIOUS_IMPORTS["crypto_files"])
        if names and names <= {"LoadLibrary", "GetProcAddress", "LoadLibraryEx", "GetModuleHandle", "ExitProcess",
                               "VirtualAlloc", "VirtualProtect"}:
            score.add(*SUSPICIOUS_IMPORTS["dynamic_only"])
        packed = []
        for sec in pe.sections[:96]:
            name = sec.Name.rstrip(b"\0").decode("ascii", "replace")
            ent = _entropy(sec.get_data()[: 4 << 20])
            if ent > 7.2 and sec.SizeOfRawData > 1024:
                packed.append(f"{name or '?'} {ent:.2f}")
            if name.upper().startswith(("UPX", ".ASPACK", ".MPRESS", ".PETITE", ".THEMIDA")):
                packed.append(name)
        if packed:
            score.add(20, "packed or encrypted sections (" + ", ".join(packed[:4]) + ")")
        ep = pe.OPTIONAL_HEADER.AddressOfEntryPoint
        sec = pe.get_section_by_rva(ep) if ep else None
        if ep and sec is not None and not sec.Characteristics & 0x20000000:  # IMAGE_SCN_MEM_EXECUTE
            score.add(15, "entry point in a section that is not executable")
        if ep and sec is None and pe.sections:
            score.add(10, "entry point outside every section")
    except Exception as exc:
        score.add(10, f"PE structure malformed ({str(exc)[:80]})")
    finally:
        pe.close()


def _office_checks(data: bytes, name: str, score: _Score) -> None:
    from oletools.olevba import VBA_Parser

    try:
        vba = VBA_Parser(name or "file", data=data)
    except Exception:  # not an OLE/OOXML file olevba knows
        return
    try:
        if not vba.detect_vba_macros():
            return
        score.add(10, "document with VBA macros")
        kinds: dict[str, set[str]] = {}
        for kind, keyword, _desc in vba.analyze_macros():
            kinds.setdefault(kind, set()).add(str(keyword))
        if kinds.get("AutoExec"):
            score.add(25, "macro runs on open (" + ", ".join(sorted(kinds["AutoExec"])[:4]) + ")")
        sus = sorted(kinds.get("Suspicious", set()))
        if sus:
            score.add(min(45, 15 * len(sus)), "suspicious macro keywords (" + ", ".join(sus[:6]) + ")")
        if kinds.get("IOC"):
            score.add(10, "indicators in macros (" + ", ".join(sorted(kinds["IOC"])[:3]) + ")")
    except Exception as exc:
        score.add(5, f"macros could not be analysed ({str(exc)[:80]})")
    finally:
        try:
            vba.close()
        except Exception:
            pass


_PDF_JS = re.compile(rb"/(JavaScript|JS)\b")
_PDF_AUTO = re.compile(rb"/(OpenAction|AA)\b")


def _pdf_checks(data: bytes, score: _Score) -> None:
    if _PDF_JS.search(data):
        score.add(30, "PDF with JavaScript")
        if _PDF_AUTO.search(data):
            score.add(20, "PDF runs its JavaScript when opened (OpenAction/AA)")
    if re.search(rb"/Launch\b", data):
        score.add(40, "PDF launches a program (/Launch)")
    if re.search(rb"/EmbeddedFile\b", data):
        score.add(10, "PDF with an embedded file")


class StaticAnalyzer:
    """The reference analyzer: YARA + pefile + olevba + PDF + ClamAV, scores summed (at most 100)."""

    name = "static"

    def __init__(self, rules_dirs: Iterable[str | Path] = (RULES_DIR,), clamd_socket: str | None = None,
                 clamd_timeout: float = 30.0, max_members: int = 64, max_depth: int = 2) -> None:
        import yara

        files: dict[str, str] = {}
        for folder in rules_dirs:
            for p in sorted(Path(folder).glob("*.yar")):
                files[f"{Path(folder).name}/{p.stem}"] = str(p)
        self.rule_files = tuple(files.values())
        self.rules = yara.compile(filepaths=files) if files else None
        self.clamd_socket = clamd_socket
        self.clamd_timeout = clamd_timeout
        self.max_members = max_members
        self.max_depth = max_depth

    def analyze(self, data: bytes, meta: Mapping[str, Any]) -> Analysis:
        score = _Score()
        details: dict[str, Any] = {}
        self._checks(data, str(meta.get("filename") or ""), score, details, depth=0)
        if self.clamd_socket:
            try:
                virus = instream(self.clamd_socket, data, self.clamd_timeout)["virus"]
                details["clamav"] = virus or "OK"
                if virus:
                    score.add(100, f"ClamAV: {virus}")
            except ClamdError as exc:
                details["clamav"] = f"error: {exc}"
                score.add(0, f"ClamAV not available ({str(exc)[:80]})")
        total = score.total
        return Analysis(total, verdict_of(total), score.reasons(), self.name, details)

    def _checks(self, data: bytes, name: str, score: _Score, details: dict[str, Any], depth: int,
                prefix: str = "") -> None:
        from filters.app.magic import detect

        magic = detect(data[:4096])
        if self.rules is not None:
            try:
                for m in self.rules.match(data=data, timeout=30):
                    points = int(m.meta.get("score", 50)) if str(m.meta.get("score", "50")).isdigit() else 50
                    score.add(points, f"{prefix}yara {m.rule}: {m.meta.get('description', '')}".rstrip(": "))
            except Exception as exc:  # yara.TimeoutError, yara.Error
                score.add(0, f"{prefix}YARA scan failed ({str(exc)[:80]})")
        if magic.startswith(("PE32", "MS-DOS executable")):
            sub = _Score()
            _pe_checks(data, sub)
            for p, r in sub.parts:
                score.add(p, prefix + r)
        elif magic.startswith("Composite Document File") or magic.startswith("Zip archive"):
            sub = _Score()
            _office_checks(data, name, sub)
            for p, r in sub.parts:
                score.add(p, prefix + r)
            if magic.startswith("Zip archive") and not sub.parts and depth < self.max_depth:
                self._zip(data, score, details, depth, prefix)
        elif magic == "PDF document":
            sub = _Score()
            _pdf_checks(data, sub)
            for p, r in sub.parts:
                score.add(p, prefix + r)

    def _zip(self, data: bytes, score: _Score, details: dict[str, Any], depth: int, prefix: str) -> None:
        """Members of a zip archive, each checked (bounded count, size and depth); the archive scores as
        its worst member."""
        try:
            zf = zipfile.ZipFile(io.BytesIO(data))
            infos = zf.infolist()
        except Exception:
            score.add(5, f"{prefix}corrupt zip archive")
            return
        worst = _Score()
        for info in infos[: self.max_members]:
            if info.is_dir() or info.file_size > 32 << 20:
                continue
            if info.flag_bits & 0x1:
                worst.add(10, f"{prefix}{info.filename}: encrypted archive member")
                continue
            try:
                member = zf.read(info)
            except Exception:
                continue
            sub = _Score()
            self._checks(member, info.filename, sub, details, depth + 1, f"{prefix}{info.filename}: ")
            if sub.total > worst.total:
                worst = sub
        score.parts += worst.parts
