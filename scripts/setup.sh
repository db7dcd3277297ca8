#!/usr/bin/env bash
# One-time, idempotent set-up for a fresh machine of this kind: apt packages and the project venv.
# Used by `make demo`, `make test` and `make bench`. Safe to run again; does nothing when all is there.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PKGS=(iptables ipset iproute2 conntrack libnetfilter-queue-dev libnfnetlink-dev iperf3 iputils-ping
          curl procps kmod tcpdump socat dnsutils python3-dev build-essential postgresql openssl)

need_apt=()
for p in "${APT_PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need_apt+=("$p")
done
if ((${#need_apt[@]})); then
    echo "setup: installing apt packages: ${need_apt[*]}"
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
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
    .venv/bin/pip install -q -e '.[test]'
    rm -f .venv/.installed-*
    touch "$stamp"
fi
