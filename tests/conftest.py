"""Shared pytest fixtures: the shared test data beside the repository, the privilege check and unique
names for network-namespace (lab) tests."""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import settings

from tests import shared_data as shared

# Property and fuzz tests: CI runs a fixed sequence of examples (derandomized), so a landing never
# depends on luck; `HYPOTHESIS_PROFILE=explore` draws fresh random examples (and more of them) to
# hunt for new failures, e.g. `HYPOTHESIS_PROFILE=explore make test`. A failure found that way
# becomes an @example in its test.
settings.register_profile("ci", derandomize=True)
settings.register_profile("explore", derandomize=False, max_examples=5000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def netns_unavailable_reason() -> str | None:
    """Why lab tests cannot run here, or None when root can create network namespaces."""
    if os.geteuid() != 0:
        return f"running as uid {os.geteuid()}, not root"
    for tool in ("ip", "iptables", "ip6tables"):
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed"
    probe = f"nsprobe{os.getpid()}"
    added = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True, check=False)
    if added.returncode != 0:
        return f"`ip netns add` failed: {added.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True, check=False)
    return None


@pytest.fixture(scope="session")
def netns_capable() -> None:
    """Skip, loudly, when this machine cannot run namespace tests."""
    reason = netns_unavailable_reason()
    if reason is not None:
        pytest.skip(f"LAB TEST SKIPPED: needs root and network namespaces: {reason}")


@pytest.fixture(scope="session")
def lab_prefix(netns_capable: None) -> str:
    """A namespace-name prefix unique to this test run (append letters for more labs)."""
    return f"t{os.getpid() % 10000}"


@pytest.fixture(scope="session")
def shared_data() -> shared.SharedData:
    """The shared test data (``$VCR_SHARED``, else ``../shared`` beside the repository): a test that
    uses it fails under CI when the data is missing and skips loudly elsewhere (tests/shared_data.py)."""
    return shared.session()


def require_clamav() -> None:
    """ClamAV (clamd, sigtool, clamav-testfiles) is installed: else a loud skip, a failure under CI."""
    from lab.clamd import missing

    reason = missing()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"CLAMD TEST CANNOT RUN IN CI: {reason}")
        pytest.skip(f"CLAMD TEST SKIPPED: {reason}")


@pytest.fixture(scope="session")
def clamd(tmp_path_factory: pytest.TempPathFactory):
    """A private clamd with the starter database (lab/clamd.py): a loud skip when ClamAV is not
    installed, a failure under CI (scripts/setup.sh installs it)."""
    from lab.clamd import PrivateClamd

    require_clamav()
    daemon = PrivateClamd(tmp_path_factory.mktemp("clamd"))
    daemon.start()
    try:
        yield daemon
    finally:
        daemon.stop()


def require_rspamd() -> None:
    """rspamd, redis-server and rbldnsd are installed: else a loud skip, a failure under CI."""
    from lab.rspamd import missing

    reason = missing()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"RSPAMD TEST CANNOT RUN IN CI: {reason}")
        pytest.skip(f"RSPAMD TEST SKIPPED: {reason}")


# The lab DNS blocklist (zen.spamhaus.org served by rbldnsd): one listed address, and the error
# answers Spamhaus gives to open resolvers (.254), over-quota users (.255) and wrong zone names (.252).
RBL_LISTED = {"203.0.113.7": "127.0.0.2", "203.0.113.8": "127.255.255.254", "203.0.113.9": "127.255.255.255",
              "203.0.113.10": "127.255.255.252"}


def _private_rspamd(tmp_path_factory: pytest.TempPathFactory, name: str):
    from lab.rspamd import PrivateRspamd

    require_rspamd()
    daemon = PrivateRspamd(tmp_path_factory.mktemp(name), RBL_LISTED, min_learns=10)
    daemon.start()
    try:
        yield daemon
    finally:
        daemon.stop()


@pytest.fixture(scope="module")
def taught_rspamd(tmp_path_factory: pytest.TempPathFactory, shared_data: shared.SharedData):
    """A private rspamd of the module's own that learnt (Bayes and fuzzy, through the controller as
    the center teaches boxes) the first 20 spam and 20 ham of the SpamAssassin sample's training
    part: (rspamd, a learnt spam, a ham)."""
    from lab.rspamd import PrivateRspamd
    from lab.spameval import teach_sample

    require_rspamd()
    daemon = PrivateRspamd(tmp_path_factory.mktemp("rspamd"), min_learns=10).start()
    try:
        spam, ham = teach_sample(daemon, Path(shared_data.path("data", "spamassassin")))
        yield daemon, spam, ham
    finally:
        daemon.stop()


@pytest.fixture(scope="module")
def ops(tmp_path_factory: pytest.TempPathFactory):
    """The reference center (lab/center.py) on 127.0.0.1 for a module's boxes: check-ins every
    second, no rate limits."""
    from lab.center import start_center

    c = start_center(tmp_path_factory.mktemp("center"), "127.0.0.1:0", heartbeat_interval=1,
                     settings={"checkin_rate": 0, "alarm_rate": 0})
    yield c
    c.close()


_pg_names = itertools.count()


@pytest.fixture(scope="session")
def pg_cluster():
    """One throwaway PostgreSQL cluster for the session (lab/pgtemp.py, fsync off: tests, not the
    benchmark); a loud skip when the server binaries are missing or it does not start."""
    from lab import pgtemp

    reason = pgtemp.unavailable_reason()
    if reason:
        print(f"\n*** POSTGRES TEST SKIPPED: {reason} ***")
        pytest.skip(f"POSTGRES TEST SKIPPED: {reason}")
    cluster = pgtemp.PgTemp(fsync=False)
    try:
        cluster.start()
    except RuntimeError as exc:
        pytest.skip(f"POSTGRES TEST SKIPPED: the throwaway cluster did not start: {exc}")
    yield cluster
    cluster.stop()


@pytest.fixture
def pg_url(pg_cluster) -> str:
    """A fresh database in the session's cluster."""
    name = f"t{next(_pg_names)}"
    pg_cluster.psql(f"CREATE DATABASE {name}")
    return pg_cluster.url.replace(f"/{pg_cluster.dbname}?", f"/{name}?")


@pytest.fixture(scope="session")
def rspamd(tmp_path_factory: pytest.TempPathFactory):
    """A private rspamd with its redis and its rbldnsd (lab/rspamd.py), the lab zone ``RBL_LISTED``;
    Bayes answers after 10 learns of each class. A loud skip when rspamd is not installed, a
    failure under CI (scripts/setup.sh installs it)."""
    yield from _private_rspamd(tmp_path_factory, "rspamd")


@pytest.fixture(scope="module")
def own_rspamd(tmp_path_factory: pytest.TempPathFactory):
    """A private rspamd of the module's own, like ``rspamd``: what it learns (Bayes, fuzzy) must not
    change the verdicts the other tests expect from the session's rspamd, nor theirs the module's."""
    yield from _private_rspamd(tmp_path_factory, "rspamd-own")


# What a test leaves running can keep pytest from exiting after its summary (a non-daemon thread, an
# executor's busy worker, a child process joined at exit): CI then runs out of time with every test
# green. Name what is left, stop the children, and if the interpreter still has not exited after
# EXIT_GRACE seconds, print every thread's stack and exit with failure instead of hanging.
EXIT_GRACE = 120.0


@pytest.fixture(scope="module", autouse=True)
def _no_forked_copy_left(request: pytest.FixtureRequest):
    """A copy of this pytest process forked by a test (a worker, a multiprocessing child) must be
    gone when its module ends: one left alive kept pytest from exiting after the summary (its
    queue's feeder thread is joined at exit). Named here with its module, then killed."""
    import psutil

    me = psutil.Process()
    yield
    mine = me.cmdline()
    for child in me.children(recursive=True):
        try:
            if child.cmdline() == mine and child.status() != psutil.STATUS_ZOMBIE:
                child.kill()
                child.wait(5)
                pytest.fail(f"{request.module.__name__} left a forked copy of pytest running (pid {child.pid})",
                            pytrace=False)
        except psutil.Error:
            pass


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    import faulthandler
    import sys
    import threading

    import psutil

    # daemon threads end with the interpreter; multiprocessing's resource tracker ends with its parent
    left = [t for t in threading.enumerate() if t is not threading.main_thread() and t.is_alive() and not t.daemon]
    children = []
    for c in psutil.Process().children(recursive=True):
        try:
            if "multiprocessing.resource_tracker" not in " ".join(c.cmdline()):
                children.append(c)
        except psutil.Error:
            pass
    if left or children:
        out = sys.__stderr__
        print(f"\nLEFT RUNNING AFTER THE TESTS: {len(left)} thread(s), {len(children)} child process(es)",
              file=out)
        for t in left:
            print(f"  thread {t.name!r} daemon={t.daemon} target={getattr(t, '_target', None)!r}", file=out)
        for c in children:
            try:
                print(f"  process {c.pid} {' '.join(c.cmdline())[:200]}", file=out)
                c.kill()
            except psutil.Error:
                pass
        out.flush()
    faulthandler.dump_traceback_later(EXIT_GRACE, exit=True, file=sys.__stderr__)
