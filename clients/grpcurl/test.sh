#!/usr/bin/env bash
# End-to-end check of baton's gRPC API with the real grpcurl and server
# reflection (no proto files): starts a baton on a free port, drives every RPC
# of baton.v1.Lock and baton.v1.Election the way clients/grpcurl/README.md shows,
# and asserts on the answers.
#
#   bash clients/grpcurl/test.sh         # from anywhere; BATON_BIN overrides the binary
#
# Exits non-zero if any check fails; the last line is "N passed, M failed".
set -uo pipefail
cd "$(dirname "$0")/../.."

BATON="${BATON_BIN:-target/debug/baton}"
if [ ! -x "$BATON" ]; then
  echo "baton binary not found at $BATON (run 'cargo build --bins' or set BATON_BIN)" >&2
  exit 1
fi
if ! command -v grpcurl >/dev/null 2>&1; then
  echo "grpcurl not on PATH (bash scripts/install-test-deps.sh installs it)" >&2
  exit 1
fi
if ! command -v python3 >/dev/null 2>&1; then
  echo "python3 is needed to read grpcurl's JSON output" >&2
  exit 1
fi

TMP="$(mktemp -d)"
SERVER_PID=""
BG_PIDS=()
cleanup() {
  for pid in "${BG_PIDS[@]}"; do
    kill "$pid" 2>/dev/null
  done
  if [ -n "$SERVER_PID" ]; then
    kill "$SERVER_PID" 2>/dev/null
    wait "$SERVER_PID" 2>/dev/null
  fi
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

PASSED=0
FAILED=0
pass() { PASSED=$((PASSED + 1)); echo "ok   - $1"; }
fail() {
  FAILED=$((FAILED + 1))
  echo "FAIL - $1"
  if [ -n "${2:-}" ] && [ -f "$2" ]; then sed 's/^/       | /' "$2"; fi
}

# --- start the server -------------------------------------------------------
"$BATON" --memory --listen 127.0.0.1:0 >"$TMP/server.out" 2>"$TMP/server.err" &
SERVER_PID=$!
PORT=""
for _ in $(seq 1 300); do
  PORT="$(sed -n 's#^baton listening on http://127\.0\.0\.1:\([0-9][0-9]*\)$#\1#p' "$TMP/server.out" | head -n1)"
  [ -n "$PORT" ] && break
  if ! kill -0 "$SERVER_PID" 2>/dev/null; then break; fi
  sleep 0.1
done
if [ -z "$PORT" ]; then
  echo "baton did not print its listening line within 30s" >&2
  cat "$TMP/server.out" "$TMP/server.err" >&2
  exit 1
fi
ADDR="127.0.0.1:$PORT"
echo "baton on $ADDR (pid $SERVER_PID)"

# g OUT [grpcurl args...]: runs grpcurl against the server, stdout+stderr to
# OUT, and returns grpcurl's exit code (0 ok, 64+code for a gRPC error).
g() {
  local out="$1"
  shift
  local args=(-plaintext -connect-timeout 10)
  # Unless the caller limits the call itself, no call may hang the suite.
  case " $* " in *" -max-time "*) ;; *) args+=(-max-time 20) ;; esac
  grpcurl "${args[@]}" "$@" >"$out" 2>&1
}

# js FILE EXPR: evaluates a Python expression over the JSON messages grpcurl
# printed to FILE (`m` is the list of messages, `err` the error text after
# them, if any); succeeds if it is true.
js() {
  python3 - "$1" "$2" <<'PY'
import json, sys
text = open(sys.argv[1]).read()
dec = json.JSONDecoder()
m, i = [], 0
while True:
    while i < len(text) and text[i].isspace():
        i += 1
    if i >= len(text) or text[i] != "{":
        break
    obj, i = dec.raw_decode(text, i)
    m.append(obj)
err = text[i:]
try:
    ok = eval(sys.argv[2], {"m": m, "err": err})
except Exception as e:
    print("       | expression error: %r" % e)
    ok = False
sys.exit(0 if ok else 1)
PY
}

# jv FILE EXPR: prints the value of a Python expression over the messages.
jv() {
  python3 - "$1" "$2" <<'PY'
import json, sys
text = open(sys.argv[1]).read()
dec = json.JSONDecoder()
m, i = [], 0
while True:
    while i < len(text) and text[i].isspace():
        i += 1
    if i >= len(text) or text[i] != "{":
        break
    obj, i = dec.raw_decode(text, i)
    m.append(obj)
print(eval(sys.argv[2], {"m": m}))
PY
}

# check NAME FILE EXPR: one assertion over a grpcurl output file.
check() {
  if js "$2" "$3"; then pass "$1"; else fail "$1" "$2"; fi
}
# check_rc NAME FILE WANT GOT
check_rc() {
  if [ "$4" = "$3" ]; then pass "$1"; else fail "$1 (exit code $4, want $3)" "$2"; fi
}

# wait_for FILE EXPR SECONDS: polls until EXPR holds over FILE.
wait_for() {
  local deadline=$((SECONDS + $3))
  while [ "$SECONDS" -lt "$deadline" ]; do
    if js "$1" "$2" 2>/dev/null; then return 0; fi
    sleep 0.2
  done
  js "$1" "$2"
}

# --- reflection and health --------------------------------------------------
g "$TMP/list" "$ADDR" list; rc=$?
check_rc "list services through reflection" "$TMP/list" 0 $rc
for svc in baton.v1.Lock baton.v1.Election baton.v1.Status grpc.health.v1.Health; do
  if grep -qx "$svc" "$TMP/list"; then pass "reflection lists $svc"; else fail "reflection lists $svc" "$TMP/list"; fi
done

g "$TMP/lockmethods" "$ADDR" list baton.v1.Lock
if [ "$(sort "$TMP/lockmethods" | tr '\n' ' ')" = "baton.v1.Lock.Check baton.v1.Lock.Get baton.v1.Lock.List baton.v1.Lock.Release baton.v1.Lock.Renew baton.v1.Lock.Wait baton.v1.Lock.Watch " ]; then
  pass "baton.v1.Lock has Wait, Renew, Release, Get, List, Watch, Check"
else
  fail "baton.v1.Lock has Wait, Renew, Release, Get, List, Watch, Check" "$TMP/lockmethods"
fi
g "$TMP/elecmethods" "$ADDR" list baton.v1.Election
if [ "$(sort "$TMP/elecmethods" | tr '\n' ' ')" = "baton.v1.Election.Campaign baton.v1.Election.Leader baton.v1.Election.List baton.v1.Election.Observe baton.v1.Election.Resign " ]; then
  pass "baton.v1.Election has Campaign, Leader, Observe, Resign, List"
else
  fail "baton.v1.Election has Campaign, Leader, Observe, Resign, List" "$TMP/elecmethods"
fi

g "$TMP/health" "$ADDR" grpc.health.v1.Health/Check
check "health check says SERVING" "$TMP/health" 'm == [{"status": "SERVING"}]'

g "$TMP/describe" "$ADDR" describe baton.v1.WaitRequest
if grep -q 'timeout_ms' "$TMP/describe"; then pass "describe a message through reflection"; else fail "describe a message through reflection" "$TMP/describe"; fi

# --- Lock.Wait: a short hold, the stream ends on its own ---------------------
g "$TMP/short" -d '{"key":"grpcurl/short","value":"one","ttl_ms":1500}' "$ADDR" baton.v1.Lock/Wait; rc=$?
check_rc "Wait with ttl_ms 1500 ends by itself" "$TMP/short" 0 $rc
check "Wait streams acquired then ended(EXPIRED)" "$TMP/short" \
  'len(m) == 2 and m[0]["acquired"]["ttlMs"] == "1500" and int(m[0]["acquired"]["index"]) > 0 and m[1]["ended"] == {"index": m[0]["acquired"]["index"], "reason": "END_REASON_EXPIRED"}'
g "$TMP/short-get" -d '{"key":"grpcurl/short"}' "$ADDR" baton.v1.Lock/Get
check "an expired lock reads as free" "$TMP/short-get" 'm == [{"key": "grpcurl/short"}]'

# --- Lock.Wait to acquisition, leaving a long hold (stream cut by -max-time) --
g "$TMP/acq" -max-time 2 -d '{"key":"grpcurl/a","value":"alice","ttl_ms":60000}' "$ADDR" baton.v1.Lock/Wait
check "Wait acquires a free lock" "$TMP/acq" \
  'len(m) == 1 and m[0]["acquired"]["ttlMs"] == "60000" and int(m[0]["acquired"]["deadlineUnixMs"]) > 0'
IDX="$(jv "$TMP/acq" 'm[0]["acquired"]["index"]' 2>/dev/null || echo 0)"
if [ "$IDX" -gt "$(jv "$TMP/short" 'm[0]["acquired"]["index"]' 2>/dev/null || echo 0)" ]; then
  pass "fencing index rises ($IDX)"
else
  fail "fencing index rises (got $IDX)" "$TMP/acq"
fi

g "$TMP/get" -d '{"key":"grpcurl/a"}' "$ADDR" baton.v1.Lock/Get
check "Get shows the holder" "$TMP/get" \
  "m[0]['key'] == 'grpcurl/a' and m[0]['holder']['index'] == '$IDX' and m[0]['holder']['value'] == 'alice' and 0 < int(m[0]['holder']['remainingMs']) <= 60000 and 'queue' not in m[0]"

g "$TMP/check" -d "{\"key\":\"grpcurl/a\",\"index\":$IDX}" "$ADDR" baton.v1.Lock/Check
check "Check says the holder's token is current" "$TMP/check" \
  "m[0]['current'] is True and m[0]['holders'][0]['index'] == '$IDX'"
g "$TMP/check-stale" -d "{\"key\":\"grpcurl/a\",\"index\":1}" "$ADDR" baton.v1.Lock/Check
check "Check says another token is not current" "$TMP/check-stale" \
  "'current' not in m[0] and m[0]['holders'][0]['index'] == '$IDX'"

g "$TMP/renew-i" -d "{\"key\":\"grpcurl/a\",\"index\":$IDX,\"ttl_ms\":30000}" "$ADDR" baton.v1.Lock/Renew; rc=$?
check_rc "Renew by index succeeds" "$TMP/renew-i" 0 $rc
check "Renew by index resets the holder's deadline" "$TMP/renew-i" \
  "m[0]['index'] == '$IDX' and m[0]['held'] is True and int(m[0]['deadlineUnixMs']) > 0"
g "$TMP/get2" -d '{"key":"grpcurl/a"}' "$ADDR" baton.v1.Lock/Get
check "Get shows the renewed ttl" "$TMP/get2" \
  "m[0]['holder']['ttlMs'] == '30000' and 0 < int(m[0]['holder']['remainingMs']) <= 30000"

g "$TMP/renew-v" -d '{"key":"grpcurl/a","value":"alice","ttl_ms":45000}' "$ADDR" baton.v1.Lock/Renew; rc=$?
check_rc "Renew by value succeeds" "$TMP/renew-v" 0 $rc
check "Renew by value names the same entry" "$TMP/renew-v" "m[0]['index'] == '$IDX' and m[0]['held'] is True"

g "$TMP/renew-nf" -d '{"key":"grpcurl/a","value":"nobody","ttl_ms":1000}' "$ADDR" baton.v1.Lock/Renew; rc=$?
check_rc "Renew of an unknown value is NotFound (exit 69)" "$TMP/renew-nf" 69 $rc

# --- errors --------------------------------------------------------------------
g "$TMP/held" -d '{"key":"grpcurl/a","value":"bob","ttl_ms":1000,"timeout_ms":0}' "$ADDR" baton.v1.Lock/Wait; rc=$?
check_rc "Wait with timeout_ms 0 on a held lock fails at once (exit 73)" "$TMP/held" 73 $rc
check "... with FailedPrecondition" "$TMP/held" 'm == [] and "Code: FailedPrecondition" in err'

g "$TMP/deadline" -d '{"key":"grpcurl/a","value":"bob","ttl_ms":1000,"timeout_ms":500}' "$ADDR" baton.v1.Lock/Wait; rc=$?
check_rc "Wait with timeout_ms 500 on a held lock gives up (exit 68)" "$TMP/deadline" 68 $rc
check "... after queueing behind the holder, with the server's DeadlineExceeded" "$TMP/deadline" \
  "len(m) == 1 and m[0]['queued']['position'] == '1' and m[0]['queued']['holder']['index'] == '$IDX' and 'Code: DeadlineExceeded' in err and 'context deadline exceeded' not in err"
g "$TMP/get3" -d '{"key":"grpcurl/a"}' "$ADDR" baton.v1.Lock/Get
check "a timed-out request leaves nothing queued" "$TMP/get3" "m[0]['holder']['index'] == '$IDX' and 'queue' not in m[0]"

g "$TMP/empty" -d '{"key":""}' "$ADDR" baton.v1.Lock/Wait; rc=$?
check_rc "Wait with an empty key is InvalidArgument (exit 67)" "$TMP/empty" 67 $rc
check "... with code InvalidArgument" "$TMP/empty" '"Code: InvalidArgument" in err'
g "$TMP/empty-get" -d '{"key":""}' "$ADDR" baton.v1.Lock/Get; rc=$?
check_rc "Get with an empty key is InvalidArgument (exit 67)" "$TMP/empty-get" 67 $rc

# --- List -----------------------------------------------------------------------
g "$TMP/list-b" -max-time 2 -d '{"key":"grpcurl/b","ttl_ms":60000}' "$ADDR" baton.v1.Lock/Wait
check "Wait acquires a second key with no value" "$TMP/list-b" 'len(m) == 1 and "acquired" in m[0]'
g "$TMP/lst" -d '{"prefix":"grpcurl/"}' "$ADDR" baton.v1.Lock/List
check "List shows the keys in use under the prefix, in key order" "$TMP/lst" \
  "[k['key'] for k in m[0]['keys']] == ['grpcurl/a', 'grpcurl/b'] and m[0]['keys'][0]['holder']['index'] == '$IDX'"
g "$TMP/lst1" -d '{"prefix":"grpcurl/","page_size":1}' "$ADDR" baton.v1.Lock/List
check "List pages with page_size 1" "$TMP/lst1" \
  "[k['key'] for k in m[0]['keys']] == ['grpcurl/a'] and m[0].get('nextPageToken', '') != ''"
TOKEN="$(jv "$TMP/lst1" 'm[0].get("nextPageToken", "")' 2>/dev/null)"
g "$TMP/lst2" -d "{\"prefix\":\"grpcurl/\",\"page_size\":1,\"page_token\":\"$TOKEN\"}" "$ADDR" baton.v1.Lock/List
check "List's next page token gives the next key" "$TMP/lst2" "[k['key'] for k in m[0]['keys']] == ['grpcurl/b']"

# --- Release ------------------------------------------------------------------
g "$TMP/rel" -d "{\"key\":\"grpcurl/a\",\"index\":$IDX}" "$ADDR" baton.v1.Lock/Release; rc=$?
check_rc "Release by index succeeds" "$TMP/rel" 0 $rc
check "Release says it released the holder" "$TMP/rel" "m == [{'index': '$IDX', 'wasHolder': True}]"
g "$TMP/get4" -d '{"key":"grpcurl/a"}' "$ADDR" baton.v1.Lock/Get
check "after Release the lock is free" "$TMP/get4" 'm == [{"key": "grpcurl/a"}]'
g "$TMP/rel2" -d "{\"key\":\"grpcurl/a\",\"index\":$IDX}" "$ADDR" baton.v1.Lock/Release; rc=$?
check_rc "releasing it again is NotFound (exit 69)" "$TMP/rel2" 69 $rc

g "$TMP/acq-v" -max-time 2 -d '{"key":"grpcurl/a","value":"carol","ttl_ms":60000}' "$ADDR" baton.v1.Lock/Wait
g "$TMP/rel-v" -d '{"key":"grpcurl/a","value":"carol"}' "$ADDR" baton.v1.Lock/Release; rc=$?
check_rc "Release by value succeeds" "$TMP/rel-v" 0 $rc
check "Release by value names the entry acquired by that value" "$TMP/rel-v" \
  "m[0]['wasHolder'] is True and m[0]['index'] == '$(jv "$TMP/acq-v" 'm[0]["acquired"]["index"]' 2>/dev/null)' and int(m[0]['index']) > $IDX"
g "$TMP/rel-b" -d "{\"key\":\"grpcurl/b\",\"index\":$(jv "$TMP/list-b" 'm[0]["acquired"]["index"]' 2>/dev/null || echo 0)}" "$ADDR" baton.v1.Lock/Release

# --- Watch ----------------------------------------------------------------------
# The watch is on a prefix; a probe key under it proves the watch is live
# before the events the check is about happen.
grpcurl -plaintext -max-time 60 -d '{"key":"grpcurl/w/","prefix":true}' "$ADDR" baton.v1.Lock/Watch >"$TMP/watch" 2>&1 &
BG_PIDS+=($!)
live=0
for _ in $(seq 1 30); do
  g "$TMP/probe" -d '{"key":"grpcurl/w/probe","ttl_ms":1,"timeout_ms":0}' "$ADDR" baton.v1.Lock/Wait
  if wait_for "$TMP/watch" 'any(e["key"] == "grpcurl/w/probe" for e in m)' 1 2>/dev/null; then live=1; break; fi
done
if [ "$live" = 1 ]; then pass "Watch on a prefix sees a probe key's events"; else fail "Watch on a prefix sees a probe key's events" "$TMP/watch"; fi

g "$TMP/w-acq" -max-time 2 -d '{"key":"grpcurl/w/k","value":"dave","ttl_ms":60000}' "$ADDR" baton.v1.Lock/Wait
WIDX="$(jv "$TMP/w-acq" 'm[0]["acquired"]["index"]' 2>/dev/null || echo 0)"
g "$TMP/w-q" -d '{"key":"grpcurl/w/k","value":"erin","ttl_ms":60000,"timeout_ms":300}' "$ADDR" baton.v1.Lock/Wait
g "$TMP/w-renew" -d "{\"key\":\"grpcurl/w/k\",\"index\":$WIDX,\"ttl_ms\":20000}" "$ADDR" baton.v1.Lock/Renew
g "$TMP/w-rel" -d '{"key":"grpcurl/w/k","value":"dave"}' "$ADDR" baton.v1.Lock/Release
if wait_for "$TMP/watch" 'any(e["key"] == "grpcurl/w/k" and e["kind"] == "EVENT_KIND_RELEASED" for e in m)' 20; then
  pass "Watch sees the release"
else
  fail "Watch sees the release" "$TMP/watch"
fi
check "Watch sees acquired, queued, cancelled, renewed, released in order" "$TMP/watch" \
  "[(e['kind'], e.get('value', '')) for e in m if e['key'] == 'grpcurl/w/k'] == [('EVENT_KIND_ACQUIRED', 'dave'), ('EVENT_KIND_QUEUED', 'erin'), ('EVENT_KIND_CANCELLED', 'erin'), ('EVENT_KIND_RENEWED', 'dave'), ('EVENT_KIND_RELEASED', 'dave')]"
check "Watch events carry the index and the holder after the change" "$TMP/watch" \
  "[e for e in m if e['key'] == 'grpcurl/w/k'][0]['index'] == '$WIDX' and [e for e in m if e['key'] == 'grpcurl/w/k'][0]['holder']['value'] == 'dave' and 'holder' not in [e for e in m if e['key'] == 'grpcurl/w/k'][-1]"

# --- Election -------------------------------------------------------------------
grpcurl -plaintext -max-time 60 -d '{"election":"grpcurl/e"}' "$ADDR" baton.v1.Election/Observe >"$TMP/observe" 2>&1 &
BG_PIDS+=($!)
if wait_for "$TMP/observe" 'len(m) >= 1' 20; then
  pass "Observe starts with the current leader"
else
  fail "Observe starts with the current leader" "$TMP/observe"
fi
check "... which is nobody yet" "$TMP/observe" 'm[0] == {"election": "grpcurl/e"}'
sleep 0.5

g "$TMP/camp" -max-time 2 -d '{"election":"grpcurl/e","name":"n1","ttl_ms":60000}' "$ADDR" baton.v1.Election/Campaign
check "Campaign on an empty election is elected" "$TMP/camp" 'len(m) == 1 and m[0]["elected"]["ttlMs"] == "60000"'
EIDX="$(jv "$TMP/camp" 'm[0]["elected"]["index"]' 2>/dev/null || echo 0)"

g "$TMP/leader" -d '{"election":"grpcurl/e"}' "$ADDR" baton.v1.Election/Leader
check "Leader names the elected candidate and its index" "$TMP/leader" \
  "m[0]['election'] == 'grpcurl/e' and m[0]['leader']['name'] == 'n1' and m[0]['leader']['index'] == '$EIDX'"

g "$TMP/camp2" -d '{"election":"grpcurl/e","name":"n2","ttl_ms":60000,"timeout_ms":0}' "$ADDR" baton.v1.Election/Campaign; rc=$?
check_rc "a second candidate with timeout_ms 0 fails at once (exit 73, FailedPrecondition)" "$TMP/camp2" 73 $rc

g "$TMP/camp-again" -max-time 2 -d '{"election":"grpcurl/e","name":"n1","ttl_ms":50000,"timeout_ms":0}' "$ADDR" baton.v1.Election/Campaign
check "campaigning again with the leader's name renews at once, same index" "$TMP/camp-again" \
  "len(m) >= 1 and m[0]['elected']['index'] == '$EIDX' and m[0]['elected']['ttlMs'] == '50000'"

g "$TMP/samekey" -d '{"key":"grpcurl/e"}' "$ADDR" baton.v1.Lock/Get
check "election and lock share names: Lock/Get shows the leader" "$TMP/samekey" \
  "m[0]['holder']['value'] == 'n1' and m[0]['holder']['index'] == '$EIDX'"

g "$TMP/elist" -d '{"prefix":"grpcurl/e"}' "$ADDR" baton.v1.Election/List
check "Election/List shows the election with its leader" "$TMP/elist" \
  "[(e['election'], e['leader']['name']) for e in m[0]['elections']] == [('grpcurl/e', 'n1')]"

g "$TMP/resign" -d '{"election":"grpcurl/e","name":"n1"}' "$ADDR" baton.v1.Election/Resign; rc=$?
check_rc "Resign succeeds" "$TMP/resign" 0 $rc
check "Resign says the leader resigned" "$TMP/resign" "m == [{'index': '$EIDX', 'wasLeader': True}]"
g "$TMP/leader2" -d '{"election":"grpcurl/e"}' "$ADDR" baton.v1.Election/Leader
check "after Resign nobody leads" "$TMP/leader2" 'm == [{"election": "grpcurl/e"}]'
g "$TMP/resign2" -d '{"election":"grpcurl/e","name":"n1"}' "$ADDR" baton.v1.Election/Resign; rc=$?
check_rc "resigning again is NotFound (exit 69)" "$TMP/resign2" 69 $rc
g "$TMP/noname" -d '{"election":"grpcurl/e","name":""}' "$ADDR" baton.v1.Election/Campaign; rc=$?
check_rc "Campaign without a name is InvalidArgument (exit 67)" "$TMP/noname" 67 $rc

if wait_for "$TMP/observe" 'len(m) >= 3' 20; then pass "Observe sees the leader come and go"; else fail "Observe sees the leader come and go" "$TMP/observe"; fi
check "Observe: nobody, n1, nobody" "$TMP/observe" \
  "[x.get('leader', {}).get('name') for x in m] == [None, 'n1', None] and m[1]['leader']['index'] == '$EIDX'"

g "$TMP/status" -d '{}' "$ADDR" baton.v1.Status/Get; rc=$?
check_rc "Status/Get succeeds" "$TMP/status" 0 $rc
check "Status/Get names the backend and role" "$TMP/status" \
  "m[0]['backend'] == 'embedded' and m[0]['role'] == 'embedded' and 'uptimeMs' in m[0]"

# --- the server survived all of it ----------------------------------------------
if kill -0 "$SERVER_PID" 2>/dev/null; then pass "server still running"; else fail "server still running" "$TMP/server.err"; fi

# --- TLS: a second baton with a throw-away CA's certificate ----------------------
if ! command -v openssl >/dev/null 2>&1; then
  echo "openssl is needed for the TLS checks (bash scripts/install-test-deps.sh installs it)" >&2
  exit 1
fi
(
  cd "$TMP"
  openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 -subj "/CN=grpcurl test CA"
  openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj "/CN=server"
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n' >server.ext
  openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 2 -extfile server.ext
) >"$TMP/openssl.log" 2>&1 || { fail "made the TLS certificates" "$TMP/openssl.log"; exit 1; }
"$BATON" --memory --listen 127.0.0.1:0 --tls-cert-file "$TMP/server.pem" --tls-key-file "$TMP/server.key" \
  >"$TMP/tls.out" 2>"$TMP/tls.err" &
TLS_PID=$!
BG_PIDS+=("$TLS_PID")
TLS_PORT=""
for _ in $(seq 1 300); do
  TLS_PORT="$(sed -n 's#^baton listening on https://127\.0\.0\.1:\([0-9][0-9]*\)$#\1#p' "$TMP/tls.out" | head -n1)"
  [ -n "$TLS_PORT" ] && break
  sleep 0.1
done
if [ -z "$TLS_PORT" ]; then
  fail "baton with --tls-cert-file prints an https:// listening line" "$TMP/tls.err"
else
  TLS_ADDR="127.0.0.1:$TLS_PORT"
  grpcurl -cacert "$TMP/ca.pem" -connect-timeout 10 -max-time 20 "$TLS_ADDR" list >"$TMP/tls-list" 2>&1
  if grep -qx baton.v1.Lock "$TMP/tls-list"; then pass "over TLS, reflection lists baton.v1.Lock"; else fail "over TLS, reflection lists baton.v1.Lock" "$TMP/tls-list"; fi
  grpcurl -cacert "$TMP/ca.pem" -connect-timeout 10 -max-time 20 -d '{"key":"grpcurl/tls","timeout_ms":0}' \
    "$TLS_ADDR" baton.v1.Lock/Wait >"$TMP/tls-wait" 2>&1
  check "over TLS, Wait acquires a free lock" "$TMP/tls-wait" "m[0]['acquired']['index'] == '1'"
  if grpcurl -plaintext -connect-timeout 5 -max-time 10 "$TLS_ADDR" list >"$TMP/tls-plain" 2>&1; then
    fail "plaintext gRPC to the TLS port is refused" "$TMP/tls-plain"
  else
    pass "plaintext gRPC to the TLS port is refused"
  fi
  if grpcurl -connect-timeout 5 -max-time 10 "$TLS_ADDR" list >"$TMP/tls-noca" 2>&1; then
    fail "without the CA grpcurl refuses the certificate" "$TMP/tls-noca"
  else
    pass "without the CA grpcurl refuses the certificate"
  fi
fi

echo "$PASSED passed, $FAILED failed"
[ "$FAILED" = 0 ]
