"""``vcr-opscenter report``, ``verify-report`` and ``report-key``: monthly reports on demand or for every
due contract, offline verification of a signed operating record, the center's signing key."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def _settings(args: argparse.Namespace) -> Any:
    from opscenter.settings import load_settings

    return load_settings(getattr(args, "config", None), db=getattr(args, "db", None),
                         report_key=getattr(args, "key", None))


def _db(settings: Any) -> Any:
    from opscenter.db import Database

    db = Database(settings.db, pool_size=2, max_overflow=2, busy_timeout_ms=settings.sqlite_busy_timeout_ms)
    db.create_tables()
    return db


def cmd_report(args: argparse.Namespace) -> int:
    from opscenter.report.period import Month

    settings = _settings(args)
    if args.due:
        from opscenter.report.schedule import run_due

        res = run_due(settings, month=Month.parse(args.month) if args.month else None, workers=args.workers)
        print(f"{res.month}: 作成 / made {len(res.done)}, 他で作成 / made elsewhere {len(res.skipped)}, "
              f"失敗 / failed {len(res.failed)} ({res.seconds:.0f} s)")
        for c, err in sorted(res.failed.items()):
            print(f"  失敗 / failed: {c}: {err}", file=sys.stderr)
        return 1 if res.failed else 0
    db = _db(settings)
    if args.list:
        from opscenter.report.store import list_reports

        rows = list_reports(db, args.contract, month=args.month)
        if args.json:
            print(json.dumps(rows, ensure_ascii=False, indent=1))
        else:
            from opscenter.render import table

            print(table(["契約 / contract", "月 / month", "状態 / status", "作成 / generated", "稼働率 / up %",
                         "脅威 / threats"],
                        [[r["contract_id"], r["month"], r["status"], r["generated_at"] or "-",
                          (r["summary"] or {}).get("availability_percent") or "-",
                          str((r["summary"] or {}).get("threats", "-"))] for r in rows])
                  if rows else "レポートはありません / no reports")
        return 0
    if not args.contract or not args.month:
        print("report には --contract と --month が必要 / report needs --contract and --month "
              "(or --due, or --list)", file=sys.stderr)
        return 2
    from opscenter.report.render import render_report

    try:
        files = render_report(db, args.contract, args.month, settings=settings, pdf=not args.no_pdf)
    except LookupError as exc:
        print(f"契約がありません / {exc}", file=sys.stderr)
        return 1
    if args.store:
        from opscenter.report.store import save

        save(db, args.contract, args.month, files)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        written = []
        if files.pdf:
            (out / files.names["pdf"]).write_bytes(files.pdf)
            written.append(out / files.names["pdf"])
        (out / files.names["html"]).write_text(files.html, encoding="utf-8")
        (out / files.names["record"]).write_bytes(files.record)
        written += [out / files.names["html"], out / files.names["record"]]
        for p in written:
            print(p)
    rec = files.data.operating
    print(f"稼働率 / checking in: {rec['availability_percent'] or '-'}%, 保護 / protecting: "
          f"{rec['protecting_percent'] or '-'}%, 脅威 / threats: {files.data.alarms.total}"
          f"{', 保存しました / stored' if args.store else ''}", file=sys.stderr)
    return 0


def cmd_verify_report(args: argparse.Namespace) -> int:
    from opscenter.report.signing import RecordError, load_public, verify

    trusted = []
    for p in args.pubkey or []:
        trusted.append(load_public(p))
    try:
        data = Path(args.file).read_bytes()
        v = verify(data, trusted=trusted, key_ids=args.key_id)
    except OSError as exc:
        print(f"読めません / cannot read {args.file}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    except RecordError as exc:
        if args.json:
            print(json.dumps({"valid": False, "error": str(exc)}))
        print(f"無効 / INVALID: {exc}", file=sys.stderr)
        return 1
    r = v.record
    if args.json:
        print(json.dumps({"valid": True, "pinned": v.pinned, "key_id": v.key_id, "sha256": v.digest, "record": r},
                         ensure_ascii=False))
        return 0
    print("有効 / VALID: 署名は正しく、記録は変更されていません / the signature is good and the record is unchanged")
    print(f"  契約 / contract: {r.get('contract_id')}  月 / month: {r.get('month')}")
    print(f"  稼働率 / checking in: {r.get('availability_percent')}%  保護 / protecting: {r.get('protecting_percent')}%"
          f"  停止 / outages: {sum(1 for o in r.get('outages') or [] if o.get('kind') == 'no_checkin')}")
    print(f"  機器 / boxes: {', '.join(str(d.get('serial')) for d in r.get('devices') or [])}")
    print(f"  作成 / generated: {r.get('generated_at')}  鍵 / key id: {v.key_id}  SHA-256: {v.digest}")
    if not v.pinned:
        print("  注意 / note: 公開鍵を指定していないため、記録内の鍵で検証しました。鍵 ID が運用センターの公開している"
              "ものと同じか確認してください (--pubkey FILE または --key-id ID で指定できます) / checked with the key "
              "inside the file: compare the key id with the one the operations center publishes, or pass --pubkey / "
              "--key-id")
    return 0


def cmd_report_key(args: argparse.Namespace) -> int:
    from opscenter.report.signing import SigningKey, ensure_key

    key_path, pub_path, created = ensure_key(args.dir)
    key = SigningKey.load(key_path)
    print(f"{'作成しました / created' if created else '既存の鍵 / existing key'}: {key_path}")
    print(f"公開鍵 / public key (公開してください / publish it): {pub_path}")
    print(f"鍵 ID / key id: {key.key_id}")
    print(f"設定 / settings: report_key: {key_path}")
    if args.show:
        print(key.public_pem, end="")
    return 0


def add_cli(sub: Any, db_options: Any) -> None:
    """Register the commands; ``db_options`` adds the usual --config / --db options to a parser."""
    p = sub.add_parser("report", help="monthly reports: one contract now (PDF, HTML, signed record), every due "
                                      "contract (--due), or the stored ones (--list)")
    db_options(p)
    p.add_argument("--contract", help="contract id")
    p.add_argument("--month", help="YYYY-MM (Japan time); with --due default: the month due now")
    p.add_argument("--out", help="write the PDF, the HTML and the signed operating record into this folder")
    p.add_argument("--store", action="store_true", help="also store the report for the control panel")
    p.add_argument("--no-pdf", action="store_true", help="skip the PDF (HTML and record only)")
    p.add_argument("--key", help="the signing key (default: report_key of the settings)")
    p.add_argument("--due", action="store_true", help="generate and store every due report (what the schedule runs)")
    p.add_argument("--workers", type=int, help="with --due: processes in parallel (default report_workers)")
    p.add_argument("--list", action="store_true", help="list stored reports (filter with --contract, --month)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_report)

    v = sub.add_parser("verify-report", help="verify a signed operating record offline (exit 0 valid, 1 invalid)")
    v.add_argument("file", help="operating-record-CONTRACT-YYYY-MM.json")
    v.add_argument("--pubkey", action="append", help="the center's published public key (PEM); repeatable")
    v.add_argument("--key-id", action="append", help="the center's published key id; repeatable")
    v.add_argument("--json", action="store_true")
    v.set_defaults(fn=cmd_verify_report)

    k = sub.add_parser("report-key", help="create (or show) the center's Ed25519 key for signed operating records")
    k.add_argument("--dir", required=True, help="folder for report-signing.key (0600) and report-signing.pub")
    k.add_argument("--show", action="store_true", help="print the public key (PEM)")
    k.set_defaults(fn=cmd_report_key)
