#!/usr/bin/env bash
# End-to-end test of the dashboard in headless Chromium against a real baton:
# installs the locked npm dependencies (playwright-core, which drives the
# system's chromium and downloads no browser) and runs `node --test`.
#
#   bash dashboard/e2e/test.sh   # BATON_BIN overrides the binary, CHROMIUM the browser
#
# Needs node >= 18 and chromium (scripts/install-test-deps.sh installs it).
# Screenshots go to <repo>/test-artifacts/.
set -euo pipefail
cd "$(dirname "$0")"

command -v node >/dev/null || { echo "node is not installed (scripts/install-test-deps.sh installs it)" >&2; exit 1; }
command -v npm >/dev/null || { echo "npm is not installed (scripts/install-test-deps.sh installs it)" >&2; exit 1; }
node_major="$(node -p 'process.versions.node.split(".")[0]')"
if [ "$node_major" -lt 18 ]; then
  echo "node $(node --version) is too old: playwright-core needs node >= 18" >&2
  exit 1
fi
chromium_bin="${CHROMIUM:-/usr/bin/chromium}"
[ -x "$chromium_bin" ] || { echo "chromium not found at $chromium_bin (scripts/install-test-deps.sh installs it, or set CHROMIUM)" >&2; exit 1; }

npm ci --no-audit --no-fund --loglevel=error

status=0
node --test --test-reporter=spec dashboard.test.js auth.test.js || status=$?
if [ "$status" -eq 0 ]; then
  echo "dashboard e2e: PASSED (screenshot: test-artifacts/dashboard.png)"
else
  echo "dashboard e2e: FAILED (exit $status; see test-artifacts/dashboard-failure.png)" >&2
fi
exit "$status"
