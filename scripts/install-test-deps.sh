#!/usr/bin/env bash
# Installs the Debian packages whose programs the tests start as real peers.
# Only acts when something is missing and we are root (CI, fresh machines);
# otherwise it prints what to install and lets the tests decide.
set -euo pipefail

need=()
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
command -v gcc >/dev/null 2>&1 || need+=(gcc libc6-dev)

if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "Missing test peers: ${need[*]} (install with: sudo apt-get install ${need[*]})" >&2
  exit 0
fi
echo "Installing test peers: ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
