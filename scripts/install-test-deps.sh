#!/usr/bin/env bash
# Installs the Debian packages whose programs the tests start as real peers,
# and the npm packages of the JavaScript client tests (tests/js).
# Only acts when something is missing and we are root (CI, fresh machines);
# otherwise it prints what to install and lets the tests decide.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
# webhooks: TestRealAlertmanager starts a real Alertmanager.
[ -x /usr/bin/prometheus-alertmanager ] || need+=(prometheus-alertmanager)
# bridges/irc/ircx (and the IRC bridge tests) start a real ngircd.
[ -x /usr/sbin/ngircd ] || need+=(ngircd)
# IRCv3 and SASL: InspIRCd 3 linked to Atheme services.
[ -x /usr/sbin/inspircd ] || need+=(inspircd)
[ -x /usr/bin/atheme-services ] || need+=(atheme-services)
# homeserver/clientapi TestTurnServer*: a real coturn checks the TURN
# credentials /voip/turnServer hands out (the tests start turnserver).
[ -x /usr/bin/turnserver ] || need+=(coturn)
command -v gcc >/dev/null 2>&1 || need+=(gcc libc6-dev)
# matrix-js-sdk tests (homeserver/jstest). Node.js must be >= 20; Debian
# bookworm's nodejs is 18, so there use NodeSource's or a newer Debian's.
command -v node >/dev/null 2>&1 || need+=(nodejs)
command -v npm >/dev/null 2>&1 || need+=(npm)

if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "Missing test peers: ${need[*]} (install with: sudo apt-get install ${need[*]})" >&2
  else
    echo "Installing test peers: ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  fi
fi

# tests/js/node_modules from the lockfile, when missing or older than
# package.json/package-lock.json (npm ci writes node_modules/.package-lock.json).
js=tests/js
stamp=$js/node_modules/.package-lock.json
if [ ! -f "$stamp" ] || [ "$js/package-lock.json" -nt "$stamp" ] || [ "$js/package.json" -nt "$stamp" ]; then
  if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    echo "node or npm is missing: the matrix-js-sdk tests will not run (then: cd $js && npm ci)" >&2
  elif node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 20 ? 0 : 1)'; then
    echo "Installing the JavaScript test packages (cd $js && npm ci)"
    (cd "$js" && npm ci --no-audit --no-fund --loglevel=error) ||
      echo "npm ci failed: the matrix-js-sdk tests will not run (retry: cd $js && npm ci)" >&2
  else
    echo "Node.js $(node --version) is too old for matrix-js-sdk (needs >= 20): the JavaScript tests will not run" >&2
  fi
fi
