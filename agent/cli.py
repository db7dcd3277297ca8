"""The ``vcr-agent`` command line."""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from agent.config import DEFAULT_CONFIG, AgentConfig, load_yaml
from filters.climain import run_command
from filters.engine import ConfigError

log = logging.getLogger("vcr-agent")


def _config(path: str | None) -> AgentConfig:
    """The configuration as the engines run it: the live bundles overlaid, every engine section checked."""
    from agent.engines import load_effective_config

    return load_effective_config(path or DEFAULT_CONFIG)


def cmd_bridge(args: argparse.Namespace) -> int:
    from agent.dataplane.bridge import BridgeControl

    ctl = BridgeControl(_config(args.config))
    ctl.up() if args.action == "up" else ctl.down()
    print(f"bridge {args.action}: OK")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from agent.dataplane.daemon import Daemon

    return Daemon(_config(args.config), config_path=str(args.config or DEFAULT_CONFIG)).run()


def cmd_reload(args: argparse.Namespace) -> int:
    import os
    import signal

    cfg = _config(args.config)  # a bad file is reported here and nothing is sent
    path = Path(cfg.logging.dir) / "status.json"
    try:
        pid = int(json.loads(path.read_text())["pid"])
        os.kill(pid, signal.SIGHUP)
    except (OSError, ValueError, KeyError) as exc:
        print(f"エージェントに再読み込みを指示できません / cannot signal the agent ({path}): {exc}", file=sys.stderr)
        return 1
    print(f"再読み込みを指示しました / reload requested (pid {pid})")
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    from agent.engines import build_engines

    cfg = _config(args.config)
    engines = build_engines(cfg)
    print(f"設定は正常です / configuration OK: {args.config or DEFAULT_CONFIG}")
    for e in engines:
        print(f"  {e.name}: {json.dumps(e.summary(), ensure_ascii=False)}")
    return 0


def cmd_pcap(args: argparse.Namespace) -> int:
    from agent.offline.replay import OfflineOptions, offline_config, run_pcap

    base: dict[str, Any] | None = None
    if args.config:
        base = load_yaml(args.config)
        if not isinstance(base, dict):
            raise ConfigError("expected a mapping at the top level", path=args.config)
    try:
        cfg = offline_config(base, args.set or [], rule_files=args.rules or [], clamd=args.clamd)
    except ConfigError as exc:
        raise exc.within(path=args.config or exc.path) from None
    if args.config:
        from agent.engines import build_engines

        build_engines(cfg, path=args.config)
    opts = OfflineOptions(
        pcap=Path(args.r),
        log_dir=Path(args.l) if args.l else None,
        simulate_ips=args.simulate_ips,
        checksum_mode=args.k,
        sets=args.set or [],
    )
    summary = run_pcap(opts, cfg)
    skipped = sum(summary.get("skipped_records", {}).values())
    print(
        f"pcap: {summary['packets']} packets, {summary['accepted']} accepted, {summary['dropped']} dropped"
        + (f", {skipped} unreadable records skipped" if skipped else ""),
        file=sys.stderr,
    )
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    cfg = _config(args.config)
    path = Path(cfg.logging.dir) / "status.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        print(f"エージェントの状態がありません / no agent status at {path} (is the agent running?)", file=sys.stderr)
        return 1
    print(json.dumps(data, indent=1, ensure_ascii=False))
    return 0




def _split_target(text: str) -> tuple[str, str]:
    """``https://host/path``, ``host/path`` or ``host`` -> (host, path)."""
    from urllib.parse import urlsplit

    if "://" in text:
        parts = urlsplit(text)
        return parts.hostname or "", parts.path + (f"?{parts.query}" if parts.query else "")
    host, slash, rest = text.partition("/")
    return host, slash + rest


def cmd_category(args: argparse.Namespace) -> int:
    from filters.webfilter.categories import CategoryDB
    from filters.webfilter.policy import decide, parse_policy

    section: dict[str, Any] = {}
    if args.config or DEFAULT_CONFIG.exists():
        section = dict(_config(args.config).engines.get("webfilter") or {})
    folder = args.db or section.get("database")
    if not folder:
        print("カテゴリ DB がありません / no category database: give --db DIR or a config with engines.webfilter.database", file=sys.stderr)
        return 2
    try:
        db = CategoryDB.load(Path(folder))
    except OSError as exc:
        print(f"カテゴリ DB を読めません / cannot load the category database: {exc}", file=sys.stderr)
        return 2
    policy = parse_policy({k: section[k] for k in ("blocked", "allow", "deny") if k in section}, known_categories=db.categories)
    for text in args.names:
        host, path = _split_target(text)
        d = decide(db, policy, host, path)
        if args.json:
            print(json.dumps({"input": text, "categories": sorted(d.categories), "verdict": str(d.verdict),
                              "reason": d.reason, "matched": d.matched}, ensure_ascii=False))
        else:
            cats = ", ".join(sorted(d.categories)) or "-"
            print(f"{text}\t{d.verdict}\t{cats}\t({d.reason}{': ' + d.matched if d.matched else ''})")
    return 0


def _mail_engines(cfg: AgentConfig) -> tuple[Any, Any]:
    """The box's anti-spam engine (configured from engines.antispam, enabled or not) and its av section
    (None unless the av engine is enabled), as the box builds them."""
    from filters import registry

    enabled = {e.name: e for e in registry.build_engines(cfg.engines, cfg.engine_context(), prepare=False)}
    spam = enabled.get("antispam")
    if spam is None:
        cls = next(c for c in registry.engine_classes() if c.name == "antispam")
        spam = cls()
        spam.configure(cfg.engines.get("antispam") or {}, cfg.engine_context())
    return spam, enabled.get("av")


def _strip_mbox(raw: bytes) -> bytes:
    """An mbox ``From `` envelope line is not part of the message the box sees: dropped."""
    return raw.split(b"\n", 1)[1] if raw.startswith(b"From ") and b"\n" in raw else raw


def cmd_mail_score(args: argparse.Namespace) -> int:
    from agent.dataplane import clamd

    cfg = _config(args.config)
    spam, av = _mail_engines(cfg)
    if not spam.conf.enabled:
        print("注意: この設定ではアンチスパムは無効です (engines.antispam.enabled) / note: anti-spam is off in this "
              "configuration; scored with its settings anyway", file=sys.stderr)
    rc = 0
    for name in args.files:
        try:
            raw = _strip_mbox(Path(name).read_bytes())
        except OSError as exc:
            print(f"{name}: 読めません / cannot read: {exc.strerror or exc}", file=sys.stderr)
            rc = 1
            continue
        v = spam.check_message(raw, sent=args.sent, mail_from=args.mail_from or "", rcpt_to=tuple(args.rcpt or ()),
                               helo=args.helo or "", client_ip=args.ip or "")
        virus, av_error = None, None
        if av is not None:
            try:
                res = clamd.scan({"socket": av.conf.clamd_socket, "data": raw, "timeout": av.conf.scan_timeout,
                                  "max_concurrent": av.conf.max_concurrent})
                virus = res.get("virus") or None
            except clamd.ClamdError as exc:
                av_error = str(exc)
        if v.error or av_error:
            rc = 1
        if args.json:
            out = {"input": name, "verdict": v.verdict, "score": v.score, "virus": virus, "reasons": list(v.reasons),
                   "threshold": v.threshold, "action": v.action, "direction": "sent" if args.sent else "received"}
            if v.error or av_error:
                out["error"] = "; ".join(e for e in (v.error, av_error) if e)
            print(json.dumps(out, ensure_ascii=False))
            continue
        label = "迷惑メール / spam" if v.spam else "通常のメール / ham"
        action = {"reject": "拒否 / reject", "tag": "件名に印 / tag", "pass": "そのまま / pass",
                  "tempfail": "一時エラー / tempfail"}.get(v.action, v.action)
        print(f"{name}: {label}  スコア / score {v.score:.2f} (しきい値 / threshold {v.threshold:.2f})  "
              f"処理 / action: {action}")
        if virus:
            print(f"  ウイルス / virus: {virus}")
        if v.error:
            print(f"  採点できません (通過扱い) / not scored (passed): {v.error}")
        if av_error:
            print(f"  ウイルス検査できません / not scanned for viruses: {av_error}")
        for reason in v.reasons[:12]:
            print(f"  理由 / reason: {reason}")
    return rc


def _reload_and_wait(cfg: AgentConfig, timeout: float = 120.0) -> bool | None:
    """SIGHUP the running agent and wait until its workers report the reload (status.json).

    True: reloaded (or no agent runs: the next start loads the new bundle); False: a worker failed."""
    import os
    import signal
    import time

    path = Path(cfg.logging.dir) / "status.json"
    try:
        before = json.loads(path.read_text())
        pid = int(before["pid"])
        os.kill(pid, 0)
    except (OSError, ValueError, KeyError):
        return True
    r0 = before.get("reloads", {})
    workers = max(1, len(before.get("workers", {})))
    os.kill(pid, signal.SIGHUP)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(0.5)
        try:
            r = json.loads(path.read_text()).get("reloads", {})
        except (OSError, ValueError):
            continue
        if r.get("failed", 0) > r0.get("failed", 0):
            return False
        if r.get("workers_reloaded", 0) - r0.get("workers_reloaded", 0) >= workers:
            return True
    return None


def cmd_bundles(args: argparse.Namespace) -> int:
    from agent.evelog import EveLog
    from agent.lifecycle.updates import BundleUpdater

    cfg = _config(args.config)
    if args.action != "status" and not cfg.updates.enabled:
        print("署名付き更新は無効です (updates.enabled: false) / signed updates are disabled", file=sys.stderr)
        return 1
    eve = EveLog(Path(cfg.logging.dir) / "eve.json", rotate_bytes=cfg.logging.eve_rotate_bytes, keep=cfg.logging.eve_keep) \
        if args.action != "status" else None
    updater = BundleUpdater(cfg, emit=eve.write if eve else None, reload=lambda: _reload_and_wait(cfg))
    try:
        if args.action == "status":
            out: Any = {**updater.status(), "live": updater.live_versions()}
        elif args.action == "check":
            out = [r.as_dict() for r in updater.check_all(args.kinds or None)]
        else:
            if not args.kinds or len(args.kinds) != 1:
                print("rollback needs one KIND", file=sys.stderr)
                return 2
            out = [updater.rollback(args.kinds[0]).as_dict()]
    finally:
        if eve:
            eve.close()
    print(json.dumps(out, indent=1, ensure_ascii=False))
    results = out if isinstance(out, list) else []
    return 1 if any(r.get("status") == "rejected" for r in results) else 0


def cmd_activate(args: argparse.Namespace) -> int:
    from agent.link.center import ActivationError, LinkConfigError, activate

    cfg = _config(args.config)
    try:
        state = activate(cfg, code=args.code, serial=args.serial or "", replace=args.replace)
    except (ActivationError, LinkConfigError) as exc:
        print(f"アクティベーションできません / activation failed: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({k: v for k, v in state.items() if k != "token"}, ensure_ascii=False))
        return 0
    lic = state.get("license") or {}
    print(f"アクティベーション完了 / activated: device {state['device_id']}, contract {state['contract_id']}")
    print(f"  ライセンス期間 / license term: {lic.get('term_start') or '-'} .. {lic.get('term_end') or '-'}")
    print(f"  認証情報 / credential: {cfg.center.state_file} (0600)")
    if state.get("restore_saved"):
        print("  交換前の設定バックアップを受信しました / the contract's config backup was received for restore")
        if args.replace:
            rc = _restore_after_replace(args, state)
            if rc:
                return rc
    off = state.get("clock_offset_s")
    if off is not None and abs(off) > cfg.center.clock_tolerance:
        print(f"  警告: 時計が運用センターと {off:+.0f} 秒ずれています / warning: the clock is {off:+.0f} s off the center's",
              file=sys.stderr)
    if not cfg.center.enabled:
        print("  center.enabled を true にすると監視が始まります / set center.enabled: true to start monitoring")
    else:
        print("  実行中のエージェントは自動的にチェックインを始めます / a running agent starts checking in by itself")
    return 0


def cmd_portcheck(args: argparse.Namespace) -> int:
    from agent.link.portcheck import endpoints, format_text, run_portcheck

    cfg = _config(args.config)
    if not endpoints(cfg):
        print("運用センターの URL (center.url) か center.portcheck.endpoints を設定してください / "
              "set center.url or center.portcheck.endpoints first", file=sys.stderr)
        return 2
    res = run_portcheck(cfg)
    if args.json:
        print(json.dumps(res.as_dict(), ensure_ascii=False, indent=1))
    else:
        print(format_text(res))
    return 0 if res.ok else 1


def cmd_center_status(args: argparse.Namespace) -> int:
    from agent.link.center import LinkConfigError, load_state

    cfg = _config(args.config)
    try:
        state = load_state(cfg.center.state_file)
    except LinkConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    try:
        running = json.loads((Path(cfg.logging.dir) / "status.json").read_text()).get("center")
    except (OSError, ValueError):
        running = None
    out = {"enabled": cfg.center.enabled, "url": cfg.center.url,
           "credential": None if state is None else {k: v for k, v in state.items() if k != "token"},
           "link": running}
    if args.json:
        print(json.dumps(out, ensure_ascii=False, indent=1))
        return 0 if state else 1
    if state is None:
        print(f"未アクティベーション / not activated (no {cfg.center.state_file}); run `vcr-agent activate CODE`")
    else:
        lic = state.get("license") or {}
        print(f"アクティベーション済み / activated: device {state.get('device_id')}, contract {state.get('contract_id')}, "
              f"license {lic.get('term_start') or '-'} .. {lic.get('term_end') or '-'}")
    if running:
        sp = running.get("spool") or {}
        print(f"リンク / link: {running.get('state')}  last check-in {running.get('last_checkin_ok') or '-'}  "
              f"spool pending {sp.get('pending', 0)}, dropped {sp.get('dropped', 0)}")
        if running.get("problem_detail"):
            print(f"問題 / problem: {running['problem_detail']}")
    else:
        print("実行中のエージェントの状態がありません / no running agent status")
    return 0 if state else 1






def _restore_after_replace(args: argparse.Namespace, state: dict[str, Any]) -> int:
    """A replacement box: decrypt the contract's latest backup and make it this box's config."""
    from agent.lifecycle.backup import BackupError
    from agent.link.center import load_state
    from agent.lifecycle.remoteconfig import ConfigTaskError, restore_backup

    cfg = _config(args.config)
    try:
        saved = json.loads(Path(cfg.center.state_file).with_name("center-restore.json").read_text(encoding="utf-8"))
        cred = load_state(cfg.center.state_file) or {}
        report = restore_backup(args.config or DEFAULT_CONFIG, cred, saved["restore"])
    except (OSError, ValueError, KeyError, BackupError, ConfigTaskError, ConfigError) as exc:
        print(f"  設定の復元に失敗しました (現在の設定のままです) / restoring the settings failed, the current "
              f"configuration stays: {exc}", file=sys.stderr)
        return 3
    print(f"  お客様の設定を復元しました / the customer's settings were restored: revision {report['revision']}"
          f" -> {report['config']}")
    for note in report["remapped"]:
        print(f"  ポート名を読み替えました / port name remapped: {note}")
    if report.get("kept_local"):
        print("  機器ごとの設定はこの機器の値のままです / local-only settings keep this box's values: "
              + ", ".join(report["kept_local"]))
    _signal_reload(cfg)
    return 0


def _signal_reload(cfg: AgentConfig) -> None:
    """Ask a running agent to reload (quietly nothing when none runs)."""
    import os
    import signal

    try:
        pid = int(json.loads((Path(cfg.logging.dir) / "status.json").read_text())["pid"])
        os.kill(pid, signal.SIGHUP)
        print(f"  実行中のエージェントに再読み込みを指示しました / reload requested (pid {pid})")
    except (OSError, ValueError, KeyError):
        pass


def cmd_config(args: argparse.Namespace) -> int:
    """``vcr-agent config history`` / ``config rollback REVISION``: the local revision history;
    ``config check-remote FILE``: may the center apply this revision."""
    import datetime as dt

    from agent.lifecycle.remoteconfig import ConfigTaskError, RemoteConfig

    if args.action == "check-remote":
        return cmd_check_remote(args)
    path = args.config or DEFAULT_CONFIG
    data = load_yaml(path) or {}
    state_file = ((data.get("center") or {}).get("state_file")) or "/var/lib/vcr-agent/center.json"
    rc = RemoteConfig(path, Path(state_file).parent)
    if args.action == "history":
        entries = rc.history.entries()
        if args.json:
            print(json.dumps(entries, ensure_ascii=False, indent=1))
            return 0
        if not entries:
            print("履歴はまだありません / no revisions in the history yet")
            return 0
        print(f"{'':2}{'revision':>8}  {'applied_at (UTC)':20}  {'status':12} source   detail")
        for m in entries:
            at = dt.datetime.fromtimestamp(m.get("applied_at") or 0, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
            detail = m.get("reason") or ", ".join(m.get("notes") or []) or (f"task {m['task_id']}" if m.get("task_id") else "")
            print(f"{'*' if m.get('current') else ' ':2}{m.get('revision', 0):>8}  {at:20}  {m.get('status', ''):12} "
                  f"{m.get('source', ''):8} {detail}")
        return 0
    if args.revision is None:
        print("リビジョンを指定してください / give the REVISION to roll back to", file=sys.stderr)
        return 2
    try:
        target = rc.rollback(args.revision)
    except ConfigTaskError as exc:
        print(f"ロールバックできません / cannot roll back: {exc}", file=sys.stderr)
        return 1
    print(f"リビジョン {target['revision']} に戻しました / rolled back to revision {target['revision']} ({path})")
    _signal_reload(_config(str(path)))
    return 0


def check_remote(text: str, local: dict[str, Any] | None) -> dict[str, Any]:
    """The allow-list check of a revision (agent/lifecycle/remotekeys.py), then the schema.

    ``local``: the box's raw config (only changes of local-only keys are refused), or None (the
    center's view: local-only keys must be left out). Engine sections are checked by the box
    itself when it applies the revision (they need the box's rule files and category lists)."""
    import yaml

    from agent.config import parse_config
    from agent.lifecycle.remotekeys import split_revision

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        return {"ok": False, "error": f"YAML として読めません / not valid YAML{where}: {getattr(exc, 'problem', None) or exc}",
                "refused": []}
    if not isinstance(data, dict):
        return {"ok": False, "error": "最上位が辞書ではありません / expected a mapping at the top level", "refused": []}
    merged, refusals = split_revision(data, local)
    refused = [r.as_dict() for r in refusals]
    if not refused:
        if local is None:  # the required local-only keys, as any box has them, for the schema check
            merged, _ = split_revision(data, {"settings_sheet": {"management_ip": "192.0.2.2/24", "gateway": "192.0.2.1"}})
        try:
            parse_config(merged, path="revision")
        except ConfigError as exc:
            refused.append({"key": exc.key or "", "class": "invalid", "how": "invalid",
                            "reason_ja": f"設定値が不正です: {exc.problem}", "reason_en": f"invalid: {exc.problem}",
                            "message": f"設定エラー / configuration error: {exc}"})
    return {"ok": not refused, "refused": refused}


def cmd_check_remote(args: argparse.Namespace) -> int:
    """``vcr-agent config check-remote FILE [--json] [-c BOX_CONFIG]``: 0 the center may apply it, 1 refused,
    2 unreadable. Without ``-c`` it checks as the center does (it does not know the box's values)."""
    res: dict[str, Any] = {"file": args.file, "against": args.config or None}
    code = 2
    try:
        text = Path(args.file).read_text(encoding="utf-8")
        local = None
        if args.config:
            local = load_yaml(args.config)
            if not isinstance(local, dict):
                raise ConfigError("expected a mapping at the top level", path=args.config)
    except OSError as exc:
        res.update(ok=False, refused=[], error=f"読めません / cannot read: {exc.strerror or exc}")
    except ConfigError as exc:
        res.update(ok=False, refused=[], error=f"機器の設定を読めません / cannot read the box's config: {exc}")
    else:
        res.update(check_remote(text, local))
        code = 0 if res["ok"] else (2 if res.get("error") else 1)
    if args.json:
        print(json.dumps(res, ensure_ascii=False, indent=1))
        return code
    if res.get("error"):
        print(f"確認できません / cannot check {args.file}: {res['error']}")
    elif res["ok"]:
        print(f"運用センターはこのリビジョンを適用できます / the center may apply this revision: {args.file}")
    else:
        print(f"運用センターはこのリビジョンを適用できません / the center may not apply this revision: {args.file}")
        for r in res["refused"]:
            print(f"  - {r['key']} [{r['class']}]: {r['reason_ja']} / {r['reason_en']}")
        if any(r["how"] == "present" for r in res["refused"]):
            print("  機器ごとの設定は省略してください (機器の値のままになります) / leave local-only settings out: "
                  "the box keeps its own values")
    return code
def cmd_setup(args: argparse.Namespace) -> int:
    from agent.setup import Setup, SetupError, SetupOptions

    opts = SetupOptions(config=str(args.config or DEFAULT_CONFIG), serial=args.serial or "", code=args.code or "",
                        sheet_file=args.sheet or "", interactive=args.interactive, refetch=args.refetch,
                        lan_port=args.lan_port or "", wan_port=args.wan_port or "", detect=not args.no_detect,
                        dhcp=not args.no_dhcp, portcheck=not args.no_portcheck)
    try:
        report = Setup(opts).run()
    except SetupError as exc:
        print(f"エラー / error: {exc}", file=sys.stderr)
        return exc.code
    if args.json:
        print(json.dumps(report.as_dict(), ensure_ascii=False))
    return 0 if report.ok else 1


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vcr-agent", description="VCR116w UTM agent (bridge-mode inline inspection)")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True)

    b = sub.add_parser("bridge", help="bring the bridge and the agent's ruleset up or down")
    b.add_argument("action", choices=["up", "down"])
    b.add_argument("-c", "--config")
    b.set_defaults(fn=cmd_bridge)

    for name, help_text, fn in (
        ("run", "run the agent (bridge ruleset, NFQUEUE workers, alarms)", cmd_run),
        ("reload", "re-read the config and rules without a restart (SIGHUP)", cmd_reload),
        ("check-config", "validate a configuration file without applying it", cmd_check_config),
        ("status", "show the running agent's status and counters", cmd_status),
    ):  # commands that take nothing but the config file
        cp = sub.add_parser(name, help=help_text)
        cp.add_argument("-c", "--config")
        cp.set_defaults(fn=fn)

    pc = sub.add_parser("pcap", help="run the pipeline over a pcap file (like suricata -r)")
    pc.add_argument("-r", required=True, metavar="FILE", help="pcap or pcapng file")
    pc.add_argument("-c", "--config", help="agent config (engines section is used)")
    pc.add_argument("-S", dest="rules", action="append", metavar="RULES", help="IPS rule file (exclusively; repeatable)")
    pc.add_argument("-l", metavar="LOGDIR", help="write LOGDIR/eve.json instead of stdout")
    pc.add_argument("-k", default="none", choices=["none", "all", "auto"], help="checksum checks (accepted for Suricata compatibility; checksums are not validated)")
    pc.add_argument("--simulate-ips", action="store_true", help="drop verdicts really drop (IPS), as inline")
    pc.add_argument("--set", action="append", metavar="KEY=VALUE", help="Suricata-style setting, e.g. stream.midstream=true")
    pc.add_argument("--clamd", metavar="SOCKET", help="scan the HTTP files with this clamd (antivirus alerts and "
                                                      "fileinfo records); without it, engines.av of -c is used")
    pc.set_defaults(fn=cmd_pcap)

    cat = sub.add_parser("category", help="web filter categories and verdict of hosts or URLs")
    cat.add_argument("names", nargs="+", metavar="HOST_OR_URL")
    cat.add_argument("-c", "--config")
    cat.add_argument("--db", help="a UT1-layout category folder instead of the installed bundle")
    cat.add_argument("--json", action="store_true", help="one JSON object per input")
    cat.set_defaults(fn=cmd_category)

    ms = sub.add_parser("mail-score", help="score mail files (RFC 822) for spam and viruses exactly as the box would")
    ms.add_argument("files", nargs="+", metavar="FILE", help="a message file (.eml; an mbox From_ line is ignored)")
    ms.add_argument("--json", action="store_true", help="one JSON object per file")
    ms.add_argument("--sent", action="store_true", help="as mail sent by a PC of the office (default: received)")
    ms.add_argument("--from", dest="mail_from", metavar="ADDR", help="envelope sender (SMTP MAIL FROM)")
    ms.add_argument("--rcpt", action="append", metavar="ADDR", help="envelope recipient (repeatable)")
    ms.add_argument("--helo", help="the SMTP client's HELO name")
    ms.add_argument("--ip", help="the SMTP client's address")
    ms.add_argument("-c", "--config")
    ms.set_defaults(fn=cmd_mail_score)

    bu = sub.add_parser("bundles", help="signed signature bundles: status, check now, roll back one kind")
    bu.add_argument("action", choices=["status", "check", "rollback"])
    bu.add_argument("kinds", nargs="*", metavar="KIND", help="ips, threatintel, webcat, av, antispam (default: all)")
    bu.add_argument("-c", "--config")
    bu.set_defaults(fn=cmd_bundles)

    act = sub.add_parser("activate", help="activate the box at the operations center (activation code + serial)")
    act.add_argument("code", metavar="CODE", help="the activation code (or, with --replace, the replacement code)")
    act.add_argument("--serial", help="the box's serial number (default: center.serial, then the DMI serial)")
    act.add_argument("--replace", action="store_true",
                     help="this box replaces another one (the operator issued a replacement code); overwrites a stored credential")
    act.add_argument("--json", action="store_true")
    act.add_argument("-c", "--config")
    act.set_defaults(fn=cmd_activate)

    cf = sub.add_parser("config", help="remote configuration: local revision history, rollback, check a revision")
    cfs = cf.add_subparsers(dest="action", required=True)
    ch = cfs.add_parser("history", help="the local revision history")
    ch.add_argument("--json", action="store_true")
    ch.add_argument("-c", "--config")
    cr = cfs.add_parser("rollback", help="make a revision of the history live again")
    cr.add_argument("revision", nargs="?", type=int, metavar="REVISION", help="the revision to make live")
    cr.add_argument("--json", action="store_true")
    cr.add_argument("-c", "--config")
    cc = cfs.add_parser("check-remote", help="may the center apply this revision (only allowed keys)? "
                                             "exit 0 yes, 1 refused keys, 2 unreadable")
    cc.add_argument("file", metavar="FILE", help="the revision (YAML)")
    cc.add_argument("--json", action="store_true")
    cc.add_argument("-c", "--config", help="the box's config: refuse only changes of its local-only values "
                                           "(default: the center's view, local-only keys must be left out)")
    cf.set_defaults(fn=cmd_config)

    port = sub.add_parser("portcheck", help="test the outbound ports the service needs (table 4), per feature")
    port.add_argument("--json", action="store_true")
    port.add_argument("-c", "--config")
    port.set_defaults(fn=cmd_portcheck)

    su = sub.add_parser("setup", help="set the box up from its settings sheet: fetch/check the sheet, detect the ports, "
                                      "write the config, bridge up, port check, activate (safe to run again)")
    su.add_argument("--serial", help="the box's serial (default: center.serial, then the DMI serial)")
    su.add_argument("--code", help=f"the activation code from the quick-start guide (or ${'VCR_ACTIVATION_CODE'}; "
                                   "asked for at a terminal)")
    src = su.add_mutually_exclusive_group()
    src.add_argument("--sheet", metavar="FILE", help="take the settings sheet from a file (YAML/JSON; also a config "
                                                     "made by the center)")
    src.add_argument("--interactive", action="store_true", help="type the settings sheet in")
    src.add_argument("--refetch", action="store_true", help="fetch the sheet from the center even if the config has one")
    su.add_argument("--lan-port", help="the office-side port (skips the detection)")
    su.add_argument("--wan-port", help="the router-side port (skips the detection)")
    su.add_argument("--no-detect", action="store_true", help="keep the configured port names")
    su.add_argument("--no-dhcp", action="store_true", help="never take a temporary DHCP address to reach the center")
    su.add_argument("--no-portcheck", action="store_true")
    su.add_argument("--json", action="store_true", help="also print the report as JSON at the end")
    su.add_argument("-c", "--config")
    su.set_defaults(fn=cmd_setup)

    cs = sub.add_parser("center-status", help="activation and operations-center link state")
    cs.add_argument("--json", action="store_true")
    cs.add_argument("-c", "--config")
    cs.set_defaults(fn=cmd_center_status)

    return p


def _known_error(exc: Exception) -> int | None:
    if isinstance(exc, ConfigError):
        print(f"設定エラー / configuration error: {exc}", file=sys.stderr)
        print("何も適用されていません / nothing was applied", file=sys.stderr)
        return 2
    from agent.dataplane.bridge import BridgeError

    if isinstance(exc, BridgeError):
        print(f"エラー / error: {exc}", file=sys.stderr)
        return 1
    return None


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser().parse_args(argv), _known_error)


if __name__ == "__main__":
    sys.exit(main())
