"""A real local MTA for tests and demos: a private Postfix instance delivering into a Maildir.

    from lab.mta import start_postfix

    mta = start_postfix(tmp_path / "mta", domains=["customer.example"])   # 127.0.0.1:<free port>
    ...  # the center sends with smtp_host=mta.host, smtp_port=mta.port
    mta.messages()          # every delivered mail (email.message.EmailMessage), oldest first
    mta.wait_messages(3)    # until at least 3 arrived
    mta.stop()

The instance has its own configuration folder, queue, data folder and log (``postfix -c DIR``), an
smtpd on 127.0.0.1 only, and delivers every address of ``domains`` through Postfix's ``virtual``
delivery agent into one Maildir (``<workdir>/mail/inbox/``). Nothing leaves the host: there is no
relay, no local delivery, and the system's Postfix (if any) is untouched. Needs root (Postfix's
master runs as root and switches to the ``postfix`` user) and the ``postfix`` package
(scripts/setup.sh installs it).
"""
from __future__ import annotations

import email
import email.policy
import os
import pwd
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MASTER_CF = """\
# service type  private unpriv  chroot  wakeup  maxproc command
{listen} inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


class MTAError(RuntimeError):
    """The instance did not start (the message carries its log)."""


def unavailable_reason() -> str | None:
    if shutil.which("postfix") is None and not Path("/usr/sbin/postfix").exists():
        return "postfix is not installed (scripts/setup.sh installs it)"
    if os.geteuid() != 0:
        return "a private postfix instance needs root"
    try:
        pwd.getpwnam("postfix")
    except KeyError:
        return "no postfix user (the postfix package creates it)"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Postfix:
    workdir: Path
    host: str
    port: int
    netns: str = ""  # a lab namespace the instance runs in (``ip netns exec``)

    @property
    def etc(self) -> Path:
        return self.workdir / "etc"

    @property
    def maildir(self) -> Path:
        return self.workdir / "mail" / "inbox"

    @property
    def log_path(self) -> Path:
        return self.workdir / "maillog"

    def _postfix(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        # postfix reports a fatal error of its own command only to a terminal or the log: `script` gives it one
        prefix = f"ip netns exec {self.netns} " if self.netns else ""
        r = subprocess.run(["script", "-qec", f"{prefix}postfix -c {self.etc} {' '.join(args)}", "/dev/null"],
                           capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
                           env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
        if check and r.returncode != 0:
            raise MTAError(f"postfix {' '.join(args)} failed: {r.stderr or r.stdout}\n{self.log_tail()}")
        return r

    def start(self, timeout: float = 30.0) -> "Postfix":
        self._postfix("start")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.netns:
                code = ("import socket,sys\ns=socket.create_connection((sys.argv[1],int(sys.argv[2])),1)\n"
                        "sys.exit(0 if s.recv(512).startswith(b'220') else 1)")
                if subprocess.run(["ip", "netns", "exec", self.netns, "python3", "-c", code, self.host, str(self.port)],
                                  capture_output=True, timeout=10).returncode == 0:
                    return self
                time.sleep(0.2)
                continue
            try:
                with socket.create_connection((self.host, self.port), timeout=1) as s:
                    if s.recv(512).startswith(b"220"):
                        return self
            except OSError:
                time.sleep(0.1)
        log = self.log_tail()
        self.stop()
        raise MTAError(f"postfix did not answer on {self.host}:{self.port}:\n{log}")

    def stop(self, *, remove: bool = True) -> None:
        r = self._postfix("stop", check=False)
        if r.returncode != 0:
            self._postfix("abort", check=False)
        if remove and self.workdir.name.startswith("vcr-mta-"):
            shutil.rmtree(self.workdir, ignore_errors=True)

    def log_tail(self, n: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def files(self) -> list[Path]:
        new = self.maildir / "new"
        return sorted(new.iterdir(), key=lambda p: (p.stat().st_mtime, p.name)) if new.is_dir() else []

    def messages(self) -> list[Any]:
        return [email.message_from_bytes(p.read_bytes(), policy=email.policy.default) for p in self.files()]

    def wait_messages(self, n: int, timeout: float = 30.0) -> list[Any]:
        deadline = time.monotonic() + timeout
        while True:
            found = self.messages()
            if len(found) >= n or time.monotonic() > deadline:
                return found
            time.sleep(0.2)

    def __enter__(self) -> "Postfix":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_postfix(workdir: str | os.PathLike[str], *, domains: list[str], port: int = 0,
                  host: str = "127.0.0.1", netns: str = "", mynetworks: str = "127.0.0.0/8",
                  starttls: bool = False) -> Postfix:
    """Configure and start a private Postfix on ``host:port`` (0: a free port) delivering every address of
    ``domains`` into ``<workdir>/mail/inbox/`` (Maildir); ``netns``: inside that lab namespace (the
    lab's mail server host); ``starttls``: offer STARTTLS with a throw-away self-signed certificate."""
    reason = unavailable_reason()
    if reason:
        raise MTAError(reason)
    # Postfix's daemons run as the postfix user and must reach their folders: pytest's and most private
    # temporary folders are 0700, so the instance lives in a folder of its own under /tmp (removed by stop()),
    # named in ``<workdir>/postfix-root``.
    import tempfile

    Path(workdir).mkdir(parents=True, exist_ok=True)
    wd = Path(tempfile.mkdtemp(prefix="vcr-mta-", dir="/tmp"))
    (Path(workdir) / "postfix-root").write_text(str(wd) + "\n")
    port = port or free_port()
    pf = Postfix(wd, host, port, netns)
    nobody = pwd.getpwnam("nobody")
    for d in ("etc", "queue", "data", "mail"):
        (wd / d).mkdir(parents=True, exist_ok=True)
    postfix_user = pwd.getpwnam("postfix")
    os.chown(wd / "data", postfix_user.pw_uid, postfix_user.pw_gid)
    os.chown(wd / "mail", nobody.pw_uid, nobody.pw_gid)
    for d in (wd, wd / "etc", wd / "queue"):
        os.chown(d, 0, 0)
        os.chmod(d, 0o755)
    main_cf = {
        "compatibility_level": "3.6",
        "queue_directory": str(wd / "queue"),
        "data_directory": str(wd / "data"),
        "mail_owner": "postfix",
        "setgid_group": "postdrop",
        "myhostname": "mta.vcr-test.example",
        "mydomain": "vcr-test.example",
        "myorigin": "$myhostname",
        "mydestination": "",
        "inet_interfaces": host,
        "inet_protocols": "ipv4",
        "mynetworks": mynetworks,
        "relayhost": "",
        "smtpd_relay_restrictions": "permit_mynetworks, reject_unauth_destination",
        "local_transport": "error:local delivery is disabled",
        "alias_maps": "",
        "alias_database": "",
        "virtual_mailbox_domains": " ".join(domains),
        "virtual_mailbox_base": str(wd / "mail"),
        "virtual_mailbox_maps": "static:inbox/",
        "virtual_uid_maps": f"static:{nobody.pw_uid}",
        "virtual_gid_maps": f"static:{nobody.pw_gid}",
        "virtual_minimum_uid": str(min(nobody.pw_uid, 100)),
        "maillog_file": str(pf.log_path),
        "maillog_file_prefixes": str(wd),
        "smtpd_banner": "$myhostname ESMTP (vcr-agent test MTA)",
        "biff": "no",
        "append_dot_mydomain": "no",
        "smtp_tls_security_level": "none",
        "smtpd_tls_security_level": "none",
        "message_size_limit": "10240000",
        "default_destination_concurrency_limit": "5",
        "queue_run_delay": "5s",
        "minimal_backoff_time": "5s",
    }
    if starttls:
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
                        "/CN=mta.vcr-test.example", "-keyout", str(wd / "etc" / "key.pem"), "-out",
                        str(wd / "etc" / "cert.pem")], check=True, capture_output=True, timeout=60)
        main_cf.update({"smtpd_tls_security_level": "may", "smtpd_tls_cert_file": str(wd / "etc" / "cert.pem"),
                        "smtpd_tls_key_file": str(wd / "etc" / "key.pem")})
    (wd / "etc" / "main.cf").write_text("".join(f"{k} = {v}\n" for k, v in main_cf.items()), encoding="utf-8")
    (wd / "etc" / "master.cf").write_text(MASTER_CF.format(listen=f"{host}:{port}"), encoding="utf-8")
    return pf.start()
