"""``vcr-agent portcheck``: does the office firewall let the box reach what table 4 of the service needs?

Tests for real, from the box: a DNS query on UDP 53 to each DNS server of the settings sheet
(resolving the center's host name), an SNTP query on UDP 123 to the configured NTP servers, and
TCP connects on 443, 80, 22, 6060 and 6061 to the configured endpoints (by default the center's
host). The result says per feature of the service (table 4) what works, and for each failure
what to change, in Japanese and English.
"""
from __future__ import annotations

import concurrent.futures
import datetime as _dt
import errno
import ipaddress
import os
import socket
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

from agent.config import AgentConfig

DNS_PORT = 53
TCP_PORTS = (443, 80, 22, 6060, 6061)
CHECKS = ("udp/53", "udp/123", *(f"tcp/{p}" for p in TCP_PORTS))

# Table 4 (別紙1 §4): feature -> (Japanese, English, ports it needs).
FEATURES: tuple[tuple[str, str, str, tuple[str, ...]], ...] = (
    ("activation", "アクティベーション (ライセンス同期)", "activation (license sync)", ("udp/53", "tcp/443")),
    ("monitoring", "監視・運用 (運用センターとの通信)", "monitoring / operations (operations center)", ("udp/53", "tcp/443", "tcp/22", "udp/123")),
    ("atp", "高度な脅威対策 (シグネチャ更新)", "advanced threat protection (signature updates)", ("udp/53", "tcp/443")),
    ("ips", "IPS (シグネチャ更新)", "IPS (signature updates)", ("udp/53", "tcp/443")),
    ("webfilter", "Web フィルター (URL カテゴリ問い合わせ)", "web filter (URL category queries)", ("udp/53", "tcp/80", "tcp/443", "tcp/6060", "tcp/6061")),
    ("mail_av", "メールアンチウイルス (パターン更新)", "mail antivirus (pattern updates)", ("udp/53", "tcp/443")),
    ("web_av", "Web アンチウイルス (パターン更新)", "web antivirus (pattern updates)", ("udp/53", "tcp/443")),
    ("antispam", "アンチスパム (スパム判定問い合わせ)", "anti-spam (spam verdict queries)", ("udp/53", "tcp/80", "tcp/443")),
    ("sandbox", "サンドボックス (検査)", "sandbox (scans)", ("udp/53", "tcp/443")),
)

ERRORS_JA = {
    "timeout": "応答なし (ファイアウォールで破棄されている可能性)",
    "refused": "接続拒否",
    "unreachable": "到達不能",
    "nxdomain": "名前が見つからない",
    "servfail": "DNS サーバーのエラー",
    "no address": "アドレスなし",
    "unresolved": "名前解決できないため未実施",
    "error": "エラー",
}
ERRORS_EN = {
    "timeout": "no answer (probably dropped by a firewall)",
    "unresolved": "not tested: the name could not be resolved",
}


@dataclass
class CheckResult:
    check: str  # "udp/53", "tcp/443", ...
    target: str  # the server asked or connected to, as configured
    ok: bool | None  # None: could not be tested (its host name did not resolve)
    address: str = ""
    ms: float | None = None
    error: str = ""  # timeout, refused, unreachable, nxdomain, servfail, no address, unresolved, error
    detail: str = ""

    @property
    def proto(self) -> str:
        return self.check.split("/")[0]

    @property
    def port(self) -> int:
        return int(self.check.split("/")[1])


@dataclass
class PortcheckResult:
    checked_at: str
    results: list[CheckResult] = field(default_factory=list)
    center_host: str = ""

    def check_ok(self, check: str) -> bool:
        """A check passes when any of its targets passed (one working DNS or NTP server is enough)."""
        return any(r.ok for r in self.results if r.check == check)

    def tested(self) -> set[str]:
        return {r.check for r in self.results}

    def failed_checks(self) -> list[str]:
        return [c for c in CHECKS if c in self.tested() and not self.check_ok(c)]

    @property
    def ok(self) -> bool:
        return not self.failed_checks()

    def features(self) -> list[dict[str, Any]]:
        out = []
        tested = self.tested()
        for key, ja, en, needs in FEATURES:
            failed = [c for c in needs if c in tested and not self.check_ok(c)]
            out.append({"feature": key, "name_ja": ja, "name_en": en, "ok": not failed, "failed": failed})
        return out

    def fixes(self) -> list[dict[str, Any]]:
        out = []
        feats = self.features()
        for check in self.failed_checks():
            rows = [r for r in self.results if r.check == check]
            affected = [f for f in feats if check in f["failed"]]
            ja, en = fix_text(check, rows)
            out.append({"check": check, "ja": ja, "en": en, "features": [f["feature"] for f in affected],
                        "features_ja": [f["name_ja"] for f in affected], "features_en": [f["name_en"] for f in affected]})
        return out

    def as_dict(self) -> dict[str, Any]:
        return {"checked_at": self.checked_at, "ok": self.ok, "center_host": self.center_host,
                "results": [asdict(r) for r in self.results], "features": self.features(), "fixes": self.fixes()}


def fix_text(check: str, rows: Sequence[CheckResult]) -> tuple[str, str]:
    """What to change for a failed check, in Japanese and English."""
    proto, port = check.split("/")
    targets = ", ".join(sorted({r.target for r in rows})) or "-"
    P = proto.upper()
    if check == "udp/53":
        if rows and all(r.error in ("nxdomain", "no address", "servfail") for r in rows):
            name = rows[0].detail.split(" ")[0] if rows[0].detail else "the center's name"
            return (f"DNS サーバー ({targets}) が {name} を解決できません。設定シートの DNS サーバーが正しいか確認してください",
                    f"The DNS servers ({targets}) cannot resolve {name}: check the DNS servers on the settings sheet")
        return (f"ファイアウォールで DNS サーバー ({targets}) への UDP 53 の発信を許可し、設定シートの DNS サーバーを確認してください",
                f"Allow outbound UDP 53 to the DNS servers ({targets}) on your firewall and check the DNS servers on the settings sheet")
    if check == "udp/123":
        return (f"ファイアウォールで NTP サーバー ({targets}) への UDP 123 の発信を許可してください",
                f"Allow outbound UDP 123 (NTP) to {targets} on your firewall")
    if rows and all(r.error == "unresolved" for r in rows):
        return (f"{targets} の名前解決ができないため {P} {port} を確認できません。先に DNS (UDP 53) を直してください",
                f"{P} {port} to {targets} could not be tested because the name does not resolve: fix DNS (UDP 53) first")
    return (f"ファイアウォールで {targets} への {P} {port} の発信を許可してください",
            f"Allow outbound {P} {port} to {targets} on your firewall")


# ------------------------------------------------------------------------------------ probes
def _dns_query_packet(name: str, qtype: int) -> tuple[int, bytes]:
    from filters.app.dns import build_query

    txid = int.from_bytes(os.urandom(2), "big")
    return txid, build_query(name, qtype, txid=txid)


def dns_query(server: str, name: str, *, qtype: int = 1, timeout: float = 3.0, port: int = DNS_PORT) -> list[str]:
    """Ask ``server`` over UDP for ``name``'s A (or AAAA) records. Raises LookupError(kind) or OSError."""
    from filters.app.dns import RCODE_NXDOMAIN, parse_dns

    txid, packet = _dns_query_packet(name, qtype)
    family = socket.AF_INET6 if ":" in server else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.connect((server, port))
        sock.send(packet)
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise socket.timeout()
            sock.settimeout(remaining)
            data = sock.recv(4096)
            msg = parse_dns(data)
            if msg is None or msg.txid != txid or msg.to_server:
                continue  # not our answer
            if msg.rcode == RCODE_NXDOMAIN:
                raise LookupError("nxdomain")
            if msg.rcode != 0:
                raise LookupError("servfail")
            size = 4 if qtype == 1 else 16
            fam = socket.AF_INET if qtype == 1 else socket.AF_INET6
            addrs = [socket.inet_ntop(fam, a.data) for a in msg.answers if a.rrtype == qtype and len(a.data) == size]
            if not addrs and name not in (".", ""):
                raise LookupError("no address")
            return addrs


def _classify(exc: BaseException) -> str:
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return "timeout"
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, LookupError):
        return str(exc.args[0]) if exc.args else "error"
    if isinstance(exc, OSError) and exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EADDRNOTAVAIL):
        return "unreachable"
    return "error"


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


def check_dns(server: str, name: str, timeout: float) -> CheckResult:
    t0 = time.monotonic()
    qname = name if not _is_ip(name) else "."
    try:
        addrs = dns_query(server, qname, timeout=timeout, qtype=1 if qname != "." else 2)
    except (OSError, LookupError) as exc:
        kind = _classify(exc)
        return CheckResult("udp/53", server, False, server, error=kind, detail=f"{qname} ({exc or kind})")
    ms = (time.monotonic() - t0) * 1000
    return CheckResult("udp/53", server, True, server, round(ms, 1), detail=f"{qname} -> {', '.join(addrs) or 'answer'}")


def check_ntp(server: str, address: str, timeout: float) -> CheckResult:
    from agent.link.ntp import NtpError, query

    t0 = time.monotonic()
    try:
        r = query(address, timeout=timeout)
    except NtpError as exc:
        kind = "timeout" if "no NTP answer" in str(exc) else "error"
        return CheckResult("udp/123", server, False, address, error=kind, detail=str(exc))
    ms = (time.monotonic() - t0) * 1000
    return CheckResult("udp/123", server, True, address, round(ms, 1),
                       detail=f"offset {r.offset:+.3f} s, delay {r.delay * 1000:.1f} ms, stratum {r.stratum}")


def check_tcp(port: int, host: str, address: str, timeout: float) -> CheckResult:
    t0 = time.monotonic()
    try:
        with socket.create_connection((address, port), timeout=timeout):
            pass
    except OSError as exc:
        return CheckResult(f"tcp/{port}", host, False, address, error=_classify(exc), detail=str(exc))
    return CheckResult(f"tcp/{port}", host, True, address, round((time.monotonic() - t0) * 1000, 1))


class Resolver:
    """Names -> addresses via the settings sheet's DNS servers (then the system resolver)."""

    def __init__(self, servers: Sequence[str], timeout: float) -> None:
        self.servers = list(servers)
        self.timeout = timeout
        self.cache: dict[str, str | None] = {}

    def resolve(self, host: str) -> str | None:
        if _is_ip(host):
            return host
        if host in self.cache:
            return self.cache[host]
        addr = None
        for server in self.servers:
            try:
                addr = dns_query(server, host, timeout=self.timeout)[0]
                break
            except (OSError, LookupError, IndexError):
                continue
        if addr is None and not self.servers:  # the system's resolver only when there is no sheet
            try:
                addr = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)[0][4][0]
            except (OSError, IndexError):
                addr = None
        self.cache[host] = addr
        return addr


def dns_servers(cfg: AgentConfig) -> list[str]:
    """The settings sheet's DNS servers; without a sheet, the system's (/etc/resolv.conf)."""
    if cfg.settings_sheet is not None and cfg.settings_sheet.dns:
        return list(cfg.settings_sheet.dns)
    out = []
    try:
        with open("/etc/resolv.conf", encoding="ascii", errors="replace") as fh:
            for line in fh:
                parts = line.split()
                if len(parts) >= 2 and parts[0] == "nameserver" and _is_ip(parts[1].split("%")[0]):
                    out.append(parts[1].split("%")[0])
    except OSError:
        pass
    return out


def endpoints(cfg: AgentConfig) -> dict[int, str]:
    """Port -> host for the TCP tests: the configured endpoints, the center's host for the rest."""
    pc = cfg.center.portcheck
    out = {p: pc.endpoints.get(p, cfg.center.host) for p in TCP_PORTS}
    out.update({p: h for p, h in pc.endpoints.items() if p not in out})
    return {p: h for p, h in out.items() if h}


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def run_portcheck(cfg: AgentConfig, *, timeout: float | None = None) -> PortcheckResult:
    """Run every check of table 4 (in parallel; about one timeout long at most per stage)."""
    c = cfg.center
    timeout = timeout or c.portcheck.timeout
    servers = dns_servers(cfg)
    name = c.portcheck.dns_name or c.host or "."
    result = PortcheckResult(checked_at=now_iso(), center_host=c.host)
    with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
        dns_jobs = [pool.submit(check_dns, s, name, timeout) for s in servers]
        resolver = Resolver(servers, timeout)
        hosts = {*endpoints(cfg).values(), *c.ntp_servers}
        addresses = dict(zip(hosts, pool.map(resolver.resolve, hosts)))
        jobs = []
        for server in c.ntp_servers:
            if addresses.get(server):
                jobs.append(pool.submit(check_ntp, server, addresses[server], timeout))
            else:
                result.results.append(CheckResult("udp/123", server, None, error="unresolved"))
        for port, host in sorted(endpoints(cfg).items()):
            if addresses.get(host):
                jobs.append(pool.submit(check_tcp, port, host, addresses[host], timeout))
            else:
                result.results.append(CheckResult(f"tcp/{port}", host, None, error="unresolved"))
        if not servers:
            result.results.append(CheckResult("udp/53", "-", False, error="error",
                                              detail="no DNS server on the settings sheet or in /etc/resolv.conf"))
        result.results.extend(j.result() for j in dns_jobs)
        result.results.extend(j.result() for j in jobs)
    order = {c: i for i, c in enumerate(CHECKS)}
    result.results.sort(key=lambda r: (order.get(r.check, 99), r.port, r.target))
    return result


# ---------------------------------------------------------------------------------- output
def _mark(ok: bool | None) -> str:
    return "OK  " if ok else ("--  " if ok is None else "NG  ")


def format_text(res: PortcheckResult) -> str:
    """The human report: every probe, then per feature, then what to fix (Japanese / English)."""
    lines = [f"ポートチェック / port check  {res.checked_at}" + (f"  (運用センター / center: {res.center_host})" if res.center_host else ""),
             "", "通信テスト / probes:"]
    for r in res.results:
        where = r.target + (f" ({r.address})" if r.address and r.address != r.target else "")
        if r.ok:
            what = f"{r.ms:.0f} ms" if r.ms is not None else "OK"
            if r.detail:
                what += f"  {r.detail}"
        else:
            what = f"{ERRORS_JA.get(r.error, r.error)} / {ERRORS_EN.get(r.error, r.error)}"
            if r.detail and r.error not in ("unresolved",):
                what += f"  [{r.detail}]"
        proto, port = r.check.split("/")
        lines.append(f"  {_mark(r.ok)}{proto.upper():3} {port:>5}  {where}: {what}")
    lines += ["", "機能別 / by feature:"]
    for f in res.features():
        tail = "" if f["ok"] else "  <- " + ", ".join(c.upper().replace("/", " ") for c in f["failed"])
        lines.append(f"  {_mark(f['ok'])}{f['name_ja']} / {f['name_en']}{tail}")
    fixes = res.fixes()
    lines.append("")
    if not fixes:
        lines.append("すべての通信が可能です / everything the service needs is reachable")
    else:
        lines.append("対処 / what to do:")
        for fx in fixes:
            lines.append(f"  - {fx['ja']}")
            lines.append(f"    {fx['en']}")
            lines.append(f"    影響する機能 / features affected: {', '.join(fx['features_ja'])} / {', '.join(fx['features_en'])}")
    return "\n".join(lines)
