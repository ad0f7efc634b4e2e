#!/usr/bin/env bash
# Tests the Python client against a real baton: makes clients/python/.venv if
# missing, installs the pinned requirements, generates the gRPC stubs from
# ../../proto with grpcio-tools, and runs pytest.
#
#   bash clients/python/test.sh [pytest args]   # BATON_BIN overrides the binary
set -euo pipefail
cd "$(dirname "$0")"

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "==> creating clients/python/.venv"
  "$PYTHON" -m venv .venv
fi
# Install only when requirements.txt changed since the last install.
stamp=.venv/.requirements.sha256
want="$(sha256sum requirements.txt | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "==> installing requirements.txt"
  .venv/bin/python -m pip install -q --disable-pip-version-check -r requirements.txt
  echo "$want" >"$stamp"
fi

.venv/bin/python generate.py
exec .venv/bin/python -m pytest "$@"
