#!/usr/bin/env bash
# The team deployment on one machine, to try it and to test it: a throwaway PostgreSQL cluster,
# then a gRPC code server, the Dagster daemon and the webserver as three processes, with
# dagster_home/deploy/dagster.yaml (PostgreSQL storage, queued runs, a process per run) and
# workspace.deploy.yaml.
#
#   scripts/deploy.sh up [STATE_DIR]   start everything; prints the state folder (default: a new
#                                      temp folder). `source STATE_DIR/env` gives the variables
#                                      (DAGSTER_HOME, DAGSTER_PG_*, the webserver's URL).
#   scripts/deploy.sh down STATE_DIR   stop the three processes and PostgreSQL, delete the folder
#                                      (KEEP_STATE=1 keeps it, with the logs).
#   scripts/deploy.sh start-daemon STATE_DIR   start the daemon again after it died
#
# PostgreSQL: initdb/pg_ctl from /usr/lib/postgresql/*/bin (Debian's `postgresql` package; or
# PG_BIN=...), run as an unprivileged user (the current one; `nobody` when started as root),
# listening on 127.0.0.1 only, on a free port, password authentication (a random password, only
# in STATE_DIR/env, mode 600). The processes inherit this shell's environment: set
# SPECFORGE_DATA_ROOT / SPECFORGE_CONFIG_DIR before `up` (run workers are children of the code
# server). PYTHON picks the interpreter (default .venv/bin/python, else python3). WEB_PORT picks
# the webserver's port (default: a free one).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x "$REPO/.venv/bin/python" ]]; then PYTHON="$REPO/.venv/bin/python"; else PYTHON="$(command -v python3)"; fi
fi

die() { echo "deploy: $*" >&2; exit 1; }

port_free() {  # port_free PORT: nothing listens on 127.0.0.1:PORT
  "$PYTHON" -c 'import socket, sys
s = socket.socket()
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(1)' "$1"
}

free_port() { "$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

pg_bin() {
  if [[ -n "${PG_BIN:-}" ]]; then echo "$PG_BIN"; return; fi
  local d
  d="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
  [[ -n "$d" && -x "$d/initdb" ]] || die "PostgreSQL server binaries not found in /usr/lib/postgresql/*/bin (apt-get install -y postgresql, or set PG_BIN)"
  echo "$d"
}

# as_pg CMD...: run as the unprivileged owner of the cluster
as_pg() {
  if [[ "$(id -u)" == 0 ]]; then
    setpriv --reuid="$PG_OS_USER" --regid="$(id -g "$PG_OS_USER")" --clear-groups -- "$@"
  else
    "$@"
  fi
}

wait_for() {  # wait_for SECONDS WHAT [--process NAME] CMD...: retry CMD until it succeeds
  local limit=$1 what=$2 name=""; shift 2
  if [[ "${1:-}" == --process ]]; then name=$2; shift 2; fi
  local t=0
  until "$@" >/dev/null 2>&1; do
    if [[ -n "$name" ]] && ! running "$(cat "$STATE/pids/$name.pid")"; then
      die "$what exited while starting: $(tail -n 3 "$STATE/logs/$name.log" | tr '\n' ' ') (log: $STATE/logs/$name.log)"
    fi
    sleep 1; t=$((t + 1))
    if (( t >= limit )); then die "$what did not come up within ${limit}s (logs: $STATE/logs)"; fi
  done
}

start() {  # start NAME CMD...: a process of its own session (own process group), log + pid file
  local name=$1; shift
  setsid "$@" >"$STATE/logs/$name.log" 2>&1 < /dev/null &
  echo $! > "$STATE/pids/$name.pid"
}

failed_up() {  # an `up` that stopped half-way stops what it started; the logs stay
  local name
  for name in webserver daemon code-server; do stop_pid_file "$STATE/pids/$name.pid"; done
  if [[ -f "$STATE/pg/data/postmaster.pid" ]]; then
    as_pg "$PG_BIN_DIR/pg_ctl" -D "$STATE/pg/data" -m fast -w stop >/dev/null 2>&1 || true
  fi
  rm -f "$STATE/env"
  echo "deploy: up failed; everything it started is stopped (logs kept in $STATE/logs)" >&2
}

up() {
  STATE="${1:-$(mktemp -d "${TMPDIR:-/tmp}/specforge-deploy.XXXXXX")}"
  mkdir -p "$STATE"
  STATE="$(cd "$STATE" && pwd)"
  [[ ! -e "$STATE/env" ]] || die "$STATE/env exists: already up? (scripts/deploy.sh down $STATE)"
  [[ ! -e "$STATE/pg/data" ]] || die "$STATE/pg/data exists (a cluster left by an earlier run): delete $STATE or pick another folder"
  local bin; bin="$(pg_bin)"
  PG_BIN_DIR="$bin"
  trap failed_up EXIT
  PG_OS_USER="${PG_OS_USER:-$( [[ "$(id -u)" == 0 ]] && echo nobody || id -un )}"
  mkdir -p "$STATE/logs" "$STATE/pids" "$STATE/pg" "$STATE/dagster_home"
  chmod 711 "$STATE"
  [[ "$(id -u)" != 0 ]] || chown "$PG_OS_USER" "$STATE/pg"
  chmod 700 "$STATE/pg"

  local pg_port code_port web_port password
  pg_port="$(free_port)"; code_port="$(free_port)"; web_port="${WEB_PORT:-$(free_port)}"
  # a taken UI port would leave our webserver dead and the URL answering with someone else's UI
  # (`make ui` also listens on 3000)
  port_free "$web_port" || die "port $web_port on 127.0.0.1 is in use (another Dagster UI, e.g. \`make ui\`?): stop it or pick another port (make deploy-up DEPLOY_PORT=N, or WEB_PORT=N)"
  password="$("$PYTHON" -c 'import secrets; print(secrets.token_urlsafe(24))')"
  (umask 077; printf '%s\n' "$password" > "$STATE/pg/pwfile")
  [[ "$(id -u)" != 0 ]] || chown "$PG_OS_USER" "$STATE/pg/pwfile"
  as_pg "$bin/initdb" -D "$STATE/pg/data" -U specforge --pwfile="$STATE/pg/pwfile" -A scram-sha-256 \
    -E UTF8 --no-instructions >"$STATE/logs/initdb.log" 2>&1 || die "initdb failed (see $STATE/logs/initdb.log)"
  rm -f "$STATE/pg/pwfile"
  cat >> "$STATE/pg/data/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $pg_port
unix_socket_directories = '$STATE/pg'
max_connections = 200
EOF
  as_pg "$bin/pg_ctl" -D "$STATE/pg/data" -l "$STATE/pg/postgres.log" -w -t 60 start >"$STATE/logs/pg_ctl.log" 2>&1 \
    || die "PostgreSQL did not start (see $STATE/pg/postgres.log)"
  PGPASSWORD="$password" "$bin/createdb" -h 127.0.0.1 -p "$pg_port" -U specforge dagster \
    || die "createdb failed"

  sed -e '/^$/d' > "$STATE/env" <<EOF
export DAGSTER_HOME='$STATE/dagster_home'
export DAGSTER_PG_USERNAME=specforge
export DAGSTER_PG_PASSWORD='$password'
export DAGSTER_PG_HOST=127.0.0.1
export DAGSTER_PG_PORT=$pg_port
export DAGSTER_PG_DB=dagster
export DAGSTER_CODE_SERVER_HOST=127.0.0.1
export DAGSTER_CODE_SERVER_PORT=$code_port
export DAGSTER_DISABLE_TELEMETRY=1
export SPECFORGE_DEPLOY_URL=http://127.0.0.1:$web_port
export SPECFORGE_DEPLOY_STATE='$STATE'
export SPECFORGE_DEPLOY_PG_BIN='$bin'
export SPECFORGE_DEPLOY_PG_OS_USER='$PG_OS_USER'
EOF
  chmod 600 "$STATE/env"
  cp "$REPO/dagster_home/deploy/dagster.yaml" "$STATE/dagster_home/dagster.yaml"
  # shellcheck disable=SC1091
  source "$STATE/env"

  cd "$REPO"
  "$PYTHON" -m dagster instance concurrency set gpu 1 >"$STATE/logs/pools.log" 2>&1 \
    && "$PYTHON" -m dagster instance concurrency set duckdb 1 >>"$STATE/logs/pools.log" 2>&1 \
    || die "could not set the gpu/duckdb pools in PostgreSQL (see $STATE/logs/pools.log)"
  start code-server "$PYTHON" -m dagster code-server start -h 127.0.0.1 -p "$code_port" \
    -m specforge_assets.definitions -d "$REPO" --location-name specforge --use-python-environment-entry-point
  wait_for 300 "the code server" --process code-server "$PYTHON" -m dagster api grpc-health-check -h 127.0.0.1 -p "$code_port"
  start daemon "$PYTHON" -m dagster._daemon run -w "$REPO/workspace.deploy.yaml"
  start webserver "$PYTHON" -m dagster_webserver -w "$REPO/workspace.deploy.yaml" -h 127.0.0.1 -p "$web_port"
  wait_for 300 "the webserver" --process webserver "$PYTHON" -c "import httpx, sys; httpx.get('$SPECFORGE_DEPLOY_URL/server_info', timeout=5).raise_for_status()"
  trap - EXIT
  echo "deploy: up. UI: $SPECFORGE_DEPLOY_URL  variables: source $STATE/env  logs: $STATE/logs  stop: scripts/deploy.sh down $STATE" >&2
  echo "$STATE"
}

running() {  # running PID: alive and not a zombie (an unreaped dead process still answers kill -0)
  local stat
  stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
  stat="${stat##*) }"
  [[ "${stat%% *}" != Z ]]
}

stop_pid_file() {  # stop_pid_file FILE: TERM the process group, KILL it after 30 s
  local f=$1 pid t
  [[ -f "$f" ]] || return 0
  pid="$(cat "$f")"
  if running "$pid"; then
    kill -TERM -- "-$pid" 2>/dev/null || true
    for t in $(seq 1 30); do running "$pid" || break; sleep 1; done
    kill -KILL -- "-$pid" 2>/dev/null || true
  fi
  rm -f "$f"
}

down() {
  STATE="${1:?usage: scripts/deploy.sh down STATE_DIR}"
  [[ -f "$STATE/env" ]] || die "$STATE/env not found: not a folder made by scripts/deploy.sh up"
  # shellcheck disable=SC1091
  source "$STATE/env"
  PG_OS_USER="$SPECFORGE_DEPLOY_PG_OS_USER"
  local name
  for name in webserver daemon code-server; do stop_pid_file "$STATE/pids/$name.pid"; done
  if [[ -f "$STATE/pg/data/postmaster.pid" ]]; then
    as_pg "$SPECFORGE_DEPLOY_PG_BIN/pg_ctl" -D "$STATE/pg/data" -m fast -w stop >/dev/null || true
  fi
  if [[ "${KEEP_STATE:-0}" == 1 ]]; then rm -f "$STATE/env"; else rm -rf "$STATE"; fi
}

start_daemon() {  # the daemon again, after it died or was stopped (runs, queue and backfills are in PostgreSQL)
  STATE="${1:?usage: scripts/deploy.sh start-daemon STATE_DIR}"
  [[ -f "$STATE/env" ]] || die "$STATE/env not found: not a folder made by scripts/deploy.sh up"
  # shellcheck disable=SC1091
  source "$STATE/env"
  if [[ -f "$STATE/pids/daemon.pid" ]] && running "$(cat "$STATE/pids/daemon.pid")"; then
    die "the daemon is running (pid $(cat "$STATE/pids/daemon.pid"))"
  fi
  mv -f "$STATE/logs/daemon.log" "$STATE/logs/daemon.log.$(date +%s)" 2>/dev/null || true
  cd "$REPO"
  start daemon "$PYTHON" -m dagster._daemon run -w "$REPO/workspace.deploy.yaml"
  cat "$STATE/pids/daemon.pid"
}

case "${1:-}" in
  up) shift; up "$@" ;;
  down) shift; down "$@" ;;
  start-daemon) shift; start_daemon "$@" ;;
  *) echo "usage: scripts/deploy.sh up [STATE_DIR] | down STATE_DIR | start-daemon STATE_DIR" >&2; exit 2 ;;
esac
