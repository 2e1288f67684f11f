#!/usr/bin/env bash
# Installs the real servers the test suite runs against, from Debian's packages.
#
# Idempotent: packages already installed are skipped, and `apt-get update` runs at most
# once, only when something is missing. Needs root (CI and the dev machines run as root).
# Add a package to SYSTEM_PACKAGES when a test starts a new kind of real server.
set -euo pipefail

SYSTEM_PACKAGES=(
    prometheus      # tests/analysis: the prometheus metric provider against a real server
    haproxy         # tests/routers: the haproxy router; bench/router.py's reference proxy
    wrk             # bench/router.py: the load generator
    nginx-light     # bench/router.py: the static backend
    chromium        # tests/web: Playwright drives Debian's chromium (executable_path)
    openssh-server  # tests/fleet: each test host is its own sshd on 127.0.1.i (ssh-keygen too)
)

missing=()
for pkg in "${SYSTEM_PACKAGES[@]}"; do
    if dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
        echo "install-system-deps: $pkg already installed"
    else
        missing+=("$pkg")
    fi
done

if [ "${#missing[@]}" -eq 0 ]; then
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "install-system-deps: need root to install: ${missing[*]}" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update -q
# The packages' own services are not wanted: the tests start each server on a free port.
# A container has no init system, and a package's postinst that tries to start its service
# (openssh-server's sshd) can fail the whole install there; policy-rc.d answering 101
# ("action forbidden") tells invoke-rc.d to skip every start. An existing policy is kept.
policy=/usr/sbin/policy-rc.d
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy"
    chmod +x "$policy"
    trap 'rm -f "$policy"' EXIT
fi
apt-get install -y -q --no-install-recommends "${missing[@]}"
echo "install-system-deps: installed ${missing[*]}"
