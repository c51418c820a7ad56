#!/usr/bin/env bash
# HTTP load benchmark for `ors serve`, driven by wrk over loopback.
#
#   benches/http/load.sh            DURATION=10s per phase, CONNS=64
#   benches/http/load.sh --smoke    DURATION=2s, CONNS=8 (for CI)
#
# Environment: DURATION (wrk -d, default 10s), CONNS (wrk -c, default 64),
# THREADS (wrk -t, default 2), PORT (first port tried, default 18181),
# SESSIONS (sessions the events phase spreads over, default 64),
# MAX_SESSIONS (the server's limits.max_sessions, default 1000000),
# STORE (sqlite, full, none or a postgres:// admin URL; default sqlite),
# CARGO_TARGET_DIR (default target), ORS_BIN (an `ors` binary to measure
# instead of building this tree's: another commit's, for a before/after pair).
#
# Phases: "starts" (POST /scxml/session/start) and "events" (POST
# /scxml/session/<id>/event/ping round-robin over SESSIONS sessions), each
# on a fresh server with a fresh store, then "ceiling": the events phase's
# requests against benches/http_ceiling.rs, an axum server on the same
# stack that only answers them, and a last line with ors ÷ ceiling. Each prints one JSON line; the
# script exits non-zero when any reply was not 2xx, wrk saw socket errors,
# the sessions' counters do not add up, or the server logged an error.
set -euo pipefail

smoke=0
for arg in "$@"; do
  case "$arg" in
    --smoke) smoke=1 ;;
    -h|--help) sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "load.sh: unknown option $arg" >&2; exit 2 ;;
  esac
done

DURATION="${DURATION:-10s}"
CONNS="${CONNS:-64}"
if [ "$smoke" = 1 ]; then
  DURATION=2s
  CONNS=8
fi
THREADS="${THREADS:-2}"
PORT="${PORT:-18181}"
SESSIONS="${SESSIONS:-64}"
MAX_SESSIONS="${MAX_SESSIONS:-1000000}"

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"
# shellcheck source=benches/store.sh
. "$root/benches/store.sh"

# --- build --------------------------------------------------------------
target="${CARGO_TARGET_DIR:-target}"
case "$target" in /*) ;; *) target="$root/$target" ;; esac
if [ -n "${ORS_BIN:-}" ]; then
  ors="$ORS_BIN"
else
  cargo build --release --quiet
  ors="$target/release/ors"
fi
[ -x "$ors" ] || { echo "load.sh: no binary at $ors" >&2; exit 1; }

# --- wrk ------------------------------------------------------------------
if ! command -v wrk >/dev/null 2>&1; then
  sudo=""
  if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq wrk >/dev/null
fi
command -v curl >/dev/null 2>&1 || { echo "load.sh: curl is required" >&2; exit 1; }

# --- server ---------------------------------------------------------------
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
tries=0
while port_busy "$PORT"; do
  tries=$((tries + 1))
  [ "$tries" -lt 50 ] || { echo "load.sh: no free port near $PORT" >&2; exit 1; }
  PORT=$((PORT + 1))
done
base="http://127.0.0.1:$PORT"

work="$(mktemp -d)"
# The ORS API is an operator's: the server gets this token, wrk and curl send it.
ORS_BENCH_TOKEN="bench-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
export ORS_BENCH_TOKEN
auth="Authorization: Bearer $ORS_BENCH_TOKEN"
server_pid=""
cleanup() {
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  store_cleanup
  rm -rf "$work"
}
trap cleanup EXIT
store_init

# Every request of the starts phase leaves a running session behind: at
# ~20k starts/s the default limits.max_sessions (200000) is reached in about
# 10 s, after which starts answer 503. Raise it so that longer runs measure
# the server rather than the cap (each idle session costs ~7.5 KB).
cat >"$work/ors.toml" <<TOML
[limits]
max_sessions = $MAX_SESSIONS

[store]
$(store_toml)

[security]
bearer_token = "$ORS_BENCH_TOKEN"
TOML
# Each phase gets a fresh server and a fresh store (data dir, or PostgreSQL
# database), so the events figure is not skewed by the sessions the starts
# phase left behind (see README.md on idle sessions), and no server
# recovers the sessions of an earlier phase.
start_server() {
  local phase="$1"
  store_prepare "$phase"
  "$ors" serve --no-supervisor --listen "127.0.0.1:$PORT" --config "$work/ors.toml" "${store_args[@]}" \
    >>"$work/server.log" 2>&1 &
  server_pid=$!
  for _ in $(seq 1 100); do
    if curl -fsS "$base/health" >/dev/null 2>&1; then break; fi
    if ! kill -0 "$server_pid" 2>/dev/null; then
      echo "load.sh: the server exited early:" >&2
      cat "$work/server.log" >&2
      exit 1
    fi
    sleep 0.1
  done
  curl -fsS "$base/health" >/dev/null || { echo "load.sh: /health never answered" >&2; exit 1; }
  echo "ors serve on $base (pid $server_pid, store $store_label); DURATION=$DURATION CONNS=$CONNS THREADS=$THREADS" >&2
}
stop_server() {
  kill "$server_pid" 2>/dev/null || true
  wait "$server_pid" 2>/dev/null || true
  server_pid=""
}
start_server starts

# Runs one wrk phase; prints its JSON line, fails on non-2xx or socket errors.
run_phase() {
  local phase="$1" script="$2"; shift 2
  local out="$work/$phase.out"
  wrk -t "$THREADS" -c "$CONNS" -d "$DURATION" --latency -s "$script" "$base" "$@" >"$out" 2>&1 || {
    cat "$out" >&2; echo "load.sh: wrk failed in phase $phase" >&2; return 1; }
  # wrk's own report (and a sample non-2xx reply, if any) go to stderr.
  grep -v '^{"phase"' "$out" >&2 || true
  local line
  line="$(grep '^{"phase"' "$out" | tail -n 1)"
  [ -n "$line" ] || { echo "load.sh: no summary from phase $phase" >&2; return 1; }
  line="$(sed 's/^{"phase":"[^"]*",/{"phase":"'"$phase"'","store":"'"$store_label"'",/' <<<"$line")"
  echo "$line"
  echo "$line" >"$work/$phase.json"
  local non2xx errors
  non2xx="$(sed -n 's/.*"non2xx":\([0-9]*\).*/\1/p' <<<"$line")"
  errors="$(sed -n 's/.*"errors":\([0-9]*\).*/\1/p' <<<"$line")"
  if [ "${non2xx:-1}" != 0 ] || [ "${errors:-1}" != 0 ]; then
    echo "load.sh: phase $phase saw $non2xx non-2xx replies and $errors socket errors" >&2
    return 1
  fi
}

# --- phase a: starts --------------------------------------------------------
run_phase starts "$here/start.lua"

# --- phase b: events --------------------------------------------------------
rss_kb="$(awk '/VmRSS/ {print $2}' "/proc/$server_pid/status" 2>/dev/null || echo 0)"
echo "server resident memory after the starts phase: $((rss_kb / 1024)) MiB" >&2
stop_server
start_server events
ids="$work/ids.txt"
: >"$ids"
for _ in $(seq 1 "$SESSIONS"); do
  reply="$(curl -fsS -X POST -H "$auth" -H 'Content-Type: application/x-www-form-urlencoded' \
    --data 'src=benches/http/tiny.scxml' "$base/scxml/session/start")"
  id="$(sed -n 's/.*"sessionid":"\([^"]*\)".*/\1/p' <<<"$reply")"
  [ -n "$id" ] || { echo "load.sh: no sessionid in: $reply" >&2; exit 1; }
  echo "$id" >>"$ids"
done
run_phase events "$here/events.lua" -- "$ids"
events_line="$(cat "$work/events.json")"

# Every 2xx 'ping' reply means the event was processed, so the sessions'
# counters must add up to at least the requests wrk completed (at most
# CONNS more: replies still in flight when wrk stopped).
completed="$(sed -n 's/.*"requests":\([0-9]*\).*/\1/p' <<<"$events_line")"
total=0
while read -r id; do
  q="$(curl -fsS -H "$auth" "$base/scxml/session/$id/query")"
  c="$(sed -n 's/.*"count":\([0-9]*\).*/\1/p' <<<"$q")"
  [ -n "$c" ] || { echo "load.sh: no count for session $id: $q" >&2; exit 1; }
  total=$((total + c))
done <"$ids"
echo "sum of 'count' over $SESSIONS sessions: $total (wrk completed $completed)" >&2
if [ "$total" -lt "$completed" ] || [ "$total" -gt $((completed + CONNS)) ]; then
  echo "load.sh: the counters do not match the completed requests" >&2
  exit 1
fi

# --- server side ---------------------------------------------------------------
curl -fsS -H "$auth" "$base/metrics" | grep '^ors_events_processed_total' || {
  echo "load.sh: /metrics has no ors_events_processed_total" >&2; exit 1; }
# (Log lines carry ANSI colour codes, so no word boundaries here.)
warns="$(grep -c 'WARN' "$work/server.log" || true)"
if [ "$warns" != 0 ]; then
  echo "server log: $warns warning line(s), first ones:" >&2
  grep 'WARN' "$work/server.log" | head -n 5 >&2
fi
if grep -qE 'ERROR|panicked' "$work/server.log"; then
  echo "load.sh: the server logged errors:" >&2
  grep -E 'ERROR|panicked' "$work/server.log" | head -n 20 >&2
  exit 1
fi
stop_server

# --- phase c: the ceiling ------------------------------------------------------
# The same wrk script against an axum server on the same stack whose handler
# only answers the events phase's request shape (benches/http_ceiling.rs):
# the events phase's rate divided by this one is the share of the HTTP
# stack's ceiling that the session engine and the store leave.
ceiling="$(cargo bench --quiet --bench http_ceiling --no-run --message-format=json 2>/dev/null \
  | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -n 1)"
[ -x "$ceiling" ] || { echo "load.sh: the ceiling server did not build" >&2; exit 1; }
"$ceiling" --listen "127.0.0.1:$PORT" >>"$work/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 1 100); do
  if curl -fsS "$base/health" >/dev/null 2>&1; then break; fi
  sleep 0.1
done
store_label_ors="$store_label"
store_label="none"
run_phase ceiling "$here/events.lua" -- "$ids"
store_label="$store_label_ors"
ceiling_line="$(cat "$work/ceiling.json")"
rate() { sed -n 's/.*"requests_per_sec":\([0-9.]*\).*/\1/p' <<<"$1"; }
p99() { sed -n 's/.*"p99_ms":\([0-9.]*\).*/\1/p' <<<"$1"; }
awk -v o="$(rate "$events_line")" -v c="$(rate "$ceiling_line")" -v op="$(p99 "$events_line")" -v cp="$(p99 "$ceiling_line")" \
  'BEGIN { printf "{\"phase\":\"events_vs_ceiling\",\"ors_per_sec\":%s,\"ceiling_per_sec\":%s,\"ratio\":%.3f,\"ors_p99_ms\":%s,\"ceiling_p99_ms\":%s}\n", o, c, o / c, op, cp }'

