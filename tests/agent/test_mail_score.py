"""`vcr-agent mail-score`: RFC 822 files scored as the box scores them (the engine built from the
agent config), against the real private rspamd and clamd."""
from __future__ import annotations

import json
from email.message import EmailMessage
from pathlib import Path

import pytest

from agent.cli import main
from lab.clamd import TESTFILES


def _config(path: Path, rspamd_url: str, clamd_socket: str | None, **antispam) -> Path:
    lines = ["engines:", "  antispam:", "    enabled: true", f"    url: {rspamd_url}"]
    lines += [f"    {k}: {json.dumps(v, ensure_ascii=False)}" for k, v in antispam.items()]
    if clamd_socket:
        lines += ["  av:", "    enabled: true", f"    clamd_socket: {clamd_socket}"]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _infected(folder: Path) -> Path:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "a@example.net", "b@example.co.jp", "請求書 / invoice"
    msg.set_content("請求書を添付します。\nPlease find the invoice attached.\n")
    msg.add_attachment((TESTFILES / "clam.exe").read_bytes(), maintype="application", subtype="octet-stream",
                       filename="請求書.exe")
    path = folder / "infected.eml"
    path.write_bytes(bytes(msg))
    return path


def test_json_one_object_per_file_with_spam_and_virus(rspamd, clamd, shared_data, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]):
    corpus = shared_data.path("data", "spamassassin")
    ham = sorted((corpus / "ham").glob("easy-ham-1_*.eml"))[1]  # starts with an mbox From_ line
    files = [str(corpus / "gtube.eml"), str(ham), str(_infected(tmp_path))]
    cfg = _config(tmp_path / "agent.yaml", rspamd.url, clamd.socket)
    assert main(["mail-score", "--json", "-c", str(cfg), *files]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["input"] for r in rows] == files
    gtube, plain, infected = rows
    assert gtube["verdict"] == "spam" and gtube["virus"] is None and "GTUBE(0.00)" in gtube["reasons"]
    assert gtube["score"] >= gtube["threshold"] and gtube["action"] == "tag"
    assert plain["verdict"] == "ham" and plain["virus"] is None and plain["score"] < plain["threshold"]
    assert infected["virus"] == "VCR.Test.clam.exe.UNOFFICIAL"  # the starter database's name for clam.exe
    assert set(gtube) >= {"input", "verdict", "score", "virus", "reasons"}


def test_sent_direction_and_config_threshold_and_human_output(rspamd, shared_data, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]):
    corpus = shared_data.path("data", "spamassassin")
    cfg = _config(tmp_path / "agent.yaml", rspamd.url, None, threshold=0.0, subject_tag="[SPAM]")
    assert main(["mail-score", "--sent", "-c", str(cfg), str(corpus / "gtube.eml")]) == 0
    out = capsys.readouterr().out
    assert "迷惑メール / spam" in out and "拒否 / reject" in out and "理由 / reason: GTUBE" in out
    assert main(["mail-score", "--json", "-c", str(cfg), str(corpus / "gtube.eml")]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["threshold"] == 0.0 and row["action"] == "tag" and row["virus"] is None  # no av configured


def test_rspamd_down_and_unreadable_file_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = _config(tmp_path / "agent.yaml", f"http://127.0.0.1:{port}", None)
    msg = tmp_path / "m.eml"
    msg.write_bytes(b"Subject: hi\r\n\r\nhello\r\n")
    assert main(["mail-score", "--json", "-c", str(cfg), str(msg), str(tmp_path / "missing.eml")]) == 1
    captured = capsys.readouterr()
    row = json.loads(captured.out)
    assert row["verdict"] == "ham" and "refused" in row["error"]
    assert "missing.eml" in captured.err and "cannot read" in captured.err


def test_bad_config_names_the_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    cfg = tmp_path / "agent.yaml"
    cfg.write_text("engines:\n  antispam:\n    sent_action: drop\n")
    assert main(["mail-score", "-c", str(cfg), str(cfg)]) == 2
    assert "engines.antispam.sent_action" in capsys.readouterr().err
