#!/usr/bin/env bash
# Runs every benchmark workload on ors and on the peer engines (SCION, Qt
# SCXML) in one go and writes the comparison under benches/results/.
#
#   benches/compare.sh            full run: installs the peers if needed
#   benches/compare.sh --smoke    a few events, ors only (what CI runs)
#
# Options: --rounds N (default 5), --events N (default 100000),
# --sessions N (default 10000), --loads N (default 200). Each driver checks that its run really
# happened (final configuration, counter value) and fails otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."

rounds=5 events=100000 sessions=10000 loads=200 smoke=0
while [ $# -gt 0 ]; do
  case "$1" in
    --smoke) smoke=1 ;;
    --rounds) rounds="$2"; shift ;;
    --events) events="$2"; shift ;;
    --sessions) sessions="$2"; shift ;;
    --loads) loads="$2"; shift ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
if [ "$smoke" = 1 ]; then rounds=2 events=2000 sessions=200 loads=5; fi

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
cargo build --release --quiet
ors="$CARGO_TARGET_DIR/release/ors"
workloads=benches/workloads
# A smoke run must not overwrite the published results.
out=benches/results
if [ "$smoke" = 1 ]; then out=$(mktemp -d); fi
mkdir -p "$out"
raw="$out/raw.jsonl"
: > "$raw"

file_of() {
  case "$1" in
    ping-pong) echo "$workloads/ping_pong.scxml" ;;
    ping-pong-data) echo "$workloads/ping_pong_data.scxml" ;;
    deep-wide) echo "$workloads/deep_wide.scxml" ;;
    load-1000) echo "$workloads/load_1000.scxml" ;;
    start-sessions) echo "$workloads/callback_like.scxml" ;;
  esac
}

event_workloads="ping-pong ping-pong-data deep-wide"
all_workloads="$event_workloads load-1000 start-sessions"

# --- peers -----------------------------------------------------------------
have_scion=0 have_qt=0
if [ "$smoke" = 0 ]; then
  if command -v node >/dev/null && command -v npm >/dev/null; then
    if [ ! -d benches/peers/scion/node_modules/@scion-scxml/scxml ]; then
      (cd benches/peers/scion && npm install --no-audit --no-fund --silent)
    fi
    have_scion=1
  else
    echo "node/npm not found: SCION is skipped" >&2
  fi
  if ! pkg-config --exists Qt6Scxml 2>/dev/null; then
    if [ "$(id -u)" = 0 ]; then
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qt6-scxml-dev qt6-base-dev g++ pkg-config >/dev/null
    else
      echo "qt6-scxml-dev is missing and this is not root: Qt is skipped" >&2
    fi
  fi
  if pkg-config --exists Qt6Scxml 2>/dev/null; then
    benches/peers/qt/build.sh
    have_qt=1
  fi
fi

# --- ors in-process (library API) ------------------------------------------
for w in $all_workloads; do
  echo "ors (in-process): $w" >&2
  "$ors" bench --dir "$workloads" --workloads "$w" --rounds "$rounds" --events "$events" --sessions "$sessions" --loads "$loads" >> "$raw"
done

# --- ors end to end (ors run, events piped through stdin) ------------------
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"; if [ "$smoke" = 1 ]; then rm -rf "$out"; fi' EXIT
for w in $event_workloads; do
  echo "ors (ors run): $w" >&2
  python3 benches/report.py events "$w" "$events" > "$tmp/$w.jsonl"
  results=()
  for _ in $(seq "$rounds"); do
    start=$(date +%s.%N)
    "$ors" run --no-basichttp "$(file_of "$w")" < "$tmp/$w.jsonl" > "$tmp/$w.out"
    end=$(date +%s.%N)
    results+=("$(python3 -c "print($events / ($end - $start))")")
  done
  python3 benches/report.py check-run "$w" "$events" "$tmp/$w.out" "${results[@]}" >> "$raw"
done

# --- peers -------------------------------------------------------------------
for w in $all_workloads; do
  n="$events"
  if [ "$w" = start-sessions ]; then n="$sessions"; fi
  if [ "$w" = load-1000 ]; then n="$loads"; fi
  if [ "$have_scion" = 1 ]; then
    echo "scion: $w" >&2
    node benches/peers/scion/driver.js "$w" "$(file_of "$w")" "$n" "$rounds" >> "$raw"
  fi
  if [ "$have_qt" = 1 ]; then
    echo "qt: $w" >&2
    qt_n="$n"
    # Qt processes ~10-30k ecmascript events/s; fewer events keep the run short.
    case "$w" in
      ping-pong-data) qt_n=$(( n / 5 )) ;;
      start-sessions) qt_n=$(( n / 5 )) ;;
    esac
    QT_QPA_PLATFORM=offscreen benches/peers/qt/build/driver "$w" "$(file_of "$w")" "$qt_n" "$rounds" >> "$raw"
  fi
done

python3 benches/report.py summarize "$raw" "$out"
