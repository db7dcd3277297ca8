"""The ``vcr-opscenter`` command line: the server and the operator's commands.

Each subcommand is one ``add_*`` function that registers a parser and sets ``fn``; a new command is
one more function and one more line in ``COMMANDS``. Operator commands work on the database
directly (``--db URL`` or the config file), so they also work while the server is down.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any, Callable

from opscenter.settings import Settings, SettingsError, load_settings

log = logging.getLogger("vcr-opscenter")


def _settings(args: argparse.Namespace, **overrides: Any) -> Settings:
    return load_settings(getattr(args, "config", None), db=getattr(args, "db", None), **overrides)


def _db(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from opscenter.db import Database

    settings = _settings(args)
    db = Database(settings.db, pool_size=2, max_overflow=2, busy_timeout_ms=settings.sqlite_busy_timeout_ms)
    db.create_tables()
    return db, settings


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=1, ensure_ascii=False))


def _db_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--config", help="settings file (YAML; default $VCR_OPSCENTER_CONFIG or "
                                          "/etc/vcr-opscenter/opscenter.yaml)")
    p.add_argument("--db", help="database URL: sqlite:///PATH or postgresql+psycopg://USER@HOST/DB")


# serve ---------------------------------------------------------------------------------------------

def cmd_serve(args: argparse.Namespace) -> int:
    from opscenter.server import serve

    overrides = {k: getattr(args, k) for k in ("cert", "key", "listen", "workers", "heartbeat_interval",
                                               "ready_file", "log_level", "tuf_repo", "categories")}
    if args.html_page:
        overrides["html_page"] = True
    if args.access_log:
        overrides["access_log"] = True
    return serve(_settings(args, **overrides))


def add_serve(sub: Any) -> None:
    p = sub.add_parser("serve", help="run the operations center (HTTPS)")
    _db_options(p)
    p.add_argument("--cert", help="server certificate (PEM), e.g. from init-ca")
    p.add_argument("--key", help="server private key (PEM)")
    p.add_argument("--listen", help="HOST:PORT (default 0.0.0.0:443)")
    p.add_argument("--workers", type=int, help="worker processes (default 1; more for PostgreSQL)")
    p.add_argument("--heartbeat-interval", type=float, help="seconds between check-ins (default 60)")
    p.add_argument("--ready-file", help="write JSON {listen, url, pid} here once accepting connections")
    p.add_argument("--html-page", action="store_true", help="serve the read-only operator page at /")
    p.add_argument("--tuf-repo", help="serve this TUF repository (vcr-opscenter tuf-init) at /tuf/")
    p.add_argument("--categories", help="UT1-layout category folder for the boxes' unknown-name look-ups")
    p.add_argument("--access-log", action="store_true")
    p.add_argument("--log-level", choices=["critical", "error", "warning", "info", "debug"])
    p.set_defaults(fn=cmd_serve)


# init-ca -------------------------------------------------------------------------------------------

def cmd_init_ca(args: argparse.Namespace) -> int:
    from opscenter.ca import init_ca

    files = init_ca(args.dir, args.host or [], args.ip or [], backdate_days=args.backdate_days)
    print(f"CA 証明書 / CA certificate (ボックスに配布 / give this to the boxes): {files.ca_cert}")
    print(f"サーバー証明書 / server certificate: {files.cert}")
    print(f"サーバー鍵 / server key: {files.key}")
    print(f"起動 / start: vcr-opscenter serve --cert {files.cert} --key {files.key} --listen HOST:443")
    return 0


def add_init_ca(sub: Any) -> None:
    p = sub.add_parser("init-ca", help="create the lab CA and a server certificate")
    p.add_argument("--dir", required=True, help="output folder (ca.crt, ca.key, server.crt, server.key)")
    p.add_argument("--host", action="append", help="DNS name of the center (repeatable)")
    p.add_argument("--ip", action="append", nargs="+", help="IP address(es) of the center (repeatable)")
    p.add_argument("--backdate-days", type=int, default=7, help="certificates are valid from this many days ago")
    p.set_defaults(fn=cmd_init_ca)


# codes ---------------------------------------------------------------------------------------------

def _show_code(issued: Any, as_json: bool, label: str) -> None:
    if as_json:
        _print_json(issued.as_dict())
        return
    print(f"{label}: {issued.code}")
    print(f"  契約 / contract: {issued.contract_id}")
    print(f"  シリアル / serial: {issued.serial or '指定なし / any'}")
    print(f"  有効期限 / expires: {issued.as_dict()['expires_at'] or '-'}")
    print("  一度だけ使えます / single use")


def cmd_issue_code(args: argparse.Namespace) -> int:
    from opscenter.enroll import issue_code

    db, settings = _db(args)
    issued = issue_code(db, args.contract, serial=args.serial, term_days=args.term_days,
                        valid_days=args.valid_days or settings.code_valid_days,
                        default_term_days=settings.default_term_days)
    _show_code(issued, args.json, "アクティベーションコード / activation code")
    return 0


def add_issue_code(sub: Any) -> None:
    p = sub.add_parser("issue-code", help="issue an activation code for a contract")
    _db_options(p)
    p.add_argument("--contract", required=True)
    p.add_argument("--serial", help="bind the code to this box")
    p.add_argument("--term-days", type=int, help="license term (default 730 for a new contract)")
    p.add_argument("--valid-days", type=int, help="the code expires after this many days (default 90)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_issue_code)


def cmd_replace(args: argparse.Namespace) -> int:
    from opscenter.enroll import replacement_code

    db, settings = _db(args)
    try:
        issued = replacement_code(db, args.contract, serial=args.serial,
                                  valid_days=args.valid_days or settings.code_valid_days)
    except LookupError as exc:
        print(f"契約がありません / {exc}", file=sys.stderr)
        return 1
    _show_code(issued, args.json, "交換用コード / replacement code")
    if not args.json:
        print("  新しい機器で使うと契約が移り、旧機器のトークンは失効します / "
              "activating with it moves the contract to the new box and revokes the old box's token")
    return 0


def add_replace(sub: Any) -> None:
    p = sub.add_parser("replace", help="replacement flow: a code that moves a contract to a new box")
    _db_options(p)
    p.add_argument("contract")
    p.add_argument("--serial", help="serial of the new box")
    p.add_argument("--valid-days", type=int)
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_replace)


def cmd_revoke(args: argparse.Namespace) -> int:
    from opscenter.enroll import revoke

    db, _ = _db(args)
    if not revoke(db, args.device, reason=args.reason):
        print(f"有効な機器がありません / no active device {args.device}", file=sys.stderr)
        return 1
    print(f"失効しました / revoked: {args.device}")
    return 0


def add_revoke(sub: Any) -> None:
    p = sub.add_parser("revoke", help="revoke a box's token")
    _db_options(p)
    p.add_argument("device")
    p.add_argument("--reason", default="operator")
    p.set_defaults(fn=cmd_revoke)


# views ---------------------------------------------------------------------------------------------

def cmd_devices(args: argparse.Namespace) -> int:
    from opscenter.render import devices_text
    from opscenter.views import list_devices

    db, settings = _db(args)
    devs = list_devices(db, settings.offline_after_missed, include_revoked=args.all)
    _print_json(devs) if args.json else print(devices_text(devs))
    return 0


def add_devices(sub: Any) -> None:
    p = sub.add_parser("devices", help="devices: status, health, port check, versions")
    _db_options(p)
    p.add_argument("--all", action="store_true", help="include revoked boxes")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_devices)


def cmd_alarms(args: argparse.Namespace) -> int:
    from opscenter.alarms import recent
    from opscenter.render import alarms_text

    db, _ = _db(args)
    rows = recent(db, device_id=args.device, limit=args.limit)
    _print_json(rows) if args.json else print(alarms_text(rows))
    return 0


def add_alarms(sub: Any) -> None:
    p = sub.add_parser("alarms", help="recent alarms, newest first")
    _db_options(p)
    p.add_argument("--device")
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_alarms)


def cmd_events(args: argparse.Namespace) -> int:
    from opscenter.render import events_text
    from opscenter.views import list_events

    db, _ = _db(args)
    rows = list_events(db, device_id=args.device, kind=args.kind, limit=args.limit)
    _print_json(rows) if args.json else print(events_text(rows))
    return 0


def add_events(sub: Any) -> None:
    p = sub.add_parser("events", help="device events: activated, replaced, offline, online, revoked")
    _db_options(p)
    p.add_argument("--device")
    p.add_argument("--kind")
    p.add_argument("--limit", type=int, default=100)
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_events)


# tasks and desired versions ------------------------------------------------------------------------

def cmd_task(args: argparse.Namespace) -> int:
    from opscenter.fleet import add_task, list_tasks

    db, _ = _db(args)
    if args.action == "add":
        try:
            params = json.loads(args.params)
        except ValueError as exc:
            print(f"--params は JSON ではありません / --params is not JSON: {exc}", file=sys.stderr)
            return 2
        if not isinstance(params, dict):
            print("--params は JSON オブジェクト / --params must be a JSON object", file=sys.stderr)
            return 2
        try:
            task_id = add_task(db, args.device, args.kind, params)
        except LookupError as exc:
            print(f"機器がありません / {exc}", file=sys.stderr)
            return 1
        print(json.dumps({"task_id": task_id}) if args.json else f"タスクを登録しました / task queued: {task_id}")
        return 0
    rows = list_tasks(db, args.device)
    if args.json:
        _print_json(rows)
    else:
        from opscenter.render import table

        print(table(["ID", "機器 / device", "種別 / kind", "状態 / status", "更新 / updated", "詳細 / detail"],
                    [[str(r["task_id"]), r["device_id"], r["kind"], r["status"], r["updated_at"] or "",
                      r["detail"]] for r in rows]) if rows else "タスクはありません / no tasks")
    return 0


def add_task(sub: Any) -> None:
    p = sub.add_parser("task", help="queue a task for a box, or list tasks")
    p.add_argument("action", choices=["add", "list"])
    p.add_argument("device", nargs="?")
    p.add_argument("kind", nargs="?")
    _db_options(p)
    p.add_argument("--params", default="{}", help="JSON object")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_task)


def cmd_desired(args: argparse.Namespace) -> int:
    from opscenter.fleet import set_desired

    db, _ = _db(args)
    sigs = {}
    for item in args.signature or []:
        k, sep, v = item.partition("=")
        if not sep:
            print(f"--signature は NAME=VERSION / expected NAME=VERSION: {item}", file=sys.stderr)
            return 2
        sigs[k] = v
    body = set_desired(db, args.device or "*", agent_version=args.agent_version,
                       config_revision=args.config_revision, signatures=sigs)
    _print_json({"scope": args.device or "*", "desired": body})
    return 0


def add_desired(sub: Any) -> None:
    p = sub.add_parser("desired", help="set desired versions (all boxes, or one with --device)")
    _db_options(p)
    p.add_argument("--device")
    p.add_argument("--agent-version")
    p.add_argument("--config-revision", type=int)
    p.add_argument("--signature", action="append", metavar="NAME=VERSION")
    p.set_defaults(fn=cmd_desired)


# bench ---------------------------------------------------------------------------------------------

def cmd_bench(args: argparse.Namespace) -> int:
    from opscenter.bench import run_bench

    return run_bench(args)


def add_bench(sub: Any) -> None:
    from opscenter.bench import add_arguments

    p = sub.add_parser("bench", help="scale benchmark: thousands of simulated boxes over HTTPS")
    add_arguments(p)
    p.set_defaults(fn=cmd_bench)


def add_tuf(sub: Any) -> None:
    """tuf-init, publish, tuf-refresh: the TUF repository of signed bundles (opscenter/tufrepo.py)."""
    from opscenter.tufrepo import add_cli

    add_cli(sub)


COMMANDS: list[Callable[[Any], None]] = [
    add_serve, add_init_ca, add_issue_code, add_replace, add_revoke, add_devices, add_alarms, add_events,
    add_task, add_desired, add_bench, add_tuf,
]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vcr-opscenter", description="vcr-agent reference operations center")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True)
    for add in COMMANDS:
        add(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "ip", None):
        args.ip = [a for group in args.ip for a in group]
    if args.command == "task" and args.action == "add" and not (args.device and args.kind):
        parser.error("task add needs DEVICE and KIND")
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        return args.fn(args)
    except SettingsError as exc:
        print(f"設定エラー / settings error: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"エラー / error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        from sqlalchemy.exc import OperationalError

        if isinstance(exc, OperationalError):
            print(f"データベースを開けません / cannot open the database: {exc.orig or exc}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
