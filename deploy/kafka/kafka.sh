#!/usr/bin/env bash
# A single-node Apache Kafka 3.9 broker in KRaft mode (combined broker/controller), fetched from
# Maven Central instead of Docker.
#
#   deploy/kafka/kafka.sh start    # prints KAFKA_BOOTSTRAP=127.0.0.1:<port> once the broker answers
#   deploy/kafka/kafka.sh stop     # clean shutdown (SIGTERM, then SIGKILL after a grace period)
#   deploy/kafka/kafka.sh status   # prints KAFKA_BOOTSTRAP=... and exits 0 if running, else exits 1
#   deploy/kafka/kafka.sh clean    # stop, then delete the run folder (data, config, logs)
#
# Environment:
#   SIGSTREAM_CACHE      cache root (default <repo>/.cache); jars go to $SIGSTREAM_CACHE/kafka/lib-<version>
#   SIGSTREAM_KAFKA_DIR  run folder: server.properties, pid, log, data (default $SIGSTREAM_CACHE/kafka/run)
#   SIGSTREAM_KAFKA_PORT fixed PLAINTEXT port (default: a free port, chosen once per run folder)
#   KAFKA_HEAP_OPTS      JVM heap options (default -Xmx512m -Xms128m)
#   SIGSTREAM_KAFKA_SECURE=1  (when a run folder is first formatted) also open a SASL_SSL listener (SCRAM-SHA-512
#                        over TLS) and an SSL listener that requires a client certificate (mTLS), with a CA, a broker
#                        and a client certificate made by openssl/keytool in <run folder>/tls. `start` then also prints
#                          KAFKA_SASL_SSL_BOOTSTRAP=127.0.0.1:<port>   KAFKA_SSL_BOOTSTRAP=127.0.0.1:<port> (mTLS)
#                          KAFKA_CA_FILE=...  KAFKA_CLIENT_CERT=...  KAFKA_CLIENT_KEY=...
#                          KAFKA_SASL_USERNAME=...  KAFKA_SASL_PASSWORD_FILE=... (the password itself is never printed)
#   SIGSTREAM_KAFKA_SASL_USERNAME, SIGSTREAM_KAFKA_SASL_PASSWORD  the SCRAM user created at storage format time
#                        (default: sigstream, with a random password written to KAFKA_SASL_PASSWORD_FILE)
#
# `start` on a run folder that already holds a formatted broker restarts that same broker, on the
# same ports and with the same data: that is how tests restart the broker mid-stream.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
CACHE="${SIGSTREAM_CACHE:-$REPO/.cache}/kafka"
KAFKA_VERSION="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$HERE/pom.xml")"
LIB="$CACHE/lib-$KAFKA_VERSION"
RUN="${SIGSTREAM_KAFKA_DIR:-$CACHE/run}"
PROPS="$RUN/server.properties"
PIDFILE="$RUN/kafka.pid"
LOGFILE="$RUN/kafka.out"
START_TIMEOUT_S="${SIGSTREAM_KAFKA_START_TIMEOUT:-180}"
STOP_TIMEOUT_S="${SIGSTREAM_KAFKA_STOP_TIMEOUT:-60}"

die() { echo "kafka.sh: $*" >&2; exit 1; }

need() {
    command -v "$1" >/dev/null 2>&1 || die "'$1' is required ($2)"
}

free_port() {
    # Ask the kernel for a free port; a tiny race with other processes is acceptable for a dev broker.
    python3 - <<'PY'
import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()
PY
}

fetch_jars() {
    if [[ -f "$LIB/.complete" ]]; then
        return
    fi
    need mvn "install Maven: apt-get install -y maven"
    echo "kafka.sh: fetching Kafka $KAFKA_VERSION jars from Maven Central into $LIB" >&2
    rm -rf "$LIB.tmp"
    mvn -q -f "$HERE/pom.xml" dependency:copy-dependencies \
        -DincludeScope=runtime -DoutputDirectory="$LIB.tmp" >&2
    rm -rf "$LIB"
    mv "$LIB.tmp" "$LIB"
    touch "$LIB/.complete"
}

java_cp() {
    java -Dlog4j.configuration="file:$HERE/tools-log4j.properties" -cp "$LIB/*" "$@"
}

is_running() {
    [[ -f "$PIDFILE" ]] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null
}

bootstrap() {
    sed -n 's|^advertised.listeners=PLAINTEXT://\([^,]*\).*|\1|p' "$PROPS"
}

TLS="$RUN/tls"
SECURE_ENV="$RUN/secure.env"

is_secure() {
    [[ -f "$SECURE_ENV" ]]
}

random_secret() {
    python3 -c 'import secrets; print(secrets.token_urlsafe(24))'
}

make_certs() {
    # A CA, a broker certificate for 127.0.0.1/localhost and a client certificate (mTLS), all signed by the CA.
    need openssl "apt-get install -y openssl"
    need keytool "it comes with the JDK"
    mkdir -p "$TLS"
    (
        set -e
        umask 077
        cd "$TLS"
        openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 3650 -subj "/CN=sigstream test CA" \
            -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
        for name in broker client; do
            if [[ $name == broker ]]; then
                usage="subjectAltName=IP:127.0.0.1,DNS:localhost
extendedKeyUsage=serverAuth"
            else
                usage="extendedKeyUsage=clientAuth"
            fi
            openssl req -newkey rsa:2048 -nodes -keyout "$name.key" -out "$name.csr" -subj "/CN=sigstream-$name" \
                2>/dev/null
            printf '%s\nkeyUsage=critical,digitalSignature,keyEncipherment\n' "$usage" >"$name.ext"
            openssl x509 -req -in "$name.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -out "$name.pem" -days 3650 \
                -extfile "$name.ext" 2>/dev/null
        done
        random_secret >store.password
        openssl pkcs12 -export -in broker.pem -inkey broker.key -certfile ca.pem -name broker -out broker.p12 \
            -passout "file:store.password"
        keytool -importcert -noprompt -alias ca -file ca.pem -keystore truststore.p12 -storetype PKCS12 \
            -storepass "$(cat store.password)" >/dev/null 2>&1
        chmod 644 ca.pem client.pem  # certificates are public; the keys and passwords stay 600
    ) || die "making the TLS certificates failed"
}

secure_config() {
    # Adds the SASL_SSL and mTLS listeners to $PROPS and records their ports. The SCRAM user is created by
    # write_config's storage format (--add-scram): KRaft takes users before the broker first runs that way.
    local sport mport user password_file store_password
    sport="$(free_port)"
    mport="$(free_port)"
    user="${SIGSTREAM_KAFKA_SASL_USERNAME:-sigstream}"
    password_file="$RUN/sasl.password"
    (umask 077; printf '%s\n' "${SIGSTREAM_KAFKA_SASL_PASSWORD:-$(random_secret)}" >"$password_file")
    make_certs
    store_password="$(cat "$TLS/store.password")"
    sed -i -e "s|^listeners=\(.*\)|listeners=\1,SASL_SSL://127.0.0.1:$sport,SSL://127.0.0.1:$mport|" \
        -e "s|^advertised.listeners=\(.*\)|advertised.listeners=\1,SASL_SSL://127.0.0.1:$sport,SSL://127.0.0.1:$mport|" \
        -e "s|^listener.security.protocol.map=\(.*\)|listener.security.protocol.map=\1,SASL_SSL:SASL_SSL,SSL:SSL|" \
        "$PROPS"
    chmod 600 "$PROPS"  # it holds the keystore password
    {
        echo ""
        echo "# SIGSTREAM_KAFKA_SECURE=1: SCRAM-SHA-512 over TLS, and TLS with a required client certificate (mTLS)."
        echo "sasl.enabled.mechanisms=SCRAM-SHA-512"
        echo "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;"
        echo "ssl.keystore.type=PKCS12"
        echo "ssl.keystore.location=$TLS/broker.p12"
        echo "ssl.keystore.password=$store_password"
        echo "ssl.key.password=$store_password"
        echo "ssl.truststore.type=PKCS12"
        echo "ssl.truststore.location=$TLS/truststore.p12"
        echo "ssl.truststore.password=$store_password"
        echo "listener.name.ssl.ssl.client.auth=required"
        echo "listener.name.sasl_ssl.ssl.client.auth=none"
    } >>"$PROPS"
    {
        echo "KAFKA_SASL_SSL_BOOTSTRAP=127.0.0.1:$sport"
        echo "KAFKA_SSL_BOOTSTRAP=127.0.0.1:$mport"
        echo "KAFKA_CA_FILE=$TLS/ca.pem"
        echo "KAFKA_CLIENT_CERT=$TLS/client.pem"
        echo "KAFKA_CLIENT_KEY=$TLS/client.key"
        echo "KAFKA_SASL_USERNAME=$user"
        echo "KAFKA_SASL_PASSWORD_FILE=$password_file"
    } >"$SECURE_ENV"
}

print_addresses() {
    echo "KAFKA_BOOTSTRAP=$(bootstrap)"
    if is_secure; then cat "$SECURE_ENV"; fi
}

write_config() {
    local port="${SIGSTREAM_KAFKA_PORT:-$(free_port)}"
    local cport
    cport="$(free_port)"
    while [[ "$cport" == "$port" ]]; do cport="$(free_port)"; done
    mkdir -p "$RUN/data"
    sed -e "s|@PORT@|$port|g" -e "s|@CONTROLLER_PORT@|$cport|g" -e "s|@DATA@|$RUN/data|g" \
        "$HERE/server.properties.template" >"$PROPS"
    cat >"$RUN/log4j.properties" <<EOF
log4j.rootLogger=INFO, file
log4j.appender.file=org.apache.log4j.FileAppender
log4j.appender.file.File=$RUN/server.log
log4j.appender.file.layout=org.apache.log4j.PatternLayout
log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka=INFO
log4j.logger.org.apache.kafka=INFO
log4j.logger.kafka.request.logger=WARN
log4j.logger.state.change.logger=WARN
log4j.logger.kafka.log.LogCleaner=WARN
EOF
    local cluster_id scram=()
    if [[ "${SIGSTREAM_KAFKA_SECURE:-0}" == 1 ]]; then
        secure_config
        # StorageTool takes the password on its command line only; the format runs once, before the broker.
        scram=(--add-scram "SCRAM-SHA-512=[name=$(sed -n 's/^KAFKA_SASL_USERNAME=//p' "$SECURE_ENV"),password=$(cat "$RUN/sasl.password")]")
    fi
    cluster_id="$(java_cp kafka.tools.StorageTool random-uuid)"
    java_cp kafka.tools.StorageTool format -t "$cluster_id" -c "$PROPS" "${scram[@]}" >"$RUN/format.out" 2>&1 \
        || { cat "$RUN/format.out" >&2; die "storage format failed"; }
}

wait_ready() {
    local addr port pid deadline
    addr="$(bootstrap)"
    port="${addr##*:}"
    pid="$(cat "$PIDFILE")"
    deadline=$((SECONDS + START_TIMEOUT_S))
    while ((SECONDS < deadline)); do
        kill -0 "$pid" 2>/dev/null || { tail -50 "$LOGFILE" "$RUN/server.log" >&2 || true; die "broker exited during start-up"; }
        # The log line is written once the broker has registered with the controller and opened its
        # listeners; the TCP connect confirms the PLAINTEXT port really accepts clients.
        if grep -q "Kafka Server started" "$RUN/server.log" 2>/dev/null \
            && (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            if ! is_secure; then return 0; fi
            local sport
            sport="$(sed -n 's/^KAFKA_SASL_SSL_BOOTSTRAP=.*://p' "$SECURE_ENV")"
            if (exec 3<>"/dev/tcp/127.0.0.1/$sport") 2>/dev/null; then return 0; fi
        fi
        sleep 0.3
    done
    tail -50 "$RUN/server.log" >&2 || true
    die "broker did not answer on $addr within ${START_TIMEOUT_S}s"
}

cmd_start() {
    need java "install a JDK (17+): apt-get install -y openjdk-17-jre-headless"
    need python3 "used to pick a free port"
    fetch_jars
    mkdir -p "$RUN"
    if is_running; then
        print_addresses
        return 0
    fi
    if [[ ! -f "$RUN/data/meta.properties" ]]; then
        write_config
    fi
    # Only this run's server.log should be searched for the "started" line.
    if [[ -f "$RUN/server.log" ]]; then mv "$RUN/server.log" "$RUN/server.log.prev"; fi
    # shellcheck disable=SC2086 # KAFKA_HEAP_OPTS is a list of JVM flags
    setsid nohup java ${KAFKA_HEAP_OPTS:--Xmx512m -Xms128m} -XX:+UseSerialGC -Djava.awt.headless=true \
        -Dlog4j.configuration="file:$RUN/log4j.properties" -Dkafka.logs.dir="$RUN" \
        -cp "$LIB/*" kafka.Kafka "$PROPS" >"$LOGFILE" 2>&1 </dev/null &
    echo $! >"$PIDFILE"
    wait_ready
    print_addresses
}

cmd_stop() {
    if ! is_running; then
        rm -f "$PIDFILE"
        return 0
    fi
    local pid deadline
    pid="$(cat "$PIDFILE")"
    kill -TERM "$pid"
    deadline=$((SECONDS + STOP_TIMEOUT_S))
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.2; done
    if kill -0 "$pid" 2>/dev/null; then
        echo "kafka.sh: broker $pid ignored SIGTERM for ${STOP_TIMEOUT_S}s; killing it" >&2
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$PIDFILE"
}

cmd_status() {
    if is_running; then
        print_addresses
    else
        echo "kafka.sh: not running" >&2
        return 1
    fi
}

case "${1:-}" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    clean) cmd_stop; rm -rf "$RUN" ;;
    fetch) fetch_jars ;;
    *) echo "usage: $0 start|stop|status|clean|fetch" >&2; exit 2 ;;
esac
