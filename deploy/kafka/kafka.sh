#!/usr/bin/env bash
# Run one local Kafka node (KRaft: broker + controller in one JVM) straight from the jars that Maven
# resolves into deploy/kafka/lib. For development, tests, CI and the demo; not for production.
#
#   deploy/kafka/kafka.sh start | stop | status | restart | logs | config
#
# Environment (all optional):
#   KAFKA_DATA_DIR         data, logs, rendered config and pid file   (default <repo>/.kafka)
#   KAFKA_HOST             host the broker binds to and advertises     (default localhost)
#   KAFKA_PORT             client port                                 (default 9092)
#   KAFKA_CONTROLLER_PORT  KRaft controller port                       (default 9093)
#   KAFKA_HEAP_OPTS        JVM heap                                    (default -Xms256m -Xmx1g)
#   KAFKA_JVM_OPTS         extra JVM options                           (default none)
#   KAFKA_START_TIMEOUT    seconds to wait for the broker to serve     (default 120)
#   KAFKA_STOP_TIMEOUT     seconds to wait after SIGTERM before KILL   (default 30)
#   JAVA_HOME              picks the java binary                       (default java on PATH)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
LIB="$HERE/lib"
DATA_DIR="${KAFKA_DATA_DIR:-$REPO/.kafka}"
HOST="${KAFKA_HOST:-localhost}"
PORT="${KAFKA_PORT:-9092}"
CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-9093}"
HEAP_OPTS="${KAFKA_HEAP_OPTS:--Xms256m -Xmx1g}"
START_TIMEOUT="${KAFKA_START_TIMEOUT:-120}"
STOP_TIMEOUT="${KAFKA_STOP_TIMEOUT:-30}"
JAVA="${JAVA_HOME:+$JAVA_HOME/bin/}java"

LOG_DIRS="$DATA_DIR/data"
LOGS="$DATA_DIR/logs"
CONFIG="$DATA_DIR/server.properties"
PID_FILE="$DATA_DIR/kafka.pid"
CLUSTER_ID_FILE="$DATA_DIR/cluster.id"
RESOLVED_STAMP="$LIB/.resolved"

say() { printf 'kafka: %s\n' "$*"; }
die() { printf 'kafka: error: %s\n' "$*" >&2; exit 1; }

usage() {
    cat <<EOF
usage: $(basename "$0") start|stop|status|restart|logs|config

  start    resolve the jars if needed, format storage on first use, start the node and wait until it
           answers metadata requests on $HOST:$PORT (exit 0 if it is already running)
  stop     SIGTERM, wait up to ${STOP_TIMEOUT}s, then SIGKILL
  status   print the state; exit 0 when running, 1 when not
  restart  stop, then start
  logs     print the last lines of the broker log
  config   print the broker configuration that start would use

data: $DATA_DIR (KAFKA_DATA_DIR); ports: $PORT, controller $CONTROLLER_PORT (KAFKA_PORT,
KAFKA_CONTROLLER_PORT). See the header of this script for every variable.
EOF
}

is_number() { [[ "$1" =~ ^[0-9]+$ ]]; }

check_env() {
    local name value
    for name in PORT CONTROLLER_PORT START_TIMEOUT STOP_TIMEOUT; do
        value="${!name}"
        is_number "$value" || die "KAFKA_$name must be a whole number, got '$value'"
    done
    [[ "$PORT" != "$CONTROLLER_PORT" ]] || die "KAFKA_PORT and KAFKA_CONTROLLER_PORT are both $PORT"
}

pid_of_node() {
    [[ -f "$PID_FILE" ]] || return 1
    local pid
    pid="$(cat "$PID_FILE" 2>/dev/null)" || return 1
    is_number "$pid" || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    # Guards against a recycled pid: the process must be our broker with our config.
    local args
    if [[ -r "/proc/$pid/cmdline" ]]; then
        args="$(tr '\0' ' ' <"/proc/$pid/cmdline")"
    else
        args="$(ps -p "$pid" -o args= 2>/dev/null || true)"
    fi
    [[ "$args" == *kafka.Kafka*"$CONFIG"* ]] || return 1
    printf '%s\n' "$pid"
}

port_open() {
    (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null
}

need_java() {
    command -v "$JAVA" >/dev/null 2>&1 ||
        die "java not found (looked for '$JAVA'): install Java 17, e.g. 'apt-get install openjdk-17-jre-headless', or set JAVA_HOME"
    local version
    version="$("$JAVA" -XshowSettings:properties -version 2>&1 |
        awk -F' = ' '/java.specification.version/ {print $2; exit}')"
    version="${version#1.}"
    is_number "${version%%.*}" || die "cannot tell the version of '$JAVA'"
    ((${version%%.*} >= 11)) || die "Kafka 3.9 needs Java 11 or newer (17 recommended); '$JAVA' is $version"
}

pom_digest() {
    cksum <"$HERE/pom.xml" | cut -d' ' -f1
}

# lib/ is complete when a previous resolution of the same pom.xml finished; anything else is redone
# from scratch so jars of an older Kafka never end up on the classpath.
resolve_jars() {
    if [[ -f "$RESOLVED_STAMP" && "$(cat "$RESOLVED_STAMP")" == "$(pom_digest)" ]]; then
        return 0
    fi
    command -v mvn >/dev/null 2>&1 ||
        die "deploy/kafka/lib is missing or incomplete and mvn was not found: install Maven, e.g. 'apt-get install maven'"
    say "resolving the Kafka jars through Maven into deploy/kafka/lib (first run only)"
    local tmp="$HERE/lib.tmp.$$"
    rm -rf "$tmp"
    mkdir -p "$LOGS"
    if ! (cd "$HERE" && mvn -B -Dstyle.color=never dependency:copy-dependencies -DincludeScope=runtime \
        -DoutputDirectory="$tmp") >"$LOGS/maven.log" 2>&1; then
        rm -rf "$tmp"
        tail -n 30 "$LOGS/maven.log" >&2
        die "Maven could not resolve the Kafka jars (full output in $LOGS/maven.log); is Maven Central reachable?"
    fi
    ls "$tmp"/kafka_2.13-*.jar >/dev/null 2>&1 || {
        rm -rf "$tmp"
        die "Maven finished but no kafka_2.13 jar was copied; check deploy/kafka/pom.xml"
    }
    pom_digest >"$tmp/.resolved"
    rm -rf "$LIB"
    mv "$tmp" "$LIB"
}

render_template() {
    sed -e "s|@HOST@|$HOST|g" -e "s|@PORT@|$PORT|g" -e "s|@CONTROLLER_PORT@|$CONTROLLER_PORT|g" \
        -e "s|@LOG_DIRS@|$LOG_DIRS|g" "$HERE/server.properties.in"
}

render_config() {
    render_template >"$CONFIG.tmp"
    mv "$CONFIG.tmp" "$CONFIG"
}

java_base() {
    printf '%s\n' "$JAVA" -Dlog4j.configuration="file:$HERE/log4j.properties" -Dkafka.logs.dir="$LOGS" \
        -cp "$LIB/*"
}

# Options for the short-lived tool JVMs (format, probe): start fast, stay small.
TOOL_JVM_OPTS=(-Xmx128m -XX:+UseSerialGC -XX:TieredStopAtLevel=1)

format_storage() {
    [[ -f "$LOG_DIRS/meta.properties" ]] && return 0
    if [[ ! -s "$CLUSTER_ID_FILE" ]]; then
        # A Kafka cluster id is a base64url UUID without padding: 16 random bytes, 22 characters.
        # It may start with '-', which the tool would read as an option: hence --cluster-id=ID below.
        head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n' >"$CLUSTER_ID_FILE"
    fi
    say "formatting storage in $LOG_DIRS (cluster id $(cat "$CLUSTER_ID_FILE"))"
    local -a base
    mapfile -t base < <(java_base)
    "${base[@]}" "${TOOL_JVM_OPTS[@]}" kafka.tools.StorageTool format --cluster-id="$(cat "$CLUSTER_ID_FILE")" -c "$CONFIG" \
        --ignore-formatted >>"$LOGS/format.log" 2>&1 ||
        die "formatting storage failed; see $LOGS/format.log"
}

# Ready means the broker answered a metadata request, not merely that its port accepts connections:
# KRaft opens the socket before the broker is unfenced and able to serve.
broker_answers() {
    local -a base
    mapfile -t base < <(java_base)
    printf 'request.timeout.ms=3000\ndefault.api.timeout.ms=5000\n' >"$DATA_DIR/probe.properties"
    "${base[@]}" "${TOOL_JVM_OPTS[@]}" kafka.admin.BrokerApiVersionsCommand \
        --bootstrap-server "$HOST:$PORT" --command-config "$DATA_DIR/probe.properties" \
        >"$LOGS/probe.log" 2>&1
}

wait_ready() {
    local pid="$1" log_start="$2" started=$SECONDS
    while ((SECONDS - started < START_TIMEOUT)); do
        kill -0 "$pid" 2>/dev/null || return 1
        # Cheap check first so the JVM-based probe runs once or twice, not every 200 ms.
        # The rolling appender may have started a new file since we took the offset.
        (($(file_size "$LOGS/server.log") >= log_start)) || log_start=0
        # grep reads to the end (no -q): an early exit would SIGPIPE tail and, with pipefail, fail the test.
        if tail -c "+$((log_start + 1))" "$LOGS/server.log" 2>/dev/null | grep "Kafka Server started" >/dev/null &&
            broker_answers; then
            return 0
        fi
        sleep 0.2
    done
    return 2
}

file_size() {
    if [[ -f "$1" ]]; then wc -c <"$1"; else echo 0; fi
}

# Shows what this start-up wrote, not the tail of an earlier run.
show_failure() {
    local name offset lines
    for name in server.log kafka.out; do
        offset="$1"
        shift
        lines="$(tail -c "+$((offset + 1))" "$LOGS/$name" 2>/dev/null | tail -n 25)"
        [[ -n "$lines" ]] || continue
        printf -- '--- last lines of %s ---\n%s\n' "$LOGS/$name" "$lines" >&2
    done
}

cmd_start() {
    local pid
    if pid="$(pid_of_node)"; then
        say "already running (pid $pid) on $HOST:$PORT"
        return 0
    fi
    need_java
    for port in "$PORT" "$CONTROLLER_PORT"; do
        port_open "$port" && die "port $port on $HOST is taken by another process; set KAFKA_PORT / KAFKA_CONTROLLER_PORT"
    done
    resolve_jars
    mkdir -p "$LOG_DIRS" "$LOGS"
    render_config
    format_storage

    local began=$SECONDS log_start out_start
    log_start="$(file_size "$LOGS/server.log")"
    out_start="$(file_size "$LOGS/kafka.out")"
    local -a base launcher=()
    mapfile -t base < <(java_base)
    # A session of its own, so Ctrl-C in the shell that started it does not reach the broker.
    command -v setsid >/dev/null 2>&1 && launcher=(setsid)
    # shellcheck disable=SC2086  # HEAP_OPTS and KAFKA_JVM_OPTS are lists of options
    "${launcher[@]}" "${base[0]}" $HEAP_OPTS -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true \
        ${KAFKA_JVM_OPTS:-} "${base[@]:1}" kafka.Kafka "$CONFIG" </dev/null >>"$LOGS/kafka.out" 2>&1 9>&- &
    pid=$!
    printf '%s\n' "$pid" >"$PID_FILE"

    local status=0
    wait_ready "$pid" "$log_start" || status=$?
    if ((status == 0)); then
        say "ready on $HOST:$PORT (pid $pid, $((SECONDS - began))s; data in $DATA_DIR)"
        return 0
    fi
    if ((status == 1)); then
        printf 'kafka: error: the broker exited during start-up\n' >&2
    else
        printf 'kafka: error: the broker did not answer within %ss\n' "$START_TIMEOUT" >&2
    fi
    show_failure "$log_start" "$out_start"
    cmd_stop >/dev/null
    exit 1
}

cmd_stop() {
    local pid
    if ! pid="$(pid_of_node)"; then
        rm -f "$PID_FILE"
        say "not running"
        return 0
    fi
    local began=$SECONDS
    kill -TERM "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null && ((SECONDS - began < STOP_TIMEOUT)); do
        sleep 0.2
    done
    if kill -0 "$pid" 2>/dev/null; then
        say "still running ${STOP_TIMEOUT}s after SIGTERM; sending SIGKILL to pid $pid"
        kill -KILL "$pid" 2>/dev/null || true
        while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
    fi
    rm -f "$PID_FILE"
    say "stopped (pid $pid, $((SECONDS - began))s)"
}

cmd_status() {
    local pid
    if pid="$(pid_of_node)"; then
        if port_open "$PORT"; then
            say "running (pid $pid) on $HOST:$PORT; data in $DATA_DIR"
        else
            say "running (pid $pid) but $HOST:$PORT is not accepting connections yet"
        fi
        return 0
    fi
    if [[ -f "$PID_FILE" ]]; then
        say "stopped (stale pid file $PID_FILE removed)"
        rm -f "$PID_FILE"
    else
        say "stopped"
    fi
    return 1
}

cmd_logs() {
    [[ -f "$LOGS/server.log" ]] || die "no log yet at $LOGS/server.log"
    tail -n "${LINES_TO_SHOW:-50}" "$LOGS/server.log"
}

main() {
    [[ $# -eq 1 ]] || { usage >&2; exit 2; }
    case "$1" in
        -h | --help | help) usage; return 0 ;;
    esac
    check_env
    # One start or stop at a time per data directory (two `make test` runs, or start racing stop).
    # The broker must not inherit the lock's descriptor, or the lock would live as long as it does.
    if [[ "$1" != status && "$1" != config ]] && command -v flock >/dev/null 2>&1; then
        mkdir -p "$DATA_DIR"
        exec 9>"$DATA_DIR/.lock"
        flock -w "$((START_TIMEOUT + STOP_TIMEOUT))" 9 || die "another kafka.sh holds $DATA_DIR/.lock"
    fi
    case "$1" in
        start) cmd_start ;;
        stop) cmd_stop ;;
        status) cmd_status ;;
        restart) cmd_stop && cmd_start ;;
        logs) cmd_logs ;;
        config) render_template ;;
        *) printf 'kafka: error: unknown command %s\n' "$1" >&2; usage >&2; exit 2 ;;
    esac
}

main "$@"
