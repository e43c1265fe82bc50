#!/usr/bin/env bash
# A throw-away Redis for development and tests: Debian's redis-server on a free port, persistence off.
#
#   deploy/redis/redis.sh start    # prints REDIS_URL=redis://127.0.0.1:<port>/0
#   deploy/redis/redis.sh stop
#   deploy/redis/redis.sh status   # prints REDIS_URL=... and exits 0 if running, else exits 1
#
# Environment:
#   SIGSTREAM_CACHE      cache root (default <repo>/.cache)
#   SIGSTREAM_REDIS_DIR  run folder: pid, log, port (default $SIGSTREAM_CACHE/redis/run)
#   SIGSTREAM_REDIS_PORT fixed port (default: a free port, chosen once per run folder)
#
# `start` after `stop` on the same run folder reuses the same port, so clients can reconnect.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
RUN="${SIGSTREAM_REDIS_DIR:-${SIGSTREAM_CACHE:-$REPO/.cache}/redis/run}"
PIDFILE="$RUN/redis.pid"
PORTFILE="$RUN/port"

die() { echo "redis.sh: $*" >&2; exit 1; }

ensure_installed() {
    if command -v redis-server >/dev/null 2>&1 && command -v redis-cli >/dev/null 2>&1; then
        return
    fi
    command -v apt-get >/dev/null 2>&1 || die "redis-server is missing and apt-get is unavailable; install Redis 6+"
    local sudo=""
    if [[ "$(id -u)" != 0 ]]; then sudo="sudo"; fi
    echo "redis.sh: installing redis-server with apt-get" >&2
    $sudo apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq redis-server >&2
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

is_running() {
    [[ -f "$PIDFILE" ]] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null
}

url() {
    echo "redis://127.0.0.1:$(cat "$PORTFILE")/0"
}

cmd_start() {
    ensure_installed
    mkdir -p "$RUN"
    if is_running; then
        echo "REDIS_URL=$(url)"
        return 0
    fi
    if [[ ! -f "$PORTFILE" ]]; then
        echo "${SIGSTREAM_REDIS_PORT:-$(free_port)}" >"$PORTFILE"
    fi
    local port
    port="$(cat "$PORTFILE")"
    redis-server --bind 127.0.0.1 --port "$port" --save "" --appendonly no --daemonize yes \
        --pidfile "$PIDFILE" --logfile "$RUN/redis.log" --dir "$RUN" >/dev/null
    local deadline=$((SECONDS + 30))
    until redis-cli -p "$port" ping 2>/dev/null | grep -q PONG; do
        ((SECONDS < deadline)) || { tail -20 "$RUN/redis.log" >&2 || true; die "redis did not answer on port $port"; }
        sleep 0.1
    done
    echo "REDIS_URL=$(url)"
}

cmd_stop() {
    if ! is_running; then
        rm -f "$PIDFILE"
        return 0
    fi
    local pid
    pid="$(cat "$PIDFILE")"
    kill -TERM "$pid"
    local deadline=$((SECONDS + 20))
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi
    rm -f "$PIDFILE"
}

cmd_status() {
    if is_running; then
        echo "REDIS_URL=$(url)"
    else
        echo "redis.sh: not running" >&2
        return 1
    fi
}

case "${1:-}" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    clean) cmd_stop; rm -rf "$RUN" ;;
    *) echo "usage: $0 start|stop|status|clean" >&2; exit 2 ;;
esac
