#!/usr/bin/env bash
# Tests the Node client against a real baton: installs the locked
# dependencies (npm ci; npm install if there is no lock file) and runs
# `node --test`.
#
#   bash clients/node/test.sh        # BATON_BIN overrides the binary
set -euo pipefail
cd "$(dirname "$0")"

command -v node >/dev/null || { echo "node is not installed (scripts/install-test-deps.sh installs it)" >&2; exit 1; }
command -v npm >/dev/null || { echo "npm is not installed (scripts/install-test-deps.sh installs it)" >&2; exit 1; }
node_major="$(node -p 'process.versions.node.split(".")[0]')"
if [ "$node_major" -lt 18 ]; then
  echo "node $(node --version) is too old: baton-client needs node >= 18" >&2
  exit 1
fi

if [ -f package-lock.json ]; then
  npm ci --no-audit --no-fund --loglevel=error
else
  npm install --no-audit --no-fund --loglevel=error
fi
exec node --test
