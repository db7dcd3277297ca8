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

from filters.climain import run_command
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
    from opscenter.textsafe import json_text

    print(json_text(data, indent=1))  # box-supplied strings: no raw control characters reach the terminal


def _list(args: argparse.Namespace, rows_of: Callable[[Any, Settings], Any], text: Callable[[Any], str]) -> int:
    """A listing command: ``rows_of(db, settings)`` as JSON with ``--json``, else as ``text`` renders them."""
    db, settings = _db(args)
    rows = rows_of(db, settings)
    _print_json(rows) if args.json else print(text(rows))
    return 0


def _add_listing(sub: Any, name: str, help: str, fn: Callable[[argparse.Namespace], int], *filters: str,
                 limit: int) -> None:
    """A command listing rows: database options, ``filters`` (``--device``...), ``--limit``, ``--json``."""
    p = sub.add_parser(name, help=help)
    _db_options(p)
    for flag in filters:
        p.add_argument(flag)
    p.add_argument("--limit", type=int, default=limit)
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=fn)


# The add_* functions below are argparse declarations: alike in shape (a parser, its options, --json,
# the handler), kept one per command so that each command's options read in one place.
def _db_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--config", help="settings file (YAML; default $VCR_OPSCENTER_CONFIG or "
                                          "/etc/vcr-opscenter/opscenter.yaml)")
    p.add_argument("--db", help="database URL: sqlite:///PATH or postgresql+psycopg://USER@HOST/DB")


# serve ---------------------------------------------------------------------------------------------

def cmd_serve(args: argparse.Namespace) -> int:
    from opscenter.server import serve

    overrides = {k: getattr(args, k) for k in ("cert", "key", "listen", "workers", "heartbeat_interval",
                                               "ready_file", "log_level", "tuf_repo", "categories",
                                               "operator_listen")}
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
    p.add_argument("--operator-listen", help="HOST:PORT of the operator listener: page, operator JSON, /docs, behind "
                                             "operator accounts (default 127.0.0.1:8443)")
    p.add_argument("--html-page", action="store_true", help="serve the read-only operator page at / of the operator "
                                                           "listener (the default)")
    p.add_argument("--tuf-repo", help="serve this TUF repository (vcr-opscenter tuf-init) at /tuf/")
    p.add_argument("--categories", help="UT1-layout category folder for the boxes' unknown-name look-ups")
    p.add_argument("--access-log", action="store_true")
    p.add_argument("--log-level", choices=["critical", "error", "warning", "info", "debug"])
    p.set_defaults(fn=cmd_serve)


# init-ca -------------------------------------------------------------------------------------------

def cmd_init_ca(args: argparse.Namespace) -> int:
    from opscenter.ca import init_ca

    from opscenter.report.signing import ensure_key

    files = init_ca(args.dir, args.host or [], args.ip or [], backdate_days=args.backdate_days)
    key, pub, _ = ensure_key(args.dir)  # the center's key for signed operating records (monthly reports)
    print(f"CA 証明書 / CA certificate (ボックスに配布 / give this to the boxes): {files.ca_cert}")
    print(f"サーバー証明書 / server certificate: {files.cert}")
    print(f"サーバー鍵 / server key: {files.key}")
    print(f"レポート署名鍵 / report signing key (settings: report_key): {key}; 公開鍵 / public key: {pub}")
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

    return _list(args, lambda db, settings: list_devices(db, settings.offline_after_missed,
                                                        include_revoked=args.all), devices_text)


def add_devices(sub: Any) -> None:
    p = sub.add_parser("devices", help="devices: status, health, port check, versions")
    _db_options(p)
    p.add_argument("--all", action="store_true", help="include revoked boxes")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_devices)


def cmd_alarms(args: argparse.Namespace) -> int:
    from opscenter.alarms import recent
    from opscenter.render import alarms_text

    return _list(args, lambda db, _: recent(db, device_id=args.device, limit=args.limit), alarms_text)


def add_alarms(sub: Any) -> None:
    _add_listing(sub, "alarms", "recent alarms, newest first", cmd_alarms, "--device", limit=50)


def cmd_events(args: argparse.Namespace) -> int:
    from opscenter.render import events_text
    from opscenter.views import list_events

    return _list(args, lambda db, _: list_events(db, device_id=args.device, kind=args.kind, limit=args.limit),
                 events_text)


def add_events(sub: Any) -> None:
    _add_listing(sub, "events", "device events: activated, replaced, offline, online, revoked", cmd_events,
                 "--device", "--kind", limit=100)


# tasks and desired versions ------------------------------------------------------------------------

def check_config_task(params: dict[str, Any]) -> list[str]:
    """Why the box would refuse this config task ([] = it may be queued): the box's own check
    (opscenter/configcheck.py). Anything but a clear yes refuses (fail closed)."""
    from opscenter.configcheck import check_remote

    revision, text = params.get("revision"), params.get("config")
    if not isinstance(revision, int) or isinstance(revision, bool) or revision < 1:
        return ["params.revision は 1 以上の整数 / params.revision must be an integer >= 1"]
    if not isinstance(text, str) or not text.strip():
        return ["params.config は設定 (YAML テキスト) / params.config must be the configuration as YAML text"]
    result = check_remote(text)
    if result.ok:
        return []
    return result.problems or [f"機器側の確認が通りませんでした / the box's check did not pass ({result.outcome}): "
                               f"{result.message}"]


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
        if args.kind == "config":
            reasons = check_config_task(params)
            if reasons:
                print("この設定リビジョンは機器が適用できないため登録しません / not queued: the box would refuse this "
                      "configuration revision", file=sys.stderr)
                for r in reasons:
                    print(f"  - {r}", file=sys.stderr)
                print("  機器ごとの設定 (コマンド・パス・信頼設定・管理通信) は省略してください / leave local-only "
                      "settings (commands, paths, trust settings, the management channel) out", file=sys.stderr)
                return 1
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


# operator accounts ---------------------------------------------------------------------------------

def _read_password(args: argparse.Namespace) -> str:
    """The new password: typed twice at a terminal, else the first line of stdin (never an argument)."""
    from opscenter.panel.cli import read_password

    return read_password()


def cmd_operator(args: argparse.Namespace) -> int:
    from opscenter import operators

    db, _ = _db(args)
    try:
        if args.action == "list":
            rows = operators.list_operators(db)
            if args.json:
                _print_json(rows)
            else:
                from opscenter.render import table

                print(table(["名前 / name", "作成 / created", "最終ログイン / last login"],
                            [[r["name"], r["created_at"] or "", r["last_login_at"] or "-"] for r in rows])
                      if rows else "オペレーターはいません / no operators")
            return 0
        if not args.name:
            print(f"operator {args.action} には NAME が必要 / operator {args.action} needs NAME", file=sys.stderr)
            return 2
        if args.action == "role":
            from opscenter.panel.cli import cmd_operator_role

            return cmd_operator_role(args, db)
        if args.action == "remove":
            if not operators.remove(db, args.name):
                print(f"オペレーター {args.name} はいません / no operator {args.name}", file=sys.stderr)
                return 1
            print(f"削除しました / removed: {args.name}")
            return 0
        operators.check_name(args.name)
        password = _read_password(args)
        if args.action == "add":
            operators.add(db, args.name, password)
            print(f"オペレーターを登録しました / operator added: {args.name}")
            if args.role:
                from opscenter.panel.cli import cmd_operator_role

                return cmd_operator_role(args, db)
        else:
            operators.set_password(db, args.name, password)
            print(f"パスワードを変更しました / password changed: {args.name}")
    except operators.OperatorError as exc:
        print(f"エラー / error: {exc}", file=sys.stderr)
        return 1
    return 0


def add_operator(sub: Any) -> None:
    p = sub.add_parser("operator", help="operator accounts of the operator listener (add, passwd, remove, list)")
    p.add_argument("action", choices=["add", "passwd", "remove", "list", "role"])
    p.add_argument("name", nargs="?", help="operator name (letters, digits, . _ @ -)")
    p.add_argument("role", nargs="?", choices=["admin", "operator"],
                   help="role: show or set what the operator may do in the console (default for new accounts: "
                        "operator; admins also manage customer accounts and replacement codes)")
    _db_options(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_operator)


def add_reports(sub: Any) -> None:
    """report, verify-report, report-key: monthly reports and the signed operating record (opscenter/report/)."""
    from opscenter.report.cli import add_cli

    add_cli(sub, _db_options)


def add_customer(sub: Any) -> None:
    """customer add|list|passwd|disable|enable|reset-totp: the control panel's accounts (opscenter/panel/cli.py)."""
    from opscenter.panel.cli import add_customer_parser

    add_customer_parser(sub, _db_options, _db)


def add_tuf(sub: Any) -> None:
    """tuf-init, publish, tuf-refresh: the TUF repository of signed bundles (opscenter/tufrepo.py)."""
    from opscenter.tufrepo import add_cli

    add_cli(sub)


# settings sheets, installation confirmations, notifications (the customer's side) ------------------

def _sheet_problems(exc: Any) -> None:
    print("設定シートに問題があります / the settings sheet has problems:", file=sys.stderr)
    for pr in exc.problems:
        print(f"  - {pr.field}: {pr.ja}", file=sys.stderr)
        print(f"    {' ' * len(pr.field)}  {pr.en}", file=sys.stderr)
    print("保存していません / nothing was stored", file=sys.stderr)


def cmd_sheet(args: argparse.Namespace) -> int:
    from filters.settingsheet import SheetError
    from opscenter import sheets

    db, settings = _db(args)
    if args.action == "list":
        rows = sheets.list_sheets(db, args.contract)
        if args.out == "json":
            _print_json(rows)
        else:
            from opscenter.render import table

            print(table(["契約 / contract", "シリアル / serial", "設置日 / install date", "IP", "担当 / contact",
                         "更新 / updated", "取得 / fetched"],
                        [[r["contract_id"], r["serial"], r["sheet"].get("install_date") or "",
                          r["sheet"].get("management_ip") or "", (r["sheet"].get("contact") or {}).get("name", ""),
                          r["updated_at"] or "", r["fetched_at"] or "-"] for r in rows])
                  if rows else "設定シートはありません / no settings sheets")
        return 0
    if not args.serial:
        print(f"sheet {args.action} には --serial が必要 / sheet {args.action} needs --serial", file=sys.stderr)
        return 2
    if args.action == "delete":
        if not sheets.delete_sheet(db, args.serial):
            print(f"設定シートがありません / no settings sheet for serial {args.serial}", file=sys.stderr)
            return 1
        print(f"削除しました / deleted: {args.serial}")
        return 0
    if args.action == "show":
        row = sheets.get_sheet(db, args.serial)
        if row is None:
            print(f"設定シートがありません / no settings sheet for serial {args.serial}", file=sys.stderr)
            return 1
        kw = {"serial": args.serial, "contract_id": row["contract_id"], "center_url": args.center_url or settings.public_url}
        if args.box_config:
            if not kw["center_url"]:
                print("注意: 運用センターの URL がありません (--center-url か public_url) / note: no center URL "
                      "(--center-url or the public_url setting); the box keeps its shipped center.url", file=sys.stderr)
            print(sheets.box_config_yaml(row["sheet"], **kw), end="")
            return 0
        _print_json({**row, "config": sheets.box_config(row["sheet"], **kw)})
        return 0
    # set
    if not args.contract:
        print("sheet set には --contract が必要 / sheet set needs --contract", file=sys.stderr)
        return 2
    if bool(args.file) == bool(args.json):
        print("--file か --json のどちらかを指定 / give either --file FILE or --json TEXT", file=sys.stderr)
        return 2
    try:
        if args.file:
            text = sys.stdin.read() if args.file == "-" else open(args.file, encoding="utf-8").read()
            data = sheets.parse_sheet_text(text)
        else:
            data = json.loads(sys.stdin.read() if args.json == "-" else args.json)
    except OSError as exc:
        print(f"ファイルを読めません / cannot read {args.file}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except ValueError as exc:  # JSON and YAML errors
        print(f"設定シートを読めません / cannot parse the sheet: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # yaml.YAMLError
        print(f"設定シートを読めません / cannot parse the sheet: {exc}", file=sys.stderr)
        return 2
    try:
        out = sheets.set_sheet(db, args.contract, args.serial, data, operator=args.operator or "cli",
                               new_code=args.new_code, code_valid_days=settings.code_valid_days,
                               default_term_days=settings.default_term_days)
    except SheetError as exc:
        _sheet_problems(exc)
        return 1
    if args.guide:
        from opscenter.sheets import quickstart_text

        with open(args.guide, "w", encoding="utf-8") as fh:
            fh.write(quickstart_text(out["serial"], out["contract_id"], out["sheet"], out["activation_code"]))
    if args.out == "json":
        _print_json(out)
        return 0
    print(f"設定シートを保存しました / settings sheet stored: contract {out['contract_id']}, serial {out['serial']}")
    if out["activation_code"]:
        print(f"  アクティベーションコード / activation code: {out['activation_code']}")
        print(f"  (シリアル {out['serial']} 専用、一度だけ使えます、有効期限 {out['code_expires_at'] or '-'} / "
              f"bound to serial {out['serial']}, single use, expires {out['code_expires_at'] or '-'})")
        print("  クイックスタートガイドに記入してお客様にお渡しください / write it into the quick-start guide for "
              "the customer" + (f" ({args.guide})" if args.guide else " (--guide FILE writes it)"))
    elif out["code_status"] == "valid":
        print("  以前に発行したアクティベーションコードが引き続き有効です (--new-code で再発行) / the activation code "
              "issued earlier is still valid (--new-code issues another)")
    else:
        print("  この機器はアクティベーション済みです / this box is already activated")
    print(f"  機器の設定 / the box's configuration: vcr-opscenter sheet show --serial {out['serial']} --box-config")
    print(f"  機器側 / on the box: vcr-agent setup --serial {out['serial']}")
    return 0


def add_sheet(sub: Any) -> None:
    p = sub.add_parser("sheet", help="settings sheets (設定シート): set (check, store, issue a code), show, list, delete")
    p.add_argument("action", choices=["set", "show", "list", "delete"])
    _db_options(p)
    p.add_argument("--contract")
    p.add_argument("--serial")
    p.add_argument("--file", help="set: the sheet as YAML or JSON ('-': stdin)")
    p.add_argument("--json", help="set: the sheet as a JSON text ('-': stdin)")
    p.add_argument("--new-code", action="store_true", help="set: issue a new activation code even if one is valid")
    p.add_argument("--operator", help="set: who entered it (default: cli)")
    p.add_argument("--guide", metavar="FILE", help="set: write the box's quick-start guide (with the new activation "
                                                   "code) to FILE")
    p.add_argument("--box-config", action="store_true", help="show: print the box's configuration (YAML)")
    p.add_argument("--center-url", help="show --box-config: the center URL for the box (default: public_url)")
    p.add_argument("--out", choices=["text", "json"], default="text")
    p.set_defaults(fn=cmd_sheet)


def cmd_confirmations(args: argparse.Namespace) -> int:
    from opscenter.confirm import confirmations_text, list_confirmations

    return _list(args, lambda db, _: list_confirmations(db, contract_id=args.contract, status=args.status),
                 confirmations_text)


def add_confirmations(sub: Any) -> None:
    p = sub.add_parser("confirmations", help="remote installation confirmation (設置確認) of each box")
    _db_options(p)
    p.add_argument("--contract")
    p.add_argument("--status", choices=["confirmed", "pending", "not_installed"])
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_confirmations)


def cmd_notify(args: argparse.Namespace) -> int:
    from opscenter import notify

    db, settings = _db(args)
    if args.action == "set":
        kw: dict[str, Any] = {}
        if args.kinds is not None:
            kw["kinds"] = [k for k in args.kinds.split(",") if k]
        if args.window_minutes is not None:
            kw["window_s"] = int(args.window_minutes * 60)
        if args.offline_minutes is not None:
            kw["offline_after_s"] = int(args.offline_minutes * 60)
        if args.recipients is not None:
            kw["recipients"] = [r.strip() for r in args.recipients.split(",") if r.strip()]
        if args.on or args.off:
            kw["enabled"] = bool(args.on)
        notify.set_prefs(db, args.contract, settings, **kw)
    prefs = notify.get_prefs(db, args.contract, settings)
    prefs["effective_recipients"] = notify.recipients_of(db, args.contract, prefs)
    if args.json:
        _print_json(prefs)
        return 0
    print(f"契約 / contract {args.contract}: {'有効 / on' if prefs['enabled'] else '無効 / off'}"
          f"{' (既定値 / defaults)' if prefs.get('default') else ''}")
    print(f"  種類 / kinds: {', '.join(prefs['kinds']) or '-'}")
    print(f"  まとめる時間 / digest window: {prefs['window_s'] // 60} 分 / min ({prefs['window_s']} s)")
    print(f"  オフライン通知 / offline after: {prefs['offline_after_s'] // 60} 分 / min")
    print(f"  宛先 / recipients: {', '.join(prefs['effective_recipients']) or 'なし / none'}"
          f"{'' if prefs['recipients'] else ' (設定シートの担当者 / the settings sheets contacts)'}")
    return 0


def add_notify(sub: Any) -> None:
    p = sub.add_parser("notify", help="mail notification preferences of a contract (show, set)")
    p.add_argument("action", choices=["show", "set"])
    _db_options(p)
    p.add_argument("--contract", required=True)
    p.add_argument("--kinds", help="comma-separated: severe,offline,online")
    p.add_argument("--window-minutes", type=float, help="digest window of severe alarms")
    p.add_argument("--offline-minutes", type=float, help="mail when a box is offline this long")
    p.add_argument("--recipients", help="comma-separated mail addresses ('' = the settings sheets' contacts)")
    p.add_argument("--on", action="store_true")
    p.add_argument("--off", action="store_true")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_notify)


def cmd_notifications(args: argparse.Namespace) -> int:
    from opscenter.notify import list_notifications, notifications_text

    return _list(args, lambda db, _: list_notifications(db, contract_id=args.contract, limit=args.limit),
                 notifications_text)


def add_notifications(sub: Any) -> None:
    _add_listing(sub, "notifications", "notification mails: open digests, sent, failed", cmd_notifications,
                 "--contract", limit=50)


COMMANDS: list[Callable[[Any], None]] = [
    add_serve, add_init_ca, add_issue_code, add_replace, add_revoke, add_devices, add_alarms, add_events,
    add_task, add_desired, add_tuf, add_operator, add_customer, add_sheet, add_confirmations, add_notify,
    add_notifications, add_reports,
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
    return run_command(args, _known_error)


def _known_error(exc: Exception) -> int | None:
    if isinstance(exc, (SettingsError, ValueError)):
        what = "設定エラー / settings error" if isinstance(exc, SettingsError) else "エラー / error"
        print(f"{what}: {exc}", file=sys.stderr)
        return 2
    from sqlalchemy.exc import OperationalError

    if isinstance(exc, OperationalError):
        print(f"データベースを開けません / cannot open the database: {exc.orig or exc}", file=sys.stderr)
        return 1
    return None


if __name__ == "__main__":
    sys.exit(main())
