"""The ``vcr-agent`` command line."""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any, Callable

from agent.config import DEFAULT_CONFIG, AgentConfig, load_config, load_yaml
from filters.engine import ConfigError

log = logging.getLogger("vcr-agent")


def _config(path: str | None) -> AgentConfig:
    return load_config(path or DEFAULT_CONFIG)


def cmd_bridge(args: argparse.Namespace) -> int:
    from agent.bridge import BridgeControl

    ctl = BridgeControl(_config(args.config))
    ctl.up() if args.action == "up" else ctl.down()
    print(f"bridge {args.action}: OK")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from agent.daemon import Daemon

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
    from filters.registry import build_engines

    cfg = _config(args.config)
    engines = build_engines(cfg)
    print(f"設定は正常です / configuration OK: {args.config or DEFAULT_CONFIG}")
    for e in engines:
        print(f"  {e.name}: {json.dumps(e.summary(), ensure_ascii=False)}")
    return 0


def cmd_pcap(args: argparse.Namespace) -> int:
    from agent.offline import OfflineOptions, offline_config, run_pcap

    base: dict[str, Any] | None = None
    if args.config:
        base = load_yaml(args.config)
        if not isinstance(base, dict):
            raise ConfigError("expected a mapping at the top level", path=args.config)
    try:
        cfg = offline_config(base, args.set or [], rule_files=args.rules or [])
    except ConfigError as exc:
        raise exc.within(path=args.config or exc.path) from None
    if args.config:
        from filters.registry import build_engines

        build_engines(cfg, path=args.config)
    opts = OfflineOptions(
        pcap=Path(args.r),
        log_dir=Path(args.l) if args.l else None,
        simulate_ips=args.simulate_ips,
        checksum_mode=args.k,
        sets=args.set or [],
    )
    summary = run_pcap(opts, cfg)
    print(
        f"pcap: {summary['packets']} packets, {summary['accepted']} accepted, {summary['dropped']} dropped",
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


def cmd_verify(args: argparse.Namespace) -> int:
    from agent.verify import main as verify_main

    return verify_main(args)


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
    from agent.updates import BundleUpdater

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
    from agent.center import ActivationError, LinkConfigError, activate

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
    from agent.portcheck import endpoints, format_text, run_portcheck

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
    from agent.center import LinkConfigError, load_state

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


def cmd_lab(args: argparse.Namespace) -> int:
    from agent.demo import run_demo, lab_down, lab_up

    actions: dict[str, Callable[[argparse.Namespace], int]] = {"up": lab_up, "down": lab_down, "demo": run_demo}
    return actions[args.action](args)


def cmd_bench(args: argparse.Namespace) -> int:
    if args.suite == "filter":
        from agent.benchfilter import run_filter_bench

        args.prefix = args.prefix or "vbf"
        return run_filter_bench(args)
    from agent.bench import run_bench

    args.prefix = args.prefix or "vb"
    return run_bench(args)


def _restore_after_replace(args: argparse.Namespace, state: dict[str, Any]) -> int:
    """A replacement box: decrypt the contract's latest backup and make it this box's config."""
    from agent.backup import BackupError
    from agent.center import load_state
    from agent.remoteconfig import ConfigTaskError, restore_backup

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
    """``vcr-agent config history`` / ``config rollback REVISION``: the local revision history."""
    import datetime as dt

    from agent.remoteconfig import ConfigTaskError, RemoteConfig

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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vcr-agent", description="VCR116w UTM agent (bridge-mode inline inspection)")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True)

    b = sub.add_parser("bridge", help="bring the bridge and the agent's ruleset up or down")
    b.add_argument("action", choices=["up", "down"])
    b.add_argument("-c", "--config")
    b.set_defaults(fn=cmd_bridge)

    r = sub.add_parser("run", help="run the agent (bridge ruleset, NFQUEUE workers, alarms)")
    r.add_argument("-c", "--config")
    r.set_defaults(fn=cmd_run)

    rl = sub.add_parser("reload", help="re-read the config and rules without a restart (SIGHUP)")
    rl.add_argument("-c", "--config")
    rl.set_defaults(fn=cmd_reload)

    c = sub.add_parser("check-config", help="validate a configuration file without applying it")
    c.add_argument("-c", "--config")
    c.set_defaults(fn=cmd_check_config)

    s = sub.add_parser("status", help="show the running agent's status and counters")
    s.add_argument("-c", "--config")
    s.set_defaults(fn=cmd_status)

    pc = sub.add_parser("pcap", help="run the pipeline over a pcap file (like suricata -r)")
    pc.add_argument("-r", required=True, metavar="FILE", help="pcap or pcapng file")
    pc.add_argument("-c", "--config", help="agent config (engines section is used)")
    pc.add_argument("-S", dest="rules", action="append", metavar="RULES", help="IPS rule file (exclusively; repeatable)")
    pc.add_argument("-l", metavar="LOGDIR", help="write LOGDIR/eve.json instead of stdout")
    pc.add_argument("-k", default="none", choices=["none", "all", "auto"], help="checksum checks (accepted for Suricata compatibility; checksums are not validated)")
    pc.add_argument("--simulate-ips", action="store_true", help="drop verdicts really drop (IPS), as inline")
    pc.add_argument("--set", action="append", metavar="KEY=VALUE", help="Suricata-style setting, e.g. stream.midstream=true")
    pc.set_defaults(fn=cmd_pcap)

    cat = sub.add_parser("category", help="web filter categories and verdict of hosts or URLs")
    cat.add_argument("names", nargs="+", metavar="HOST_OR_URL")
    cat.add_argument("-c", "--config")
    cat.add_argument("--db", help="a UT1-layout category folder instead of the installed bundle")
    cat.add_argument("--json", action="store_true", help="one JSON object per input")
    cat.set_defaults(fn=cmd_category)

    v = sub.add_parser("verify", help="run the suricata-verify peer suite through the pcap mode")
    v.add_argument("--root", help="suricata-verify folder (default: ../shared/peer/suricata-verify)")
    v.add_argument("--case", action="append", help="only this case (repeatable)")
    v.add_argument("--json", help="write the results as JSON here")
    v.add_argument("--strict", action="store_true", help="exit 1 unless every case passes")
    v.set_defaults(fn=cmd_verify)

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

    cf = sub.add_parser("config", help="remote configuration: local revision history and rollback")
    cf.add_argument("action", choices=["history", "rollback"])
    cf.add_argument("revision", nargs="?", type=int, metavar="REVISION", help="rollback: the revision to make live")
    cf.add_argument("--json", action="store_true")
    cf.add_argument("-c", "--config")
    cf.set_defaults(fn=cmd_config)

    port = sub.add_parser("portcheck", help="test the outbound ports the service needs (table 4), per feature")
    port.add_argument("--json", action="store_true")
    port.add_argument("-c", "--config")
    port.set_defaults(fn=cmd_portcheck)

    cs = sub.add_parser("center-status", help="activation and operations-center link state")
    cs.add_argument("--json", action="store_true")
    cs.add_argument("-c", "--config")
    cs.set_defaults(fn=cmd_center_status)

    lab = sub.add_parser("lab", help="the simulated office in network namespaces")
    lab.add_argument("action", choices=["up", "down", "demo"], nargs="?", default="demo")
    lab.add_argument("--prefix", default="vcr")
    lab.set_defaults(fn=cmd_lab)

    bench = sub.add_parser("bench", help="benchmarks in the lab, written to docs/benchmarks.md")
    bench.add_argument("--runs", type=int, default=5)  # the bulk rate over veth swings by a quarter between runs: five give a steadier median
    bench.add_argument("--seconds", type=float, default=5.0)
    bench.add_argument("--out", default="docs/benchmarks.md")
    bench.add_argument("--prefix", default=None, help="lab prefix (default vb, vbf for --suite filter)")
    bench.add_argument("--suite", choices=["dataplane", "filter"], default="dataplane",
                       help="dataplane: the data path against the bare bridge; filter: web filter and threat protection")
    bench.set_defaults(fn=cmd_bench)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return args.fn(args)
    except ConfigError as exc:
        print(f"設定エラー / configuration error: {exc}", file=sys.stderr)
        print("何も適用されていません / nothing was applied", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        from agent.bridge import BridgeError

        if isinstance(exc, BridgeError):
            print(f"エラー / error: {exc}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
