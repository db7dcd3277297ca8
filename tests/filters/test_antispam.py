"""Anti-spam verdicts and policy (filters/antispam): rspamd's answer -> verdict, action, tag and
headers; config errors; an rspamd that is down, silent or answers nonsense never raises and
passes the mail with an error. (Against the real rspamd: tests/lab/test_rspamd.py.)"""
from __future__ import annotations

import http.server
import socket
import threading
import time

import pytest

from filters import registry
from filters.antispam.engine import AntiSpamConfig, AntiSpamEngine, decide, reasons_of
from filters.engine import ConfigError

RAW = b"From: a@example.com\r\nTo: b@example.co.jp\r\nSubject: hello\r\n\r\nhello\r\n"


def result(score: float, **symbols: float) -> dict:
    return {"score": score, "required_score": 15.0, "action": "no action",
            "symbols": {n: {"name": n, "score": s} for n, s in symbols.items()}}


def test_spam_received_is_tagged_with_subject_tag_and_headers():
    conf = AntiSpamConfig(threshold=6.0)
    v = decide(conf, result(9.5, BAYES_SPAM=5.1, MIME_HTML_ONLY=0.2, ARC_NA=0.0, MIME_GOOD=-0.1), sent=False)
    assert (v.verdict, v.action, v.score, v.threshold) == ("spam", "tag", 9.5, 6.0)
    assert v.subject_tag == "[迷惑メール]"
    assert v.reasons == ("BAYES_SPAM(5.10)", "MIME_HTML_ONLY(0.20)", "MIME_GOOD(-0.10)")  # largest first, no 0s
    headers = dict(v.headers)
    assert headers["X-Spam-Flag"] == "YES" and headers["X-Spam-Score"] == "9.50"
    assert headers["X-Spam-Status"] == "Yes, score=9.50 required=6.00 tests=BAYES_SPAM,MIME_HTML_ONLY,MIME_GOOD"


def test_spam_sent_is_rejected_without_tagging_and_ham_passes():
    conf = AntiSpamConfig(threshold=6.0)
    v = decide(conf, result(6.0, BAYES_SPAM=6.0), sent=True)
    assert (v.verdict, v.action, v.subject_tag, v.headers) == ("spam", "reject", "", ())
    ham = decide(conf, result(5.99, BAYES_SPAM=5.99), sent=False)
    assert (ham.verdict, ham.action, ham.subject_tag, ham.headers) == ("ham", "pass", "", ())


def test_policy_per_direction_and_custom_tag_and_header_names():
    conf = AntiSpamConfig(threshold=5.0, received_action="reject", sent_action="tag", subject_tag="[SPAM]",
                          flag_header="X-VCR-Spam", score_header="X-VCR-Score", status_header="X-VCR-Status")
    assert decide(conf, result(7, GTUBE=0.0), sent=False).action == "reject"
    v = decide(conf, result(7, GTUBE=0.0), sent=True)
    assert v.action == "tag" and v.subject_tag == "[SPAM]" and v.reasons == ("GTUBE(0.00)",)
    assert [h for h, _ in v.headers] == ["X-VCR-Spam", "X-VCR-Score", "X-VCR-Status"]
    passing = AntiSpamConfig(threshold=5.0, received_action="pass")
    v = decide(passing, result(7, BAYES_SPAM=7.0), sent=False)
    assert v.verdict == "spam" and v.action == "pass" and v.headers == ()


def test_dnsbl_error_answers_never_count_even_with_a_weight():
    # A local rule that gave the Spamhaus error symbols a weight must not make a listing of them:
    # the engine takes their score back and does not name them.
    reasons, refund = reasons_of({"RBL_SPAMHAUS_BLOCKED_OPENRESOLVER": {"score": 4.0},
                                  "RECEIVED_SPAMHAUS_BLOCKED": {"score": 3.0}, "RBL_SPAMHAUS": {"score": 1.0},
                                  "RBL_SPAMHAUS_SBL": {"score": 4.0, "options": ["7.113.0.203:from"]}})
    assert refund == 8.0
    assert reasons == ("RBL_SPAMHAUS_SBL(4.00){7.113.0.203:from}",)
    v = decide(AntiSpamConfig(threshold=6.0), result(9.0, RBL_SPAMHAUS_BLOCKED_OPENRESOLVER=4.0, DATE_IN_PAST=5.0),
               sent=False)
    assert (v.verdict, v.score) == ("ham", 5.0)


@pytest.mark.parametrize("section,key,problem", [
    ({"threshold": "5"}, "threshold", "expected a number"),
    ({"threshold": -1.0}, "threshold", "at least 0"),
    ({"received_action": "drop"}, "received_action", "expected tag, reject or pass"),
    ({"flag_header": "X Spam"}, "flag_header", "not a mail header name"),
    ({"status_header": "X-Spam:Status"}, "status_header", "not a mail header name"),
    ({"url": "ftp://127.0.0.1"}, "url", "http:// or https://"),
    ({"subject_tag": "[SPAM]\r\nBcc: x"}, "subject_tag", "one line"),
    ({"on_error": "drop"}, "on_error", "expected pass or tempfail"),
    ({"socket": "run/rspamd.sock"}, "socket", "absolute path of a unix socket"),
    ({"thresold": 5.0}, "thresold", "unknown key"),
])
def test_bad_config_names_file_key_and_problem(section, key, problem):
    with pytest.raises(ConfigError) as err:
        registry.check_sections({"antispam": section}, path="/etc/vcr-agent/agent.yaml")
    assert err.value.path == "/etc/vcr-agent/agent.yaml"
    assert err.value.key == f"engines.antispam.{key}"
    assert problem in err.value.problem


def test_registered_as_antispam_and_built_only_when_enabled():
    assert "antispam" in [c.name for c in registry.engine_classes()]
    assert not [e for e in registry.build_engines({}) if e.name == "antispam"]
    built = [e for e in registry.build_engines({"antispam": {"enabled": True, "threshold": 8.0}}) if e.name == "antispam"]
    assert len(built) == 1 and built[0].conf.threshold == 8.0


def _engine(**section) -> AntiSpamEngine:
    e = AntiSpamEngine()
    e.configure({"enabled": True, **section})
    return e


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again: nothing listens there


def test_rspamd_down_passes_unscored_with_error_counted():
    e = _engine(url=f"http://127.0.0.1:{_closed_port()}")
    v = e.check_message(RAW, sent=False)
    assert (v.verdict, v.action, v.headers) == ("ham", "pass", ())
    assert v.error and "Connection refused" in v.error
    v2 = e.check_message(RAW, sent=True)
    assert v2.error and e.counters["errors"] == 2 and e.counters["messages"] == 2
    assert "spam.received" not in e.counters and "ham.received" not in e.counters  # not scored is not ham


def test_rspamd_down_with_tempfail_policy():
    v = _engine(url=f"http://127.0.0.1:{_closed_port()}", on_error="tempfail").check_message(RAW, sent=False)
    assert (v.verdict, v.action) == ("ham", "tempfail") and v.error


def test_silent_rspamd_times_out_within_the_timeout():
    with socket.socket() as srv:  # accepts connections (backlog) but never answers
        srv.bind(("127.0.0.1", 0))
        srv.listen(8)
        e = _engine(url=f"http://127.0.0.1:{srv.getsockname()[1]}", timeout=0.5)
        t0 = time.monotonic()
        v = e.check_message(RAW, sent=False)
        assert v.error and "timed out" in v.error and v.action == "pass"
        assert time.monotonic() - t0 < 10  # bounded by the timeout, not hung


class _Nonsense(http.server.BaseHTTPRequestHandler):
    answers = [(200, b"<html>not rspamd</html>"), (200, b'{"no": "score"}'), (500, b"oops"), (200, b"[1, 2]")]

    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        status, body = self.answers[self.server.calls % len(self.answers)]
        self.server.calls += 1
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


def test_nonsense_answers_never_raise():
    # An answer rspamd would not give (a fault the real one cannot be made to show).
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Nonsense)
    srv.calls = 0
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        e = _engine(url=f"http://127.0.0.1:{srv.server_address[1]}")
        for _ in range(4):
            v = e.check_message(RAW, sent=False)
            assert v.error and (v.verdict, v.action) == ("ham", "pass")
    finally:
        srv.shutdown()
        srv.server_close()


def test_too_large_is_passed_unscored():
    e = _engine(url=f"http://127.0.0.1:{_closed_port()}", max_size=1024)
    v = e.check_message(RAW + b"x" * 2000, sent=False)
    assert (v.verdict, v.action, v.error) == ("ham", "pass", None) and e.counters["not_scored.too_large"] == 1
