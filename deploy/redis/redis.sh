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
#   SIGSTREAM_REDIS_SECURE=1  (when a run folder is first started) require a password (requirepass), add an ACL
#                        user, and open a TLS port with a CA and server certificate made by openssl; `start` then
#                        also prints REDIS_TLS_URL=rediss://127.0.0.1:<port>/0, REDIS_CA_FILE=..., REDIS_USERNAME=...,
#                        REDIS_PASSWORD_FILE=... (the ACL user's) and REDIS_DEFAULT_PASSWORD_FILE=... (requirepass);
#                        passwords are never printed, and live in redis.conf (mode 600), not on a command line.
#                        Debian's redis-server is built with TLS (redis-server --tls-port works).
#   SIGSTREAM_REDIS_USERNAME, SIGSTREAM_REDIS_PASSWORD, SIGSTREAM_REDIS_DEFAULT_PASSWORD  the ACL user (default
#                        sigstream) and the passwords (default: random)
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

CONF="$RUN/redis.conf"
SECURE_ENV="$RUN/secure.env"

is_secure() {
    [[ -f "$SECURE_ENV" ]]
}

random_secret() {
    python3 -c 'import secrets; print(secrets.token_urlsafe(24))'
}

secure_config() {
    # requirepass for the default user, an ACL user with its own password, and a TLS port; written once.
    command -v openssl >/dev/null 2>&1 || die "openssl is required for SIGSTREAM_REDIS_SECURE=1"
    local tls="$RUN/tls" tport user
    tport="$(free_port)"
    user="${SIGSTREAM_REDIS_USERNAME:-sigstream}"
    mkdir -p "$tls"
    (
        set -e
        umask 077
        cd "$tls"
        openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 3650 -subj "/CN=sigstream redis CA" \
            -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
        openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj "/CN=sigstream-redis" 2>/dev/null
        printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n' >server.ext
        openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 3650 \
            -extfile server.ext 2>/dev/null
        chmod 644 ca.pem server.pem
        printf '%s\n' "${SIGSTREAM_REDIS_PASSWORD:-$(random_secret)}" >"$RUN/user.password"
        printf '%s\n' "${SIGSTREAM_REDIS_DEFAULT_PASSWORD:-$(random_secret)}" >"$RUN/default.password"
        {
            echo "requirepass $(cat "$RUN/default.password")"
            # The ACL user may do everything sigstream's feature cache needs, and no administration.
            echo "user $user on >$(cat "$RUN/user.password") ~* &* +@all -@admin -@dangerous"
            echo "tls-port $tport"
            echo "tls-cert-file $tls/server.pem"
            echo "tls-key-file $tls/server.key"
            echo "tls-ca-cert-file $tls/ca.pem"
            echo "tls-auth-clients optional"
        } >"$CONF"
    ) || die "making the secured configuration failed"
    {
        echo "REDIS_TLS_URL=rediss://127.0.0.1:$tport/0"
        echo "REDIS_CA_FILE=$tls/ca.pem"
        echo "REDIS_USERNAME=$user"
        echo "REDIS_PASSWORD_FILE=$RUN/user.password"
        echo "REDIS_DEFAULT_PASSWORD_FILE=$RUN/default.password"
    } >"$SECURE_ENV"
}

print_addresses() {
    echo "REDIS_URL=$(url)"
    if is_secure; then cat "$SECURE_ENV"; fi
}

cmd_start() {
    ensure_installed
    mkdir -p "$RUN"
    if is_running; then
        print_addresses
        return 0
    fi
    if [[ ! -f "$PORTFILE" ]]; then
        echo "${SIGSTREAM_REDIS_PORT:-$(free_port)}" >"$PORTFILE"
        if [[ "${SIGSTREAM_REDIS_SECURE:-0}" == 1 ]]; then secure_config; fi
    fi
    local port conf=()
    port="$(cat "$PORTFILE")"
    if is_secure; then conf=("$CONF"); fi
    redis-server "${conf[@]}" --bind 127.0.0.1 --port "$port" --save "" --appendonly no --daemonize yes \
        --pidfile "$PIDFILE" --logfile "$RUN/redis.log" --dir "$RUN" >/dev/null
    local deadline=$((SECONDS + 30))
    # redis-cli reads the password from REDISCLI_AUTH, so it never shows in the process list.
    local auth=""
    if is_secure; then auth="$(cat "$RUN/default.password")"; fi
    until REDISCLI_AUTH="$auth" redis-cli -p "$port" ping 2>/dev/null | grep -q PONG; do
        ((SECONDS < deadline)) || { tail -20 "$RUN/redis.log" >&2 || true; die "redis did not answer on port $port"; }
        sleep 0.1
    done
    print_addresses
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
        print_addresses
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
