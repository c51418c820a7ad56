#!/usr/bin/env bash
# Durable-sessions benchmark for `ors serve`: many sessions, live and
# hibernated, driven by wrk over loopback (see README.md).
#
#   benches/durable/sessions.sh            N=100000 sessions per phase
#   benches/durable/sessions.sh --smoke    N=2000, 1 s wake runs
#
# Environment: N (sessions per phase, default 100000), STORE (sqlite, full,
# none or a postgres:// admin URL; default sqlite; the hibernated and
# timers phases need a store), PHASES (default "live hibernated"), CONNS (wrk -c for
# starts and live events, default 64), THREADS (wrk -t, default 2),
# WAKE_CONNS (wrk -c of the runs against hibernated sessions, default
# "8 64"), WAKE_DURATION (wrk -d of each of those runs, default 5s), PORT
# (first port tried, default 18281), HIBERNATE_TIMEOUT (seconds to wait
# for all N to hibernate, default 1800), TIMER_DELAY (timers phase),
# CARGO_TARGET_DIR (default target).
#
# Phases, each on a fresh server with a fresh store:
#   live        hibernate_after_secs = 0 (no warm tier): start N sessions (JSON line
#               "live-starts", with the server's VmRSS), then one event to
#               each of them ("live-events")
#   hibernated  hibernate_after_secs = 1: start N sessions
#               ("hibernated-starts"), wait until all N are hibernated
#               (VmRSS then), then for each WAKE_CONNS one wrk run of
#               WAKE_DURATION whose every request wakes a different
#               sleeping session ("wake-c8", "wake-c64")
#   warm        (not in the default PHASES) the same with the warm tier:
#               warm_after_secs = 1, hibernate_after_secs = 0, so every
#               sleeping session is woken from memory ("warm-wake-c8", …)
#   timers      (not in the default PHASES) hibernate_after_secs = 1: start
#               N sessions of timer.scxml, each with a timer TIMER_DELAY
#               seconds out (default N / 1500 + 60), wait until all N are
#               hibernated with their timers pending (VmRSS then), then
#               until every timer has fired and every session is asleep
#               again ("timers": how long the firing took, VmRSS after)
# Exits non-zero on any non-2xx reply, socket error or timeout, when the
# server's counters disagree with the replies, or the server logged an error.
set -euo pipefail

smoke=0
for arg in "$@"; do
  case "$arg" in
    --smoke) smoke=1 ;;
    -h|--help) sed -n '2,37p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "sessions.sh: unknown option $arg" >&2; exit 2 ;;
  esac
done

N="${N:-100000}"
WAKE_DURATION="${WAKE_DURATION:-5s}"
if [ "$smoke" = 1 ]; then
  N=2000
  WAKE_DURATION=1s
fi
PHASES="${PHASES:-live hibernated}"
CONNS="${CONNS:-64}"
THREADS="${THREADS:-2}"
WAKE_CONNS="${WAKE_CONNS:-8 64}"
HIBERNATE_TIMEOUT="${HIBERNATE_TIMEOUT:-1800}"
PORT="${PORT:-18281}"

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"
# shellcheck source=benches/store.sh
. "$root/benches/store.sh"

fail() { echo "sessions.sh: $*" >&2; exit 1; }

# --- build, tools -------------------------------------------------------------
target="${CARGO_TARGET_DIR:-target}"
case "$target" in /*) ;; *) target="$root/$target" ;; esac
cargo build --release --quiet
ors="$target/release/ors"
[ -x "$ors" ] || fail "no binary at $ors"
command -v wrk >/dev/null 2>&1 || fail "wrk is required (Debian package wrk)"
command -v curl >/dev/null 2>&1 || fail "curl is required"

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
tries=0
while port_busy "$PORT"; do
  tries=$((tries + 1))
  [ "$tries" -lt 50 ] || fail "no free port near $PORT"
  PORT=$((PORT + 1))
done
base="http://127.0.0.1:$PORT"

work="$(mktemp -d)"
# The ORS API is an operator's: the server gets this token, wrk and curl send it.
ORS_BENCH_TOKEN="bench-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
export ORS_BENCH_TOKEN
auth="Authorization: Bearer $ORS_BENCH_TOKEN"
server_pid=""
wrk_pid=""
alive() { # a process of ours that has not exited (zombies do not count)
  local state
  state="$(awk '/^State:/ {print $2}' "/proc/$1/status" 2>/dev/null || true)"
  [ -n "$state" ] && [ "$state" != Z ]
}
stop_server() {
  if [ -n "$server_pid" ]; then
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  server_pid=""
}
cleanup() {
  if [ -n "$wrk_pid" ]; then
    kill "$wrk_pid" 2>/dev/null || true
    wait "$wrk_pid" 2>/dev/null || true
  fi
  stop_server
  store_cleanup
  rm -rf "$work"
}
trap cleanup EXIT
store_init
case " $PHASES " in
  *" hibernated "*|*" timers "*) [ "$store_label" != none ] || fail "the hibernated and timers phases need a store (STORE=none)" ;;
esac

# --- helpers ------------------------------------------------------------------
metric() { # the value of one /metrics series, e.g. metric 'ors_sessions{state="running"}'
  curl -fsS -H "$auth" "$base/metrics" | awk -v k="$1" '$1 == k {print $2}'
}
rss_mib() {
  awk '/^VmRSS/ {printf "%.0f", $2 / 1024}' "/proc/$server_pid/status"
}

start_server() { # phase hibernate_after_secs warm_after_secs
  local phase="$1" after="$2" warm="${3:-0}"
  cat >"$work/ors-$phase.toml" <<TOML
[limits]
max_sessions = $((N * 4 + 1000))

[store]
hibernate_after_secs = $after
warm_after_secs = $warm
$(store_toml)

[security]
bearer_token = "$ORS_BENCH_TOKEN"
TOML
  store_prepare "$phase"
  "$ors" serve --no-supervisor --listen "127.0.0.1:$PORT" --config "$work/ors-$phase.toml" "${store_args[@]}" \
    >>"$work/server.log" 2>&1 &
  server_pid=$!
  for _ in $(seq 1 300); do
    curl -fsS "$base/health" >/dev/null 2>&1 && break
    alive "$server_pid" || { cat "$work/server.log" >&2; fail "the server exited early"; }
    sleep 0.1
  done
  curl -fsS "$base/health" >/dev/null || fail "/health never answered"
  echo "ors serve on $base (pid $server_pid, store $store_label, hibernate_after_secs=$after, warm_after_secs=$warm)" >&2
}

# Runs walk.lua once: name conns duration walk-args...; leaves the JSON
# line (with "store" added) in $line and prints it; fails on non-2xx or
# socket errors. walk-args after the mode and phase: THREADS OUTDIR ...
run_walk() {
  local name="$1" conns="$2" duration="$3" mode="$4"; shift 4
  local out="$work/walk-$name" threads="$THREADS"
  [ "$conns" -ge "$threads" ] || threads="$conns"
  rm -rf "$out"
  mkdir -p "$out"
  wrk -t "$threads" -c "$conns" -d "$duration" --timeout 30s --latency \
    -s "$here/walk.lua" "$base" -- "$mode" "$name" "$threads" "$out" "$@" >"$out/wrk.out" 2>&1 &
  wrk_pid=$!
  # Interrupt wrk (it then reports as usual) once every thread is done.
  while alive "$wrk_pid"; do
    if [ "$(find "$out" -name 'done-*' | wc -l)" -ge "$threads" ]; then
      kill -INT "$wrk_pid" 2>/dev/null || true
      break
    fi
    sleep 0.02
  done
  local rc=0
  wait "$wrk_pid" || rc=$?
  wrk_pid=""
  grep -v '^{"phase"' "$out/wrk.out" >&2 || true
  [ "$rc" = 0 ] || fail "wrk failed ($rc) in $name"
  line="$(grep '^{"phase"' "$out/wrk.out" | tail -n 1)"
  [ -n "$line" ] || fail "no summary from $name"
  line="$(sed 's/^{"phase":"\([^"]*\)",/{"phase":"\1","store":"'"$store_label"'",/' <<<"$line")"
  local non2xx errors
  non2xx="$(sed -n 's/.*"non2xx":\([0-9]*\).*/\1/p' <<<"$line")"
  errors="$(sed -n 's/.*"errors":\([0-9]*\).*/\1/p' <<<"$line")"
  if [ "${non2xx:-1}" != 0 ] || [ "${errors:-1}" != 0 ]; then
    echo "$line"
    fail "$name saw $non2xx non-2xx replies and $errors socket errors"
  fi
}
field() { sed -n 's/.*"'"$1"'":\([0-9.a-z]*\).*/\1/p' <<<"$2"; }
add_fields() { # line ,"k":v,...  (appended before the closing brace)
  echo "${1%\}}$2}"
}

# Starts N sessions, collecting their ids into $work/ids-<phase>.txt;
# optional: the document and the form-encoded start parameters.
start_sessions() {
  local phase="$1" src="${2:-benches/http/tiny.scxml}" params="${3:-}"
  run_walk "$phase-starts" "$CONNS" 3600s start "$N" "$src" "$params"
  [ "$(field exhausted "$line")" = true ] || fail "$phase-starts did not finish"
  cat "$work/walk-$phase-starts"/ids-*.txt >"$work/ids-$phase.txt"
  local got unique
  got="$(wc -l <"$work/ids-$phase.txt")"
  unique="$(sort -u "$work/ids-$phase.txt" | wc -l)"
  if [ "$got" != "$N" ] || [ "$unique" != "$N" ]; then
    fail "$phase: $got ids ($unique distinct) for $N starts"
  fi
  local running
  running="$(metric 'ors_sessions{state="running"}')"
  [ "$running" = "$N" ] || fail "$phase: ors_sessions{state=\"running\"} is $running, not $N"
}

# Queries a sample of sessions (every STEP-th id from line FIRST on, at
# most LIMIT of them, 0 = no limit); each must be running with count ==
# EXPECT.
check_sample() { # ids first step limit expect
  local ids="$1" first="$2" step="$3" limit="$4" expect="$5" checked=0 q c
  while read -r id; do
    q="$(curl -fsS -H "$auth" "$base/scxml/session/$id/query")"
    c="$(sed -n 's/.*"count":\([0-9]*\).*/\1/p' <<<"$q")"
    [ "$c" = "$expect" ] || fail "session $id: count '$c', expected $expect: $q"
    grep -q '"status":"running"' <<<"$q" || fail "session $id is not running: $q"
    checked=$((checked + 1))
  done < <(awk -v f="$first" -v s="$step" -v l="$limit" \
    'NR >= f && (NR - f) % s == 0 && (l == 0 || NR < f + s * l)' "$ids")
  echo "checked $checked sessions: running, count = $expect" >&2
}

# --- phase "live" -----------------------------------------------------------------
phase_live() {
  start_server live 0
  start_sessions live
  local rss
  rss="$(rss_mib)"
  add_fields "$line" ",\"sessions\":$N,\"rss_mib\":$rss"
  local before after
  before="$(metric ors_events_processed_total)"
  run_walk live-events "$CONNS" 900s event "$work/ids-live.txt" 1 "$N"
  [ "$(field exhausted "$line")" = true ] || fail "live-events did not finish"
  after="$(metric ors_events_processed_total)"
  [ $((after - before)) = "$N" ] || fail "live-events: $((after - before)) events processed, expected $N"
  local hibernated
  hibernated="$(metric 'ors_sessions{state="hibernated"}')"
  [ "$hibernated" = 0 ] || fail "live: $hibernated sessions hibernated with hibernate_after_secs = 0"
  add_fields "$line" ",\"sessions\":$N,\"rss_mib\":$(rss_mib)"
  check_sample "$work/ids-live.txt" 1 $((N / 100 > 0 ? N / 100 : 1)) 0 1
  stop_server
}

# Polls /metrics until all N sessions are hibernated; sets $waited (s).
wait_hibernated() {
  local t0 h=0 polls=0
  t0="$(date +%s.%N)"
  while :; do
    h="$(metric 'ors_sessions{state="hibernated"}')"
    waited="$(since "$t0")"
    [ "$h" = "$N" ] && break
    awk -v w="$waited" -v t="$HIBERNATE_TIMEOUT" 'BEGIN {exit !(w < t)}' ||
      fail "only $h of $N sessions hibernated after $waited s"
    polls=$((polls + 1))
    [ $((polls % 60)) != 0 ] || echo "waiting for hibernation: $h of $N after $waited s" >&2
    sleep 0.5
  done
}
since() { # seconds since a `date +%s.%N` reading, one decimal
  awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}'
}

# --- phase "hibernated" -------------------------------------------------------------
phase_hibernated() { # phase name ("hibernated" or "warm")
  local phase="${1:-hibernated}" woken_metric=ors_sessions_woken_total
  if [ "$phase" = warm ]; then
    start_server warm 0 1
    woken_metric=ors_sessions_woken_warm_total
  else
    start_server hibernated 1
  fi
  start_sessions "$phase"
  local rss_live
  rss_live="$(rss_mib)"
  local started_line="$line"
  wait_hibernated
  add_fields "$started_line" ",\"sessions\":$N,\"rss_mib_live\":$rss_live,\"rss_mib\":$(rss_mib),\"all_hibernated_after_s\":$waited"
  # Disjoint slices of the ids, one per run: no session gets two events.
  local runs=0 c
  for c in $WAKE_CONNS; do runs=$((runs + 1)); done
  local slice=$((N / runs)) first=1 w0 w1 h1
  for c in $WAKE_CONNS; do
    w0="$(metric "$woken_metric")"
    local run="wake-c$c"
    [ "$phase" = hibernated ] || run="$phase-wake-c$c"
    run_walk "$run" "$c" "$WAKE_DURATION" event "$work/ids-$phase.txt" "$first" "$slice"
    w1="$(metric "$woken_metric")"
    h1="$(metric 'ors_sessions{state="hibernated"}')"
    local req
    req="$(field requests "$line")"
    [ $((w1 - w0)) -ge "$req" ] || fail "wake-c$c: $req events answered but only $((w1 - w0)) sessions woken"
    add_fields "$line" ",\"conns\":$c,\"woken\":$((w1 - w0)),\"hibernated_after\":$h1"
    [ "$(field exhausted "$line")" = false ] ||
      echo "sessions.sh: wake-c$c used up its $slice sessions before $WAKE_DURATION (raise N)" >&2
    # The first sessions of the slice (each thread's first ones) got their
    # event early in the run: count is 1 (queried after the metrics above,
    # since a query wakes a session too).
    check_sample "$work/ids-$phase.txt" "$first" 1 $((THREADS * 5)) 1
    first=$((first + slice))
  done
  stop_server
}

# --- phase "timers" -------------------------------------------------------------
phase_timers() {
  start_server timers 1
  local delay="${TIMER_DELAY:-$((N / 1500 + 60))}" t_start e0
  t_start="$(date +%s.%N)"
  e0="$(metric ors_events_processed_total)"
  start_sessions timers benches/durable/timer.scxml "delay=${delay}s"
  local started_line="$line" starts_took rss_live
  starts_took="$(since "$t_start")"
  rss_live="$(rss_mib)"
  wait_hibernated
  local fired rss_pending
  fired=$(($(metric ors_events_processed_total) - e0))
  [ "$fired" = 0 ] ||
    fail "timers: $fired timers fired before all $N sessions were asleep (raise TIMER_DELAY, now $delay s)"
  rss_pending="$(rss_mib)"
  add_fields "$started_line" ",\"sessions\":$N,\"rss_mib_live\":$rss_live,\"rss_mib\":$rss_pending,\"all_hibernated_after_s\":$waited,\"timer_delay_s\":$delay"
  local w0 polls=0 all_fired_at
  w0="$(metric ors_sessions_woken_total)"
  # Every timer is due by starts_took + delay after t_start.
  while :; do
    fired=$(($(metric ors_events_processed_total) - e0))
    all_fired_at="$(since "$t_start")"
    [ "$fired" -ge "$N" ] && break
    awk -v w="$all_fired_at" -v t="$((delay + HIBERNATE_TIMEOUT))" -v s="$starts_took" 'BEGIN {exit !(w < t + s)}' ||
      fail "timers: only $fired of $N timers fired after $all_fired_at s"
    polls=$((polls + 1))
    [ $((polls % 60)) != 0 ] || echo "waiting for timers: $fired of $N fired after $all_fired_at s" >&2
    sleep 0.5
  done
  [ "$fired" = "$N" ] || fail "timers: $fired events processed for $N timers"
  # How late the last timer was: the last start was answered starts_took
  # after t_start, so its timer was due delay after that (the poll adds up
  # to half a second).
  local late
  late="$(awk -v a="$all_fired_at" -v s="$starts_took" -v d="$delay" 'BEGIN {printf "%.1f", a - s - d}')"
  wait_hibernated
  local woken
  woken=$(($(metric ors_sessions_woken_total) - w0))
  [ "$woken" -ge "$N" ] || fail "timers: $N timers fired but only $woken sessions were woken"
  echo "{\"phase\":\"timers\",\"store\":\"$store_label\",\"sessions\":$N,\"timer_delay_s\":$delay,\"fired\":$fired,\"woken\":$woken,\"last_fired_late_s\":$late,\"rss_mib_pending\":$rss_pending,\"all_hibernated_again_after_s\":$waited,\"rss_mib\":$(rss_mib)}"
  check_sample "$work/ids-timers.txt" 1 $((N / 100 > 0 ? N / 100 : 1)) 20 1
  stop_server
}

for phase in $PHASES; do
  case "$phase" in
    live) phase_live ;;
    hibernated) phase_hibernated hibernated ;;
    warm) phase_hibernated warm ;;
    timers) phase_timers ;;
    *) fail "unknown phase $phase (live, hibernated, warm, timers)" ;;
  esac
done

# --- server log -----------------------------------------------------------------------
warns="$(grep -c 'WARN' "$work/server.log" || true)"
if [ "$warns" != 0 ]; then
  echo "server log: $warns warning line(s), first ones:" >&2
  grep 'WARN' "$work/server.log" | head -n 5 >&2
fi
if grep -qE 'ERROR|panicked' "$work/server.log"; then
  echo "sessions.sh: the server logged errors:" >&2
  grep -E 'ERROR|panicked' "$work/server.log" | head -n 20 >&2
  exit 1
fi
