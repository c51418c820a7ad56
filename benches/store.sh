# shellcheck shell=bash
# Session-store selection shared by benches/http/load.sh and
# benches/durable/sessions.sh (sourced, not run).
#
# STORE is one of
#   sqlite         the default: SQLite (WAL, synchronous=NORMAL) in the phase's data dir
#   full           the same with store.full_sync = true (synchronous=FULL)
#   none           no persistence (sessions in memory only)
#   postgres://... an admin URL: each phase gets a fresh database created
#                  over it (CREATE DATABASE), dropped again on exit
#
# The caller sets `work` (its temporary directory) before calling
# store_init, and calls store_cleanup after its servers have stopped.
# Every phase gets its own --data-dir under $work, so a server never
# recovers the sessions of an earlier phase and nothing is written into
# the repository's ./ors-data.

store_dbs=()

# Validates STORE; sets store_label (sqlite/full/none/postgres, never a password).
store_init() {
  STORE="${STORE:-sqlite}"
  case "$STORE" in
    sqlite|full|none) store_label="$STORE" ;;
    postgres://*|postgresql://*)
      store_label=postgres
      command -v psql >/dev/null 2>&1 || {
        echo "STORE=postgres://...: psql is required to create the benchmark databases" >&2
        return 1
      }
      psql "$STORE" -qtAc 'SELECT 1' >/dev/null || {
        echo "STORE=postgres://...: cannot connect with the given URL" >&2
        return 1
      }
      ;;
    *)
      echo "unknown STORE '$STORE': use sqlite, full, none or postgres://user:pw@host:port/db" >&2
      return 1
      ;;
  esac
}

# Lines for the config's [store] table that the store choice needs.
store_toml() {
  if [ "$store_label" = full ]; then
    echo "full_sync = true"
  fi
}

# The admin URL with its database replaced by $1 (query string kept).
store_pg_url() {
  local db="$1" scheme rest host query=""
  scheme="${STORE%%://*}"
  rest="${STORE#*://}"
  case "$rest" in *\?*) query="?${rest#*\?}"; rest="${rest%%\?*}" ;; esac
  host="${rest%%/*}"
  echo "$scheme://$host/$db$query"
}

# Sets the array store_args (ors serve options) for phase $1: a fresh data
# dir, and for PostgreSQL a fresh database.
store_prepare() {
  local phase="$1" db
  local dir="${work:?store.sh: set work before store_prepare}/data-$phase"
  rm -rf "$dir"
  mkdir -p "$dir"
  store_args=(--data-dir "$dir")
  case "$store_label" in
    none) store_args+=(--store none) ;;
    postgres)
      db="ors_bench_$$_$(tr -c 'a-zA-Z0-9_\n' _ <<<"$phase" | tr '[:upper:]' '[:lower:]')"
      PGOPTIONS="-c client_min_messages=warning" psql "$STORE" -qtAc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null
      psql "$STORE" -qtAc "CREATE DATABASE $db" >/dev/null
      store_dbs+=("$db")
      store_args+=(--store "$(store_pg_url "$db")")
      ;;
  esac
}

# Drops the databases store_prepare created (servers must be stopped).
store_cleanup() {
  local db
  for db in "${store_dbs[@]+"${store_dbs[@]}"}"; do
    psql "$STORE" -qtAc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 ||
      echo "could not drop database $db" >&2
  done
  store_dbs=()
}
