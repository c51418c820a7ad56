#!/usr/bin/env bash
# Installs PostgreSQL from Debian's packages (when missing), starts a
# cluster on loopback, and makes sure the `ors` role and database exist.
# Prints the URL tests use (ORS_TEST_POSTGRES_URL) on its last line.
set -euo pipefail

if ! command -v pg_ctlcluster >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q postgresql >/dev/null 2>&1 || {
    apt-get update -q >/dev/null
    apt-get install -y -q postgresql >/dev/null
  }
fi

version=$(ls /usr/lib/postgresql | sort -V | tail -1)
cluster=main
if ! pg_lsclusters -h | awk '{print $1"/"$2}' | grep -qx "$version/$cluster"; then
  pg_createcluster "$version" "$cluster" -p 5432 >/dev/null
fi
port=$(pg_lsclusters -h | awk -v v="$version" -v c="$cluster" '$1==v && $2==c {print $3}')
if ! pg_lsclusters -h | awk -v v="$version" -v c="$cluster" '$1==v && $2==c {print $4}' | grep -q online; then
  pg_ctlcluster "$version" "$cluster" start
fi
for _ in $(seq 1 50); do
  pg_isready -q -h 127.0.0.1 -p "$port" && break
  sleep 0.2
done

as_postgres() { su postgres -c "$1"; }
as_postgres "psql -q -p $port -tAc \"SELECT 1 FROM pg_roles WHERE rolname='ors'\"" | grep -q 1 ||
  as_postgres "psql -q -p $port -c \"CREATE ROLE ors LOGIN SUPERUSER PASSWORD 'ors'\""
as_postgres "psql -q -p $port -tAc \"SELECT 1 FROM pg_database WHERE datname='ors'\"" | grep -q 1 ||
  as_postgres "createdb -p $port -O ors ors"

echo "postgres://ors:ors@127.0.0.1:$port/ors"
