#!/usr/bin/env bash
# Install the Debian packages needed for the local one-node Slurm test cluster.
#
# Idempotent: does nothing when every package is already installed.  Needs
# root (or passwordless sudo) and a Debian/Ubuntu system with apt-get.
#
# Packages: munge (authentication), slurmctld + slurmd + slurm-client (the
# cluster), slurmdbd + mariadb-server (accounting, so that `sacct` works; the
# Snakemake slurm executor plugin tracks jobs with sacct).
set -euo pipefail

PACKAGES=(munge slurmctld slurmd slurm-client slurmdbd mariadb-server)

missing=()
for pkg in "${PACKAGES[@]}"; do
    status=$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)
    if [ "$status" != "installed" ]; then
        missing+=("$pkg")
    fi
done

if [ "${#missing[@]}" -eq 0 ]; then
    echo "install.sh: all packages already installed: ${PACKAGES[*]}"
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "install.sh: apt-get not found; cannot install: ${missing[*]}" >&2
    exit 1
fi

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        SUDO=(sudo -n)
    else
        echo "install.sh: need root (or passwordless sudo) to install: ${missing[*]}" >&2
        exit 1
    fi
fi

# Keep the packages' maintainer scripts from starting daemons (the test starts
# them itself).  Only add a policy-rc.d when none exists, and remove only ours.
POLICY=/usr/sbin/policy-rc.d
own_policy=0
if [ ! -e "$POLICY" ]; then
    "${SUDO[@]}" sh -c "printf '#!/bin/sh\nexit 101\n' > $POLICY && chmod 755 $POLICY"
    own_policy=1
fi
cleanup() {
    if [ "$own_policy" -eq 1 ]; then
        "${SUDO[@]}" rm -f "$POLICY"
    fi
}
trap cleanup EXIT

echo "install.sh: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
    --no-install-recommends "${PACKAGES[@]}"
echo "install.sh: done"
