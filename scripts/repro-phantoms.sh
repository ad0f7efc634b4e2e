#!/usr/bin/env bash
# Issue 11's reproduction: hold `k`, keep the engine busy renewing it, and
# fire 2,000 `curl -m 0.00N -X POST /mod/v2/lock/k?ttl=60` that give up after
# 1-5 ms. Prints the queued entries and waiters left once every client is
# gone (both must be 0; the holder's own request is not counted), then
# releases the holder and prints who holds `k` (must be nobody).
# Usage: scripts/repro-phantoms.sh [path/to/baton] [--memory]
set -euo pipefail
bin=${1:-target/release/baton}
mode=${2:-}
dir=$(mktemp -d)
port=$((20000 + RANDOM % 20000))
if [ "$mode" = "--memory" ]; then store=(--memory); else store=(--data-dir "$dir/data"); fi
"$bin" --listen "127.0.0.1:$port" "${store[@]}" >/dev/null 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; kill $renewer 2>/dev/null; rm -rf "$dir"' EXIT
renewer=
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/health" >/dev/null && break; sleep 0.05; done
base="http://127.0.0.1:$port/mod/v2/lock/k"
index=$(curl -s -X POST "$base?ttl=0&value=holder")
( while :; do curl -s -X PUT "$base?ttl=0&value=holder" >/dev/null; done ) &
renewer=$!
for i in $(seq 2000); do
  curl -s -m "0.00$((1 + i % 5))" -X POST "$base?ttl=60" >/dev/null &
  if (( i % 100 == 0 )); then wait -n 2>/dev/null || true; fi
done
# Wait for every curl (not the renewer).
for job in $(jobs -p); do [ "$job" = "$renewer" ] || [ "$job" = "$pid" ] || wait "$job" 2>/dev/null || true; done
kill $renewer; wait $renewer 2>/dev/null || true
sleep 1
echo "status after 2,000 abandoned requests: $(curl -s "http://127.0.0.1:$port/v1/status")"
queued=$(curl -s "http://127.0.0.1:$port/v1/lock/get?key=k" | python3 -c 'import json,sys; print(len(json.load(sys.stdin).get("queue",[])))')
echo "phantom queued entries: $queued"
curl -s -X DELETE "$base?index=$index" >/dev/null
echo "holder of k after the holder released: '$(curl -s "$base?field=index")' (empty = nobody)"
