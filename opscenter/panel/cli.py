"""``vcr-opscenter customer ...`` (customer administrator accounts) and ``vcr-opscenter operator role NAME
ROLE``. Registered in opscenter/cli.py; like the other operator commands they work on the database
directly. Passwords come from the terminal (typed twice) or one line of stdin, never the command line;
``customer add --generate`` makes one and prints it once.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Callable

from opscenter.panel import accounts


def read_password(error: type[ValueError] = ValueError) -> str:
    """A new password: typed twice at a terminal (``error`` when they differ), else the first line of
    stdin (never an argument). Also the operators' (opscenter/cli.py)."""
    import getpass

    if sys.stdin.isatty():
        first = getpass.getpass("パスワード / password: ")
        if getpass.getpass("もう一度 / again: ") != first:
            raise error("パスワードが一致しません / the passwords differ")
        return first
    return sys.stdin.readline().rstrip("\r\n")


def _read_password() -> str:
    return read_password(accounts.AccountError)


def cmd_customer(args: argparse.Namespace, open_db: Callable[[argparse.Namespace], Any]) -> int:
    db, _settings = open_db(args)
    try:
        if args.action == "list":  # same shape as `operator list` (opscenter/cli.py): other rows and columns
            rows = accounts.list_customers(db, args.contract)
            if args.json:
                print(json.dumps(rows, ensure_ascii=False, indent=1))
                return 0
            from opscenter.render import table

            print(table(["ID", "ログイン名 / name", "契約 / contract", "表示名 / display", "TOTP", "無効 / disabled",
                         "最終ログイン / last login"],
                        [[str(r["id"]), r["name"], r["contract_id"], r["display_name"], "on" if r["totp"] else "-",
                          "yes" if r["disabled"] else "-", r["last_login_at"] or "-"] for r in rows])
                  if rows else "お客様アカウントはありません / no customer accounts")
            return 0
        if not args.name:
            print(f"customer {args.action} には NAME が必要 / customer {args.action} needs NAME", file=sys.stderr)
            return 2
        if args.action == "add":
            if not args.contract:
                print("customer add には --contract が必要 / customer add needs --contract", file=sys.stderr)
                return 2
            accounts.check_name(args.name)
            password = accounts.generate_password() if args.generate else _read_password()
            acct = accounts.add_customer(db, args.contract, args.name, password, display_name=args.display_name or "",
                                         created_by="cli")
            print(f"お客様アカウントを登録しました / customer account added: {acct.name} (契約 / contract "
                  f"{acct.contract_id})")
            if args.generate:
                print(f"初期パスワード / initial password: {password}")
            return 0
        acct = accounts.find_customer(db, args.name)
        if acct is None:
            print(f"お客様アカウント {args.name} はありません / no customer account {args.name}", file=sys.stderr)
            return 1
        from opscenter.panel.sessions import SessionStore

        sessions = SessionStore(db, idle_minutes=1, max_hours=1)
        if args.action == "passwd":
            accounts.set_customer_password(db, acct.id, _read_password())
            sessions.end_all("customer", str(acct.id))
            print(f"パスワードを変更しました / password changed: {acct.name}")
        elif args.action in ("disable", "enable"):
            accounts.set_customer_disabled(db, acct.id, args.action == "disable")
            if args.action == "disable":
                sessions.end_all("customer", str(acct.id))
            print(f"{'無効にしました / disabled' if args.action == 'disable' else '有効にしました / enabled'}: "
                  f"{acct.name}")
        elif args.action == "reset-totp":
            accounts.disable_totp(db, "customer", str(acct.id))
            print(f"2 段階認証を解除しました / TOTP reset: {acct.name}")
    except accounts.AccountError as exc:
        print(f"エラー / error: {exc}", file=sys.stderr)
        return 1
    return 0


def add_customer_parser(sub: Any, db_options: Callable[[argparse.ArgumentParser], None],
                        open_db: Callable[[argparse.Namespace], Any]) -> None:
    p = sub.add_parser("customer", help="customer administrator accounts of the control panel "
                                        "(add, list, passwd, disable, enable, reset-totp)")
    actions = p.add_subparsers(dest="action", required=True)
    helps = {"add": "add an account bound to one contract", "list": "list the accounts",
             "passwd": "set a new password (ends the account's sessions)",
             "disable": "disable an account (ends its sessions)", "enable": "enable an account again",
             "reset-totp": "turn off the account's two-step verification (a lost phone)"}
    for action, text in helps.items():
        a = actions.add_parser(action, help=text)
        if action != "list":
            a.add_argument("name", help="login name (letters, digits, . _ @ + -), e.g. a mail address")
        else:
            a.set_defaults(name=None)
        if action in ("add", "list"):
            a.add_argument("--contract", required=action == "add",
                           help="the contract the account may see" if action == "add" else "only this contract")
        else:
            a.set_defaults(contract=None)
        if action == "add":
            a.add_argument("--display-name", help="the name shown in the panel")
            a.add_argument("--generate", action="store_true", help="make a random initial password and print it once")
        db_options(a)
        a.add_argument("--json", action="store_true")
        a.set_defaults(fn=lambda args: cmd_customer(args, open_db))


def cmd_operator_role(args: argparse.Namespace, db: Any) -> int:
    """``vcr-opscenter operator role NAME [ROLE]``: show or set an operator's role."""
    if args.role is None:
        op = accounts.get_operator(db, args.name)
        if op is None:
            print(f"オペレーター {args.name} はいません / no operator {args.name}", file=sys.stderr)
            return 1
        print(op.role)
        return 0
    try:
        accounts.set_role(db, args.name, args.role)
    except accounts.AccountError as exc:
        print(f"エラー / error: {exc}", file=sys.stderr)
        return 1
    print(f"役割を設定しました / role set: {args.name} = {args.role}")
    return 0
