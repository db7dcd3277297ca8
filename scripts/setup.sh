#!/usr/bin/env bash
# One-time, idempotent set-up for a fresh machine of this kind: apt packages and the project venv.
# Used by `make demo`, `make test` and `make bench`. Safe to run again; does nothing when all is there.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PKGS=(iptables ipset iproute2 conntrack libnetfilter-queue-dev libnfnetlink-dev iperf3 iputils-ping
          curl procps kmod tcpdump socat dnsutils python3-dev build-essential postgresql openssl
          chromium chromium-driver fonts-noto-cjk postfix dnsmasq-base clamav clamav-daemon clamav-testfiles zip
          libpango-1.0-0 libpangoft2-1.0-0 libharfbuzz-subset0 poppler-utils
          rspamd redis-server rbldnsd dovecot-pop3d dovecot-imapd nginx-light)
# chromium, chromium-driver, fonts-noto-cjk: the panel's browser tests and screenshots (Japanese fonts).
# postfix: the real local MTA of the notification-mail tests (started by the test fixture with its own
# config on a local port; "No configuration" so the package sets up and starts no system instance).
# dnsmasq-base: the lab office router's DHCP server (vcr-agent setup's temporary address); no service.
# clamav, clamav-daemon, clamav-testfiles: the antivirus tests and lab start a private clamd (lab/clamd.py) with the
# starter database built by sigtool (package clamav, only a recommendation of clamav-daemon); zip: archive test files (config/av/build-starter-db.sh); the system clamd and freshclam are stopped and disabled
# (no internet, and nothing may listen or download behind the tests' back).
# libpango-1.0-0, libpangoft2-1.0-0, libharfbuzz-subset0: WeasyPrint (the monthly report's PDF);
# poppler-utils: pdftoppm / pdffonts for the report screenshots and tests (python -m lab screenshots-report).
# rspamd, redis-server, rbldnsd: anti-spam (rspamd with its Bayes and fuzzy storage in redis; DNS blocklists
# served by a local rbldnsd zone); dovecot-pop3d, dovecot-imapd: the lab's real POP3/IMAP server. The lab
# starts private instances with their own configuration; the system services are stopped and disabled.
# nginx-light: the benchmarks' web server (lab/bench/host.py); no system instance runs.

need_apt=()
for p in "${APT_PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need_apt+=("$p")
done
if ((${#need_apt[@]})); then
    echo "setup: installing apt packages: ${need_apt[*]}"
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    echo "postfix postfix/main_mailer_type select No configuration" | $SUDO debconf-set-selections
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
    if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
        $SUDO systemctl disable --now clamav-freshclam clamav-daemon clamav-daemon.socket rspamd redis-server \
            rbldnsd dovecot nginx >/dev/null 2>&1 || true
    fi
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv"
    "$PY" -m venv .venv
fi
stamp=.venv/.installed-$(sha1sum pyproject.toml | cut -c1-12)
if [ ! -f "$stamp" ]; then
    echo "setup: installing the project into .venv"
    .venv/bin/pip install -q --upgrade pip >/dev/null 2>&1 || true
    .venv/bin/pip install -q -e '.[center,test]'
    rm -f .venv/.installed-*
    touch "$stamp"
fi
# The development packages (lab/, tests/) are not installed on the box: the dev venv finds them by
# having the checkout itself on its path.
site=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
echo "$PWD" > "$site/vcr-dev-checkout.pth"
