#!/usr/bin/env bash
# An MLflow tracking server backed by PostgreSQL (Debian's packages) with a local artifact store,
# everything under one folder and listening on 127.0.0.1 only: what `make tracking-server` starts.
#
#   scripts/tracking-server.sh start|stop|status          both (PostgreSQL first)
#   scripts/tracking-server.sh start-db|stop-db|restart-db
#   scripts/tracking-server.sh start-mlflow|stop-mlflow
#
# Settings (environment): TRACKING_DIR (default .tracking: pg/ = the database cluster,
# artifacts/ = the artifact store, logs, pid file, the generated database password), PG_PORT
# (default 5433), MLFLOW_PORT (default 5001), MLFLOW_WORKERS (default 2), MLFLOW (the mlflow
# executable, default .venv/bin/mlflow). Clients: --tracking-uri http://127.0.0.1:$MLFLOW_PORT
#
# PostgreSQL refuses to run as root: as root the cluster belongs to the `postgres` user (made by
# Debian's package) and its commands run through runuser; TRACKING_DIR must be reachable by it.
set -euo pipefail
cd "$(dirname "$0")/.."
TRACKING_DIR=$(realpath -m "${TRACKING_DIR:-.tracking}")
PG_PORT=${PG_PORT:-5433}
MLFLOW_PORT=${MLFLOW_PORT:-5001}
MLFLOW_WORKERS=${MLFLOW_WORKERS:-2}
MLFLOW=${MLFLOW:-$PWD/.venv/bin/mlflow}
PGDATA=$TRACKING_DIR/pg
PGBIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
[ -n "$PGBIN" ] || { echo "tracking-server: PostgreSQL is not installed: sudo apt-get install -y postgresql (or make system-deps)" >&2; exit 2; }
if [ "$(id -u)" = 0 ]; then AS_PG=(runuser -u postgres --); else AS_PG=(); fi
pg() { "${AS_PG[@]}" "$PGBIN/$1" "${@:2}"; }

uri() { echo "postgresql+psycopg2://mlflow:$(cat "$TRACKING_DIR/pg_password")@127.0.0.1:$PG_PORT/mlflow"; }

start_db() {
  mkdir -p "$TRACKING_DIR"
  if [ ! -f "$PGDATA/PG_VERSION" ]; then
    umask 077
    [ -f "$TRACKING_DIR/pg_password" ] || head -c 18 /dev/urandom | base64 | tr -d '/+=' > "$TRACKING_DIR/pg_password"
    mkdir -p "$PGDATA"
    if [ "$(id -u)" = 0 ]; then
      chown postgres "$PGDATA"
      cp "$TRACKING_DIR/pg_password" "$PGDATA.pwfile" && chown postgres "$PGDATA.pwfile"
    else
      cp "$TRACKING_DIR/pg_password" "$PGDATA.pwfile"
    fi
    pg initdb -D "$PGDATA" -U mlflow --pwfile="$PGDATA.pwfile" --auth-host=scram-sha-256 --auth-local=scram-sha-256 \
      -E UTF8 --locale=C.UTF-8 >/dev/null
    rm -f "$PGDATA.pwfile"
    umask 022
    fresh=1
  fi
  if ! db_running; then
    touch "$TRACKING_DIR/postgres.log"; [ "$(id -u)" = 0 ] && chown postgres "$TRACKING_DIR/postgres.log"
    pg pg_ctl -D "$PGDATA" -l "$TRACKING_DIR/postgres.log" -w -t 60 \
      -o "-c listen_addresses=127.0.0.1 -p $PG_PORT -k $PGDATA" start >/dev/null
  fi
  if [ -n "${fresh:-}" ]; then
    PGPASSWORD=$(cat "$TRACKING_DIR/pg_password") "$PGBIN/createdb" -h 127.0.0.1 -p "$PG_PORT" -U mlflow mlflow
  fi
  echo "PostgreSQL on 127.0.0.1:$PG_PORT (cluster $PGDATA, log $TRACKING_DIR/postgres.log)"
}

db_running() { pg pg_ctl -D "$PGDATA" status >/dev/null 2>&1; }

stop_db() {  # fast (sessions ended, a clean checkpoint), else immediate; fails unless the server is down
  db_running || return 0
  pg pg_ctl -D "$PGDATA" -m fast -w -t 60 stop >/dev/null 2>&1 || pg pg_ctl -D "$PGDATA" -m immediate -w -t 30 stop >/dev/null 2>&1 || true
  if db_running; then
    echo "tracking-server: PostgreSQL ($PGDATA) still running after pg_ctl stop; see $TRACKING_DIR/postgres.log" >&2
    exit 1
  fi
}

start_mlflow() {
  if [ -f "$TRACKING_DIR/mlflow.pid" ] && kill -0 "$(cat "$TRACKING_DIR/mlflow.pid")" 2>/dev/null; then
    echo "MLflow already running (pid $(cat "$TRACKING_DIR/mlflow.pid"))"; return
  fi
  mkdir -p "$TRACKING_DIR/artifacts"
  # its own session (process group): stop-mlflow ends the server and its workers together
  setsid "$MLFLOW" server --backend-store-uri "$(uri)" --artifacts-destination "$TRACKING_DIR/artifacts" \
    --host 127.0.0.1 --port "$MLFLOW_PORT" --workers "$MLFLOW_WORKERS" \
    >>"$TRACKING_DIR/mlflow.log" 2>&1 < /dev/null &
  echo $! > "$TRACKING_DIR/mlflow.pid"
  for _ in $(seq 1 120); do
    if curl -sf "http://127.0.0.1:$MLFLOW_PORT/health" >/dev/null 2>&1; then
      echo "MLflow tracking server: http://127.0.0.1:$MLFLOW_PORT (artifacts $TRACKING_DIR/artifacts, log $TRACKING_DIR/mlflow.log)"
      return
    fi
    kill -0 "$(cat "$TRACKING_DIR/mlflow.pid")" 2>/dev/null || { echo "tracking-server: mlflow server exited; see $TRACKING_DIR/mlflow.log" >&2; exit 1; }
    sleep 0.5
  done
  echo "tracking-server: mlflow server not answering after 60 s; see $TRACKING_DIR/mlflow.log" >&2; exit 1
}

stop_mlflow() {
  if [ -f "$TRACKING_DIR/mlflow.pid" ]; then
    pid=$(cat "$TRACKING_DIR/mlflow.pid")
    kill -TERM -- "-$pid" 2>/dev/null || true
    for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    kill -KILL -- "-$pid" 2>/dev/null || true
    rm -f "$TRACKING_DIR/mlflow.pid"
  fi
}

case "${1:-start}" in
  start) start_db; start_mlflow ;;
  stop) stop_mlflow; stop_db; echo "tracking server stopped" ;;
  status) pg pg_ctl -D "$PGDATA" status || true
          [ -f "$TRACKING_DIR/mlflow.pid" ] && kill -0 "$(cat "$TRACKING_DIR/mlflow.pid")" 2>/dev/null \
            && echo "MLflow running (pid $(cat "$TRACKING_DIR/mlflow.pid")) on http://127.0.0.1:$MLFLOW_PORT" \
            || echo "MLflow not running" ;;
  start-db) start_db ;;
  stop-db) stop_db ;;
  restart-db) pg pg_ctl -D "$PGDATA" -m fast -w restart \
                -o "-c listen_addresses=127.0.0.1 -p $PG_PORT -k $PGDATA" >/dev/null ;;
  start-mlflow) start_mlflow ;;
  stop-mlflow) stop_mlflow ;;
  *) echo "usage: $0 start|stop|status|start-db|stop-db|restart-db|start-mlflow|stop-mlflow" >&2; exit 2 ;;
esac
