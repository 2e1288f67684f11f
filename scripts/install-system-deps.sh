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
    podman          # tests/fleet: the ssh target's podman runtime (containers on the test hosts)
    runc            # podman's OCI runtime here (crun is the other choice; runc is tested)
    busybox-static  # tests/fleet: the test image is FROM scratch + a static busybox httpd
    postgresql      # tests/store, tests/e2e: the store on PostgreSQL (bench/postgres.py's clusters)
)

missing=()
for pkg in "${SYSTEM_PACKAGES[@]}"; do
    if dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
        echo "install-system-deps: $pkg already installed"
    else
        missing+=("$pkg")
    fi
done

# podman's default ulimits (nofile, nproc at 1048576) are above what a sandboxed root may
# set here (a container or VM without CAP_SYS_RESOURCE over its own limits): every
# `podman run` then fails with "error setting rlimits". Only where that happens, a drop-in
# makes containers inherit podman's own limits instead; a machine where podman already
# runs containers is left as it is. Checked with a static busybox as the root filesystem
# (no image, no network needed).
configure_podman() {
    command -v podman >/dev/null && [ -x /bin/busybox ] || return 0
    local dropin=/etc/containers/containers.conf.d/50-entrega-ulimits.conf rootfs
    [ -e "$dropin" ] && return 0
    rootfs=$(mktemp -d)
    mkdir "$rootfs/bin" && cp /bin/busybox "$rootfs/bin/busybox"
    if ! podman run --rm --network none --rootfs "$rootfs" /bin/busybox true 2>"$rootfs.err" \
            && grep -q "setting rlimit" "$rootfs.err"; then
        mkdir -p "$(dirname "$dropin")"
        printf '# written by entrega scripts/install-system-deps.sh: %s\n[containers]\ndefault_ulimits = []\n' \
            "podman run cannot set its default ulimits here" > "$dropin"
        echo "install-system-deps: podman: containers inherit podman's ulimits ($dropin)"
    fi
    rm -rf "$rootfs" "$rootfs.err"
}

if [ "${#missing[@]}" -eq 0 ]; then
    configure_podman
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
configure_podman
