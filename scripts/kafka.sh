#!/usr/bin/env bash
# A real single-node Apache Kafka 4.x broker (KRaft, combined broker+controller) for
# integration tests, run from Maven Central jars: no Docker, no Kafka tarball.
#
#   scripts/kafka.sh install               fetch the jars once into the cache (quiet, idempotent)
#   scripts/kafka.sh start                 start a fresh broker; last stdout line is host:port
#   scripts/kafka.sh stop                  stop it (SIGTERM, then SIGKILL after 20 s); safe if none
#   scripts/kafka.sh restart               start a stopped broker again, keeping data and ports
#   scripts/kafka.sh status                "running <bootstrap> (pid N)" or "stopped"
#   scripts/kafka.sh bootstrap             print host:port if running, else exit 1
#   scripts/kafka.sh perf-consume TOPIC N  run ConsumerPerformance for N records of TOPIC (KAFKA_BOOTSTRAP wins)
#   scripts/kafka.sh run CLASS [ARGS...]   run any Kafka CLI class on the broker's classpath
#
# Environment:
#   SALESPULSE_KAFKA_DIR            state dir (config, data, logs, pid)  [/tmp/salespulse-kafka]
#   SALESPULSE_KAFKA_START_TIMEOUT  seconds to wait for the broker       [60]
#   SALESPULSE_KAFKA_HEAP_OPTS      broker JVM heap                      [-Xmx512m -Xms256m]
#   XDG_CACHE_HOME                  jar cache root                       [~/.cache]
#   JAVA_HOME                       Java 17+ (else `java` on PATH)
#
# Every `start` of a stopped broker wipes <state>/data and formats it again with a new
# cluster id, on two freshly picked free ports on 127.0.0.1: each run gets an empty broker.
# `restart` is the exception: it brings a stopped broker back as it was (outage tests).
# Logs: <state>/logs/server.log (broker), <state>/logs/kafka.out (JVM stdout/stderr),
# <state>/logs/tools.log (CLI tools run through this script).
#
# Examples (what the plain Kafka scripts would be, with the cached jars):
#   scripts/kafka.sh run org.apache.kafka.tools.TopicCommand \
#       --bootstrap-server "$(scripts/kafka.sh bootstrap)" --create --topic t --partitions 3
#   scripts/kafka.sh perf-consume t 1000
#   # == java -cp "$LIBS/*" -Dlog4j2.configurationFile=scripts/kafka/log4j2.yaml \
#   #      -Dkafka.logs.dir=<state>/logs -Dkafka.log.file=tools.log -Dkafka.log.level=WARN \
#   #      org.apache.kafka.tools.ConsumerPerformance --bootstrap-server 127.0.0.1:PORT \
#   #      --topic t --num-records 1000 --timeout 30000
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
POM="$SCRIPT_DIR/kafka/pom.xml"
LOG4J_CONF="$SCRIPT_DIR/kafka/log4j2.yaml"

die() {
    echo "kafka.sh: $*" >&2
    exit 1
}
say() { echo "kafka.sh: $*" >&2; }

[ -f "$POM" ] || die "missing $POM"
KAFKA_VERSION=$(sed -n 's:.*<kafka\.version>\(.*\)</kafka\.version>.*:\1:p' "$POM" | head -n 1)
[ -n "$KAFKA_VERSION" ] || die "cannot read <kafka.version> from $POM"

CACHE_ROOT="${XDG_CACHE_HOME:-$HOME/.cache}/salespulse/kafka-$KAFKA_VERSION"
LIBS="$CACHE_ROOT/libs"
STAMP="$CACHE_ROOT/installed.stamp"

STATE="${SALESPULSE_KAFKA_DIR:-/tmp/salespulse-kafka}"
PID_FILE="$STATE/kafka.pid"
BOOTSTRAP_FILE="$STATE/bootstrap"
LOG_DIR="$STATE/logs"
DATA_DIR="$STATE/data"
PROPS="$STATE/server.properties"
START_TIMEOUT="${SALESPULSE_KAFKA_START_TIMEOUT:-60}"
HEAP_OPTS="${SALESPULSE_KAFKA_HEAP_OPTS:--Xmx512m -Xms256m}"

if [ -n "${JAVA_HOME:-}" ] && [ -x "$JAVA_HOME/bin/java" ]; then
    JAVA="$JAVA_HOME/bin/java"
else
    JAVA=java
fi

# ---------------------------------------------------------------------------- install

# The stamp holds the pom's checksum, so editing the pom (same version) re-installs.
pom_sum() { cksum <"$POM" | awk '{print $1 "-" $2}'; }

installed() {
    [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$(pom_sum)" ] && [ -d "$LIBS" ]
}

cmd_install() {
    installed && return 0
    command -v mvn >/dev/null 2>&1 || die "mvn (Maven) not found; install it (apt-get install maven)"
    mkdir -p "$CACHE_ROOT"
    if command -v flock >/dev/null 2>&1; then # one installer at a time; re-check after waiting
        exec 8>"$CACHE_ROOT/.install.lock"
        flock -w 600 8 || die "timed out waiting for another install into $CACHE_ROOT"
        if installed; then
            exec 8>&-
            return 0
        fi
    fi
    local tmp out
    tmp=$(mktemp -d "$CACHE_ROOT/libs.tmp.XXXXXX")
    out="$tmp.mvn.log"
    if ! mvn -q -B -Dstyle.color=never -f "$POM" dependency:copy-dependencies \
        -DoutputDirectory="$tmp" -DincludeScope=runtime >"$out" 2>&1; then
        cat "$out" >&2
        rm -rf "$tmp" "$out"
        die "mvn could not fetch Kafka $KAFKA_VERSION jars (see above)"
    fi
    rm -f "$out"
    ls "$tmp"/kafka_2.13-*.jar >/dev/null 2>&1 || { rm -rf "$tmp"; die "mvn ran but no kafka_2.13 jar in $tmp"; }
    rm -f "$STAMP"
    rm -rf "$LIBS"
    mv "$tmp" "$LIBS"
    pom_sum >"$STAMP" # written last: marks the install complete
    exec 8>&-
}

# ---------------------------------------------------------------------------- helpers

check_java() {
    command -v "$JAVA" >/dev/null 2>&1 || die "java not found (Kafka $KAFKA_VERSION needs Java 17+); set JAVA_HOME"
    local v
    v=$("$JAVA" -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -n 1)
    [ -n "$v" ] && [ "$v" -ge 17 ] 2>/dev/null || die "Kafka $KAFKA_VERSION needs Java 17+, $JAVA is '${v:-unknown}'"
}

# PID of the broker for this state dir, if it is alive (and really is our Kafka, not a
# recycled PID). Prints nothing and returns 1 otherwise.
running_pid() {
    [ -f "$PID_FILE" ] || return 1
    local pid
    pid=$(cat "$PID_FILE" 2>/dev/null || true)
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    if [ -r "/proc/$pid/cmdline" ]; then
        local cmdline
        cmdline=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || true)
        [[ "$cmdline" == *" kafka.Kafka "* ]] || return 1
    fi
    echo "$pid"
}

port_in_use() { # port -> 0 if something accepts connections on 127.0.0.1:port
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Two distinct free TCP ports on 127.0.0.1, space-separated.
pick_ports() {
    if command -v python3 >/dev/null 2>&1; then
        python3 - <<'EOF'
import socket
socks = []
for _ in range(2):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
for s in socks:
    s.close()
EOF
        return
    fi
    local ports=() p tries=0
    while [ "${#ports[@]}" -lt 2 ]; do
        tries=$((tries + 1))
        [ "$tries" -le 200 ] || die "could not find two free ports on 127.0.0.1"
        p=$((20000 + RANDOM % 40000))
        [ "${#ports[@]}" -eq 1 ] && [ "${ports[0]}" = "$p" ] && continue
        port_in_use "$p" || ports+=("$p")
    done
    echo "${ports[*]}"
}

# Serialise start/stop on one state dir (parallel test runs sharing it).
lock_state() {
    mkdir -p "$STATE"
    if command -v flock >/dev/null 2>&1; then
        exec 9>"$STATE/.lock"
        flock -w 120 9 || die "timed out waiting for the lock on $STATE"
    fi
}

# Short-lived CLI JVMs start ~30% faster with C1 only; perf-consume clears this.
TOOL_JIT_OPTS=(-XX:TieredStopAtLevel=1)

tool_java() { # CLASS ARGS... : a Kafka CLI class, logging WARN+ to <state>/logs/tools.log
    mkdir -p "$LOG_DIR"
    "$JAVA" -Xmx256m -XX:+UseSerialGC "${TOOL_JIT_OPTS[@]}" -Djava.awt.headless=true \
        -Dlog4j2.configurationFile="$LOG4J_CONF" -Dkafka.logs.dir="$LOG_DIR" \
        -Dkafka.log.file=tools.log -Dkafka.log.level=WARN \
        -cp "$LIBS/*" "$@"
}

tail_logs() {
    local f
    for f in "$LOG_DIR/server.log" "$LOG_DIR/kafka.out"; do
        if [ -s "$f" ]; then
            echo "---- last 50 lines of $f" >&2
            tail -n 50 "$f" >&2
        fi
    done
}

kill_pid() { # pid : SIGTERM, wait up to 20 s, then SIGKILL
    local pid=$1 i
    kill -TERM "$pid" 2>/dev/null || return 0
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.2
    done
    say "broker (pid $pid) still alive after 20 s, sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    say "warning: pid $pid survived SIGKILL"
}

# Is the broker answering? Port open, then (with kcat) a metadata request that lists
# broker 1, else the "Kafka Server started" line in the log.
broker_ready() {
    local port=$1
    port_in_use "$port" || return 1
    if command -v kcat >/dev/null 2>&1; then
        local md
        md=$(kcat -b "127.0.0.1:$port" -L -m 2 2>/dev/null) || return 1
        [[ "$md" == *"broker 1 at 127.0.0.1:$port"* ]]
    else
        grep -q 'Kafka Server started' "$LOG_DIR/server.log" 2>/dev/null
    fi
}

write_properties() { # broker_port controller_port
    cat >"$PROPS" <<EOF
# Written by scripts/kafka.sh start; rewritten on every start.
process.roles=broker,controller
node.id=1
listeners=PLAINTEXT://127.0.0.1:$1,CONTROLLER://127.0.0.1:$2
advertised.listeners=PLAINTEXT://127.0.0.1:$1
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
# Dynamic quorum with this node as the only voter (storage formatted with --standalone).
controller.quorum.bootstrap.servers=127.0.0.1:$2

log.dirs=$DATA_DIR
num.partitions=1
default.replication.factor=1
auto.create.topics.enable=true
delete.topic.enable=true

# Internal topics: one replica, few partitions (fast first group/transaction).
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
share.coordinator.state.topic.num.partitions=1
group.initial.rebalance.delay.ms=0

# Small footprint.
num.network.threads=2
num.io.threads=4
num.recovery.threads.per.data.dir=1
log.retention.hours=24
EOF
}

# ---------------------------------------------------------------------------- commands

launch_broker() { # broker_port : start the JVM on the state dir as it is, wait until it answers
    # The JVM gets its own session (setsid) and none of our fds: with stdout still on a
    # pipe, `$(kafka.sh start)` would never return. fds 8/9 (the locks) are closed too.
    local launcher=()
    command -v setsid >/dev/null 2>&1 && launcher=(setsid)
    # shellcheck disable=SC2086 # HEAP_OPTS is a list of JVM flags
    "${launcher[@]}" bash -c 'echo $$ >"$1"; shift; exec "$@"' kafka-launch "$PID_FILE" \
        "$JAVA" $HEAP_OPTS -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:+ExitOnOutOfMemoryError \
        -Djava.awt.headless=true \
        -Dlog4j2.configurationFile="$LOG4J_CONF" -Dkafka.logs.dir="$LOG_DIR" \
        -cp "$LIBS/*" kafka.Kafka "$PROPS" \
        </dev/null >"$LOG_DIR/kafka.out" 2>&1 8>&- 9>&- &

    local deadline=$((SECONDS + START_TIMEOUT)) i pid="" bport=$1
    for ((i = 0; i < 50; i++)); do # the pid file appears within milliseconds
        [ -s "$PID_FILE" ] && pid=$(cat "$PID_FILE") && [ -n "$pid" ] && break
        sleep 0.1
    done
    [ -n "$pid" ] || die "broker did not start (no pid written to $PID_FILE)"

    until broker_ready "$bport"; do
        if ! kill -0 "$pid" 2>/dev/null; then
            tail_logs
            rm -f "$PID_FILE"
            die "broker exited during startup (logs in $LOG_DIR)"
        fi
        if ((SECONDS >= deadline)); then
            tail_logs
            kill_pid "$pid"
            rm -f "$PID_FILE"
            die "broker not ready on 127.0.0.1:$bport after ${START_TIMEOUT}s (logs in $LOG_DIR)"
        fi
        sleep 0.25
    done
}


cmd_start() {
    lock_state
    local pid
    if pid=$(running_pid); then
        [ -s "$BOOTSTRAP_FILE" ] || die "broker running (pid $pid) but $BOOTSTRAP_FILE is missing"
        cat "$BOOTSTRAP_FILE"
        return 0
    fi
    rm -f "$PID_FILE" "$BOOTSTRAP_FILE"

    check_java
    cmd_install

    local ports bport cport cluster_id
    ports=$(pick_ports)
    read -r bport cport <<<"$ports"
    [ -n "$bport" ] && [ -n "$cport" ] || die "could not pick free ports"

    rm -rf "$DATA_DIR" "$LOG_DIR"
    mkdir -p "$DATA_DIR" "$LOG_DIR"
    write_properties "$bport" "$cport"

    cluster_id=$(tool_java kafka.tools.StorageTool random-uuid 2>>"$LOG_DIR/tools.log") ||
        die "StorageTool random-uuid failed (see $LOG_DIR/tools.log)"
    if ! tool_java kafka.tools.StorageTool format -t "$cluster_id" -c "$PROPS" --standalone \
        >"$LOG_DIR/format.out" 2>&1; then
        cat "$LOG_DIR/format.out" >&2
        die "formatting $DATA_DIR failed"
    fi

    launch_broker "$bport"
    echo "127.0.0.1:$bport" >"$BOOTSTRAP_FILE"
    say "Kafka $KAFKA_VERSION running (pid $(cat "$PID_FILE"), state $STATE)"
    echo "127.0.0.1:$bport"
}

# Starts the broker of this state dir again with its data, ports and cluster id (after `stop`):
# for tests of a broker outage. Fails if `start` never formatted the dir.
cmd_restart() {
    lock_state
    local pid bport
    if pid=$(running_pid); then
        [ -s "$BOOTSTRAP_FILE" ] || die "broker running (pid $pid) but $BOOTSTRAP_FILE is missing"
        cat "$BOOTSTRAP_FILE"
        return 0
    fi
    [ -f "$PROPS" ] && [ -f "$DATA_DIR/meta.properties" ] || die "nothing to restart in $STATE (run start first)"
    check_java
    cmd_install
    bport=$(sed -n 's|^listeners=PLAINTEXT://127\.0\.0\.1:\([0-9]*\),.*|\1|p' "$PROPS")
    [ -n "$bport" ] || die "cannot read the broker port from $PROPS"
    port_in_use "$bport" && die "port $bport is taken; cannot restart the broker on it"
    rm -f "$PID_FILE" "$BOOTSTRAP_FILE"
    launch_broker "$bport"
    echo "127.0.0.1:$bport" >"$BOOTSTRAP_FILE"
    say "Kafka $KAFKA_VERSION running again (pid $(cat "$PID_FILE"), state $STATE, data kept)"
    echo "127.0.0.1:$bport"
}

cmd_stop() {
    [ -d "$STATE" ] || return 0
    lock_state
    local pid
    if pid=$(running_pid); then
        kill_pid "$pid"
        say "stopped broker (pid $pid)"
    fi
    rm -f "$PID_FILE" "$BOOTSTRAP_FILE"
}

cmd_status() {
    local pid
    if pid=$(running_pid); then
        echo "running $(cat "$BOOTSTRAP_FILE" 2>/dev/null || echo '?') (pid $pid, state $STATE)"
    else
        echo "stopped (state $STATE)"
    fi
}

cmd_bootstrap() {
    running_pid >/dev/null && [ -s "$BOOTSTRAP_FILE" ] || die "no broker running for $STATE"
    cat "$BOOTSTRAP_FILE"
}

cmd_perf_consume() {
    [ $# -eq 2 ] || die "usage: kafka.sh perf-consume TOPIC NUM_RECORDS"
    [[ "$2" =~ ^[0-9]+$ ]] || die "NUM_RECORDS must be a number, got '$2'"
    local bootstrap
    bootstrap=${KAFKA_BOOTSTRAP:-$(cmd_bootstrap)}
    installed || die "Kafka jars not installed; run: kafka.sh install"
    TOOL_JIT_OPTS=()
    tool_java org.apache.kafka.tools.ConsumerPerformance --bootstrap-server "$bootstrap" \
        --topic "$1" --num-records "$2" --timeout 30000
}

cmd_run() {
    [ $# -ge 1 ] || die "usage: kafka.sh run CLASS [ARGS...]  (e.g. org.apache.kafka.tools.TopicCommand)"
    check_java
    cmd_install
    tool_java "$@"
}

usage() {
    sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
    exit "${1:-2}"
}

case "${1:-}" in
install) cmd_install ;;
start) cmd_start ;;
restart) cmd_restart ;;
stop) cmd_stop ;;
status) cmd_status ;;
bootstrap) cmd_bootstrap ;;
perf-consume) shift && cmd_perf_consume "$@" ;;
run) shift && cmd_run "$@" ;;
-h | --help | help) usage 0 ;;
"") usage ;;
*) echo "kafka.sh: unknown command '$1'" >&2 && usage ;;
esac
