"""Mail security throughput: messages per second through SMTP relay and POP3 retrieval, with the
box's mail proxy scanning (clamd), scanning and scoring (clamd + the anti-spam engine with a private
rspamd), proxying without scanning, and with no box in between; 10 KB and 5 MB messages; the added
latency per message; clamd's and rspamd's memory.

    python -m lab.bench.mail [--small N] [--large N] [--json]

Real components on the loopback: a private Postfix (lab/mta.py), a private Dovecot
(lab/dovecot.py) and a private clamd with the starter database (lab/clamd.py); the proxy is
agent/dataplane/mailproxy.py's ``MailProxy`` as the daemon runs it, minus the REDIRECT (a kernel
NAT lookup per connection, not measured here). Each message carries a random attachment (base64),
so clamd has a real file to scan. Needs root (Postfix and Dovecot masters).
"""
from __future__ import annotations

import argparse
import json
import os
import poplib
import shutil
import smtplib
import statistics
import tempfile
import time
from email.mime.application import MIMEApplication
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from pathlib import Path
from typing import Any, Callable

from agent.dataplane.mailproxy import MailProxy
from filters.mail.engine import MailSecurity
from lab import dovecot as lab_dovecot
from lab import mta as lab_mta
from lab.clamd import PrivateClamd


def message(size: int) -> bytes:
    msg = MIMEMultipart()
    msg["From"] = "taro@office.example"
    msg["To"] = "hanako@office.example"
    msg["Subject"] = "bench"
    msg["Date"] = "Mon, 07 Dec 2026 10:00:00 +0900"
    msg["Message-ID"] = f"<bench-{size}@office.example>"
    msg.attach(MIMEText("見積書を送ります。\n", "plain", "utf-8"))
    part = MIMEApplication(os.urandom(max(1, size * 3 // 4 - 600)), "octet-stream")
    part.add_header("Content-Disposition", "attachment", filename="data.bin")
    msg.attach(part)
    return msg.as_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def smtp_run(port: int, raw: bytes, n: int) -> list[float]:
    """Seconds per message from DATA to the server's 250, one session."""
    out = []
    with smtplib.SMTP("127.0.0.1", port, timeout=120) as s:
        s.ehlo("bench.office.example")
        for _ in range(n):
            t0 = time.perf_counter()
            s.sendmail("taro@office.example", ["hanako@office.example"], raw)
            out.append(time.perf_counter() - t0)
    return out


def pop3_run(port: int, dc: lab_dovecot.Dovecot, n: int) -> list[float]:
    """Seconds per RETR of the first ``n`` messages, one session (nothing deleted)."""
    p = poplib.POP3("127.0.0.1", port, timeout=120)
    p.user(dc.user)
    p.pass_(dc.password)
    out = []
    for i in range(1, n + 1):
        t0 = time.perf_counter()
        p.retr(i)
        out.append(time.perf_counter() - t0)
    p.quit()
    return out


def run(small: int, large: int, antispam: bool = True) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="vcr-bench-mail-"))
    clamd = PrivateClamd(work / "clamd").start()
    rspamd = None
    if antispam:
        from lab.rspamd import PrivateRspamd
        from lab.spameval import shared_corpus, teach_sample

        rspamd = PrivateRspamd(work / "rspamd", min_learns=10).start()
        teach_sample(rspamd, shared_corpus())  # Bayes answers, as on a box with the center's data
    pf = lab_mta.start_postfix(work / "mta", domains=["office.example"])
    dc = lab_dovecot.start_dovecot(work / "dovecot")  # its own mailbox: Postfix's fills up as we send
    proxies = []
    try:
        paths: dict[str, dict[str, int]] = {"no box": {"smtp": pf.port, "pop3": dc.pop3_port}}
        variants = [("proxy, no scan", False, None), ("proxy + clamd", True, None)]
        if rspamd is not None:
            from filters.antispam.engine import AntiSpamEngine

            spam = AntiSpamEngine()
            spam.configure({"enabled": True, "url": rspamd.url, "timeout": 60.0})
            variants.append(("proxy + clamd + anti-spam", True, spam))
        for label, scanning, spam_engine in variants:
            engine = MailSecurity()
            engine.configure({"enabled": True, "scan_sent": scanning, "scan_received": scanning})
            ports = {}
            for proto, target in (("smtp", (pf.host, pf.port)), ("pop3", (dc.host, dc.pop3_port))):
                p = MailProxy(engine, clamd={"socket": clamd.socket, "max_concurrent": 8}, emit=lambda r: None,
                              antispam=spam_engine,
                              host="127.0.0.1", port=0, upstream=lambda s, t=target: t,
                              protocol_of=lambda port, pr=proto: pr).start()
                proxies.append(p)
                ports[proto] = p.port
            paths[label] = ports
        rows = []
        for size, n in ((10 * 1024, small), (5 * 1024 * 1024, large)):
            raw = message(size)
            for sub in ("new", "cur"):
                for f in (dc.maildir / sub).iterdir():
                    f.unlink()
            for _ in range(n):
                dc.deliver(raw)
            for label, ports in paths.items():
                for proto, fn in (("smtp", lambda: smtp_run(ports["smtp"], raw, n)),
                                  ("pop3", lambda: pop3_run(ports["pop3"], dc, n))):
                    fn_: Callable[[], list[float]] = fn
                    fn_() if n > 2 else None  # warm-up (connections, clamd's first scans)
                    t0 = time.perf_counter()
                    times = fn_()
                    wall = time.perf_counter() - t0
                    rows.append({"size": size, "proto": proto, "path": label, "messages": n,
                                 "msgs_per_s": round(n / wall, 2), "median_ms": round(statistics.median(times) * 1000, 2)})
                for f in (pf.maildir / "new").iterdir() if (pf.maildir / "new").is_dir() else []:
                    f.unlink(missing_ok=True)
        assert clamd.proc is not None
        out = {"rows": rows, "clamd_rss_mib": round(_rss_kib(clamd.proc.pid) / 1024, 1),
               "cpus": os.cpu_count(), "load": os.getloadavg()}
        if rspamd is not None:
            from lab.spameval import memory_kib

            out["rspamd_pss_mib"] = round(memory_kib(rspamd.rspamd_pids())["pss_kib"] / 1024, 1)
            out["redis_rss_mib"] = round(memory_kib([rspamd.procs["redis"].pid])["rss_kib"] / 1024, 1)
        return out
    finally:
        for p in proxies:
            p.stop()
        dc.remove()
        pf.stop()
        clamd.stop()
        if rspamd is not None:
            rspamd.stop()
        shutil.rmtree(work, ignore_errors=True)


def markdown(res: dict[str, Any]) -> str:
    base = {(r["size"], r["proto"]): r for r in res["rows"] if r["path"] == "no box"}
    lines = ["| message | path | through | msgs/s | vs no box | median per message | added |",
             "|---|---|---|---:|---:|---:|---:|"]
    for r in res["rows"]:
        b = base[(r["size"], r["proto"])]
        size = "10 KB" if r["size"] < 1 << 20 else "5 MB"
        what = "SMTP relay" if r["proto"] == "smtp" else "POP3 RETR"
        lines.append(f"| {size} | {what} | {r['path']} | {r['msgs_per_s']} | {r['msgs_per_s'] / b['msgs_per_s']:.2f} | "
                     f"{r['median_ms']} ms | {r['median_ms'] - b['median_ms']:+.1f} ms |")
    lines.append("")
    lines.append(f"clamd RSS after the run (starter database): {res['clamd_rss_mib']} MiB; "
                 f"{res['cpus']} CPUs, load {', '.join(f'{x:.1f}' for x in res['load'])}.")
    if "rspamd_pss_mib" in res:
        lines.append("")
        lines.append(f"rspamd after the run (main, scanner, controller, fuzzy storage; PSS): {res['rspamd_pss_mib']} MiB, "
                     f"its redis {res['redis_rss_mib']} MiB RSS (40 messages learnt). 5 MB messages are over "
                     "`engines.antispam.max_size` (2 MiB): not scored, the anti-spam row costs what clamd costs.")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--small", type=int, default=100, help="10 KB messages per path and protocol")
    ap.add_argument("--large", type=int, default=8, help="5 MB messages per path and protocol")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--no-antispam", action="store_true", help="skip the anti-spam path (no rspamd)")
    args = ap.parse_args()
    res = run(args.small, args.large, antispam=not args.no_antispam)
    print(json.dumps(res, indent=1) if args.json else markdown(res))


if __name__ == "__main__":
    main()
