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

echo "==> the lean client build (--no-default-features --features client)"
# What a program that only talks to baton compiles (README, "Rust client"):
# the client library and the API types, with none of the server's weight.
lean=(--locked --no-default-features --features client)
lean_deps=$(cargo tree "${lean[@]}" -e normal --prefix none)
for heavy in redb axum etcd-client; do
  if grep -q "^$heavy v" <<<"$lean_deps"; then
    echo "FAIL: the client build depends on $heavy, a server-only crate; it comes in through:" >&2
    cargo tree "${lean[@]}" -e normal -i "$heavy" >&2
    echo "make it optional and enable it from the \"server\" feature (Cargo.toml)" >&2
    exit 1
  fi
done
# Type-checks (build script included) and lints the library as that build
# compiles it: a server-only item left in src/client/ or src/proto/ fails here.
cargo clippy "${lean[@]}" -- -D warnings

echo "==> building"
cargo build --locked --bins

echo "==> Rust unit, property and integration tests (cargo-nextest: .config/nextest.toml)"
# Every test in a process of its own, four at a time across all binaries;
# the doc examples run through cargo test (nextest does not run them).
cargo nextest run --locked
cargo test --locked --doc


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
