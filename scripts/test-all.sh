#!/usr/bin/env bash
# Runs every test baton has, installing what they need on a fresh machine.
# This is the README's test command and what CI (.ci/run) calls.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "==> installing test dependencies"
bash scripts/install-test-deps.sh

echo "==> format and lints"
cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings

echo "==> building"
cargo build --locked --bins

echo "==> Rust unit, property and integration tests"
cargo test --locked


echo "==> benchmark harness, smoke configuration (proves it runs; times nothing)"
target/debug/baton-bench --smoke

echo "==> client and end-to-end suites"
for suite in \
  clients/grpcurl/test.sh \
  clients/python/test.sh \
  clients/node/test.sh \
  dashboard/e2e/test.sh; do
  echo "--> $suite"
  bash "$suite"
done

echo "==> all suites passed"
