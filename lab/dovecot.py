"""A real POP3/IMAP server for tests and the lab: a private Dovecot with its own configuration,
run folder, log and one user whose Maildir is given (e.g. the Maildir a private Postfix from
lab/mta.py delivers into, so mail sent through SMTP can be fetched again).

    from lab.dovecot import start_dovecot

    dc = start_dovecot(workdir, maildir=mta.maildir, host="127.0.0.1")   # free ports
    poplib.POP3(dc.host, dc.pop3_port).user(dc.user) ...
    dc.stop()

Plaintext only (``ssl = no``, cleartext login allowed): the box inspects the plaintext ports.
Needs root (Dovecot's master starts as root) and the dovecot-pop3d/imapd packages. The system's
Dovecot is untouched. ``netns`` runs it inside a lab network namespace (``ip netns exec``).
"""
from __future__ import annotations

import os
import pwd
import grp
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from lab.daemon import stop_group, wait_up
from lab.mta import free_port

USER = "hanako"
PASSWORD = "office-pass"

CONF = """\
protocols = pop3 imap
listen = {listen}
base_dir = {run}
state_dir = {state}
instance_name = vcr-dovecot-{tag}
log_path = {log}
info_log_path = {log}
{ssl}
disable_plaintext_auth = no
auth_mechanisms = plain login
default_login_user = dovenull
default_internal_user = dovecot
mail_location = maildir:{maildir}
mail_uid = {uid}
mail_gid = {gid}
first_valid_uid = 1
pop3_uidl_format = %08Xu%08Xv
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {passwd}
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={home}
}}
service imap-login {{
  inet_listener imap {{
    address = {listen}
    port = {imap_port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service pop3-login {{
  inet_listener pop3 {{
    address = {listen}
    port = {pop3_port}
  }}
  inet_listener pop3s {{
    port = 0
  }}
}}
service stats {{
  unix_listener stats-reader {{
    mode = 0666
  }}
  unix_listener stats-writer {{
    mode = 0666
  }}
}}
"""


class DovecotError(RuntimeError):
    pass


def unavailable_reason() -> str | None:
    if shutil.which("dovecot") is None and not Path("/usr/sbin/dovecot").exists():
        return "dovecot is not installed (scripts/setup.sh installs dovecot-pop3d and dovecot-imapd)"
    if os.geteuid() != 0:
        return "a private dovecot instance needs root"
    for user in ("dovecot", "dovenull"):
        try:
            pwd.getpwnam(user)
        except KeyError:
            return f"no {user} user (the dovecot-core package creates it)"
    return None


@dataclass
class Dovecot:
    workdir: Path
    host: str
    pop3_port: int
    imap_port: int
    maildir: Path
    netns: str = ""
    user: str = USER
    password: str = PASSWORD
    proc: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def log_path(self) -> Path:
        return self.workdir / "dovecot.log"

    def log_tail(self, n: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def _argv(self, *args: str) -> list[str]:
        base = ["dovecot", "-c", str(self.workdir / "dovecot.conf"), *args]
        return ["ip", "netns", "exec", self.netns, *base] if self.netns else base

    def _answers(self, port: int) -> bool:
        if self.netns:
            code = ("import socket,sys\ns=socket.create_connection((sys.argv[1],int(sys.argv[2])),1)\n"
                    "sys.exit(0 if s.recv(64)[:1] in (b'+',b'*') else 1)")
            r = subprocess.run(["ip", "netns", "exec", self.netns, "python3", "-c", code, self.host, str(port)],
                               capture_output=True, timeout=10)
            return r.returncode == 0
        try:
            with socket.create_connection((self.host, port), timeout=1) as s:
                return s.recv(64)[:1] in (b"+", b"*")
        except OSError:
            return False

    def start(self, timeout: float = 30.0) -> "Dovecot":
        self.proc = subprocess.Popen(self._argv("-F"), stdout=open(self.workdir / "dovecot.out", "wb"),
                                     stderr=subprocess.STDOUT, start_new_session=True)
        if wait_up(self.proc, lambda: self._answers(self.pop3_port) and self._answers(self.imap_port), timeout, 0.2):
            return self
        if self.proc.poll() is not None:
            raise DovecotError(f"dovecot exited: {(self.workdir / 'dovecot.out').read_text(errors='replace')}"
                               f"\n{self.log_tail()}")
        self.stop()
        raise DovecotError(f"dovecot did not answer on {self.host}:{self.pop3_port}/{self.imap_port}\n{self.log_tail()}")

    def stop(self) -> None:
        stop_group(self.proc)
        self.proc = None

    def remove(self) -> None:
        """Stop, and remove the instance's folder (the mailbox too when it lives there)."""
        self.stop()
        if self.workdir.name.startswith("vcr-dovecot-"):
            shutil.rmtree(self.workdir, ignore_errors=True)

    def deliver(self, raw: bytes) -> Path:
        """Put a message in the Maildir as an MTA would (new/, owned by the mail user)."""
        nobody = pwd.getpwnam("nobody")
        for sub in ("new", "cur", "tmp"):
            (self.maildir / sub).mkdir(parents=True, exist_ok=True)
            os.chown(self.maildir / sub, nobody.pw_uid, nobody.pw_gid)
        name = f"{time.time():.6f}.vcr{os.getpid()}.{len(list((self.maildir / 'new').iterdir()))}.lab"
        tmp = self.maildir / "tmp" / name
        tmp.write_bytes(raw)
        os.chown(tmp, nobody.pw_uid, nobody.pw_gid)
        dest = self.maildir / "new" / name
        os.replace(tmp, dest)
        return dest

    def stored(self) -> list[bytes]:
        """Every message in the mailbox (new and cur), as stored."""
        out = []
        for sub in ("new", "cur"):
            d = self.maildir / sub
            if d.is_dir():
                out += [p.read_bytes() for p in sorted(d.iterdir()) if p.is_file()]
        return out

    def __enter__(self) -> "Dovecot":
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


def start_dovecot(workdir: str | os.PathLike[str] | None = None, *, maildir: Path | None = None, host: str = "127.0.0.1",
                  pop3_port: int = 0, imap_port: int = 0, netns: str = "", starttls: bool = False,
                  also: str = "") -> Dovecot:
    """Configure and start a private Dovecot on ``host`` (free ports unless given) serving one user
    (``USER``/``PASSWORD``) whose mailbox is ``maildir`` (default: a fresh one in the work folder).
    ``starttls``: offer STARTTLS/STLS with a throw-away self-signed certificate (what the box cannot read);
    ``also``: a second address to listen on (the lab host's IPv6 address)."""
    reason = unavailable_reason()
    if reason:
        raise DovecotError(reason)
    # dovecot's login processes run as dovenull/dovecot: the folder must be reachable (not pytest's 0700)
    wd = Path(tempfile.mkdtemp(prefix="vcr-dovecot-", dir="/tmp"))
    if workdir is not None:
        Path(workdir).mkdir(parents=True, exist_ok=True)
        (Path(workdir) / "dovecot-root").write_text(str(wd) + "\n")
    os.chmod(wd, 0o755)
    nobody = pwd.getpwnam("nobody")
    gid = grp.getgrnam("nogroup").gr_gid if _has_group("nogroup") else nobody.pw_gid
    maildir = Path(maildir) if maildir is not None else wd / "mail"
    home = wd / "home"
    for d in (maildir, home, maildir / "new", maildir / "cur", maildir / "tmp"):
        d.mkdir(parents=True, exist_ok=True)
        os.chown(d, nobody.pw_uid, gid)
    for d in ("run", "state"):
        (wd / d).mkdir()
    (wd / "passwd").write_text(f"{USER}:{{PLAIN}}{PASSWORD}::::::\n")
    os.chmod(wd / "passwd", 0o644)
    dc = Dovecot(wd, host, pop3_port or free_port(), imap_port or free_port(), maildir, netns=netns)
    ssl = "ssl = no"
    if starttls:
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
                        "/CN=mail.vcr-test.example", "-keyout", str(wd / "key.pem"), "-out", str(wd / "cert.pem")],
                       check=True, capture_output=True, timeout=60)
        ssl = f"ssl = yes\nssl_cert = <{wd / 'cert.pem'}\nssl_key = <{wd / 'key.pem'}"
    (wd / "dovecot.conf").write_text(CONF.format(
        host=host, listen=", ".join(a for a in (host, also) if a), ssl=ssl, run=wd / "run", state=wd / "state", tag=wd.name[-8:], log=dc.log_path, maildir=maildir,
        uid=nobody.pw_uid, gid=gid, passwd=wd / "passwd", home=home, imap_port=dc.imap_port, pop3_port=dc.pop3_port))
    return dc.start()


def _has_group(name: str) -> bool:
    try:
        grp.getgrnam(name)
        return True
    except KeyError:
        return False
