"""What a box reports about the spam it caught (filters/antispam/report.py): only clear spam, as
digests by default; the whole message only with the customer's consent; never ham, unclear spam,
unscored or oversized messages. The engine adds digest_score for a part on the known-digest list."""
from __future__ import annotations

import base64
import hashlib
import json
import threading
import http.server

import pytest

from filters.antispam.engine import AntiSpamConfig, AntiSpamEngine, KNOWN_DIGEST, SpamVerdict, decide
from filters.antispam.report import message_digests, normalise_text, spam_report

BODY = ("Dear friend, you have WON a prize of one million yen. Click the link below to claim it now, "
        "this offer expires within 24 hours and only applies to selected winners. ") * 3
RAW = (f"From: a@example.com\r\nTo: b@example.co.jp\r\nSubject: prize\r\nContent-Type: text/plain\r\n\r\n{BODY}\r\n").encode()


def verdict(score: float, *, threshold: float = 10.6, error: str | None = None) -> SpamVerdict:
    spam = score >= threshold and error is None
    return SpamVerdict("spam" if spam else "ham", score, threshold, "tag" if spam else "pass", (), "", (), error)


def test_clear_spam_is_reported_as_digests_only():
    conf = AntiSpamConfig()
    rep = spam_report(conf, verdict(conf.threshold + conf.report_margin), RAW, sent=False)
    assert rep is not None and set(rep) == {"score", "direction", "digests"}
    assert rep["direction"] == "received"
    text = json.dumps(rep)
    assert "example" not in text and "prize" not in text.lower() and "friend" not in text.lower()
    assert rep["digests"] == [hashlib.sha256(normalise_text(BODY).encode()).hexdigest()]


def test_ham_unclear_spam_unscored_and_oversized_are_never_reported():
    conf = AntiSpamConfig()
    assert spam_report(conf, verdict(2.0), RAW, sent=False) is None  # ham
    assert spam_report(conf, verdict(conf.threshold + conf.report_margin - 0.01), RAW, sent=False) is None  # unclear
    assert spam_report(conf, verdict(0.0, error="rspamd down"), RAW, sent=False) is None  # not scored
    big = RAW + b"x" * conf.report_max_size
    assert spam_report(conf, verdict(50.0), big, sent=False) is None
    assert spam_report(AntiSpamConfig(report=False), verdict(50.0), RAW, sent=False) is None
    assert spam_report(AntiSpamConfig(report_messages=True), verdict(3.0), RAW, sent=False) is None  # consent: still no ham


def test_whole_message_only_with_consent():
    rep = spam_report(AntiSpamConfig(report_messages=True), verdict(40.0), RAW, sent=True)
    assert base64.b64decode(rep["message"]) == RAW and rep["direction"] == "sent" and rep["digests"]


PAYLOAD = bytes(range(256)) * 4


def test_digests_ignore_markup_case_and_spacing_and_cover_attachments():
    html = (f"From: x@example.net\r\nSubject: other\r\nContent-Type: multipart/mixed; boundary=B\r\n\r\n"
            f"--B\r\nContent-Type: text/html\r\n\r\n<p>{BODY.upper().replace(' ', '  ')}</p>\r\n"
            f"--B\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=a.bin\r\n"
            f"Content-Transfer-Encoding: base64\r\n\r\n{base64.b64encode(PAYLOAD).decode()}\r\n"
            f"--B\r\nContent-Type: image/png\r\nContent-Disposition: attachment; filename=logo.png\r\n"
            f"Content-Transfer-Encoding: base64\r\n\r\n{base64.b64encode(b'PNG' * 400).decode()}\r\n"
            f"--B\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=s.bin\r\n"
            f"Content-Transfer-Encoding: base64\r\n\r\n{base64.b64encode(b'tiny').decode()}\r\n--B--\r\n").encode()
    d = message_digests(html)
    # the text as in RAW, the attachment; not the logo image (brands' real mail has it too), not a tiny file
    assert d == message_digests(RAW) + [hashlib.sha256(PAYLOAD).hexdigest()]
    assert message_digests(b"Subject: short\r\n\r\nhi\r\n") == []  # too short to mean anything
    assert message_digests(b"\xff\x00garbage" * 100) == [] or isinstance(message_digests(b"\xff\x00garbage"), list)


class _Rspamd(http.server.BaseHTTPRequestHandler):
    score = 4.0

    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        body = json.dumps({"score": self.score, "required_score": 15, "action": "no action", "symbols": {}}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


@pytest.fixture
def fake_scores():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Rspamd)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv
    srv.shutdown()


def test_engine_reports_clear_spam_and_scores_a_known_digest(fake_scores):
    # The rspamd here is a fixed-score stand-in: the policy around its answer is what is tested
    # (against the real rspamd: tests/lab/test_spam_report_lab.py).
    e = AntiSpamEngine()
    e.configure({"enabled": True, "url": f"http://127.0.0.1:{fake_scores.server_address[1]}"})
    got: list[dict] = []
    e.reports = got.append
    _Rspamd.score = 4.0
    assert e.check_message(RAW, sent=False).verdict == "ham" and got == []
    _Rspamd.score = 30.0
    assert e.check_message(RAW, sent=False).verdict == "spam" and len(got) == 1
    # Another box, told the digest by the center: the same text now scores digest_score more.
    other = AntiSpamEngine()
    other.configure({"enabled": True, "url": f"http://127.0.0.1:{fake_scores.server_address[1]}"})
    _Rspamd.score = 4.0
    assert other.add_known_digests(got[0]["digests"] + ["not-a-digest"]) == 1
    assert other.add_known_digests(got[0]["digests"]) == 0
    v = other.check_message(RAW.replace(b"Subject: prize", b"Subject: Re: you won"), sent=False)
    assert v.verdict == "spam" and v.score == 12.0 and v.reasons[0].startswith(KNOWN_DIGEST)
    assert other.counters["known_digest"] == 1
    seen: list[dict] = []
    other.reports = seen.append
    _Rspamd.score = 30.0
    assert other.check_message(RAW, sent=False).verdict == "spam" and seen == []  # on the list already: not again
    def broken(rep):
        raise OSError("disk full")
    other.reports = broken
    fresh = RAW.replace(b"Dear friend", b"Hello winner")
    assert other.check_message(fresh, sent=False).verdict == "spam" and other.counters["report_errors"] == 1


def test_no_digest_of_the_spam_sample_is_a_digest_of_its_ham(shared_data):
    """The figure in docs/mail.md: on the SpamAssassin sample no spam digest is also a ham digest (a
    listed digest would add digest_score to that ham), and most messages have one."""
    from lab.spameval import strip_mbox

    corpus = shared_data.path("data", "spamassassin")
    spam = [set(message_digests(strip_mbox(p.read_bytes()))) for p in sorted((corpus / "spam").glob("*.eml"))]
    ham = [set(message_digests(strip_mbox(p.read_bytes()))) for p in sorted((corpus / "ham").glob("*.eml"))]
    assert set().union(*spam) & set().union(*ham) == set()
    assert sum(map(bool, spam)) >= 0.9 * len(spam) and sum(map(bool, ham)) >= 0.9 * len(ham)
