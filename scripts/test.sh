#!/usr/bin/env bash
# Runs the test suite: lint, the hermetic tests, then the tests against a real Kafka broker
# (the live page's tests drive Debian's headless chromium through playwright-core)
# (KAFKA_BOOTSTRAP if set, else one started here and stopped on exit).
#   scripts/test.sh          everything
#   scripts/test.sh broker   only the real-broker tests
set -euo pipefail
cd "$(dirname "$0")/.."
CARGO=${CARGO:-cargo}
only=${1:-all}

if [ "$only" = all ]; then
    echo "== lint"
    $CARGO fmt --all -- --check
    $CARGO clippy --workspace --all-targets --features salespulse/broker-tests -- -D warnings
    echo "== alert and recording rules (promtool)"
    scripts/check-rules.sh
    echo "== hermetic tests"
    $CARGO test --workspace
    echo "== benchmarks in quick mode (built and run once each, nothing timed; make bench-micro times them)"
    $CARGO test --workspace --benches
    echo "== deployment files (amtool, promtool, docker-compose config, manifests, systemd)"
    scripts/check-deploy.sh
    echo "== fuzz smoke run of the decoders (cargo fuzz, ${SALESPULSE_FUZZ_SECONDS:-20} s per target)"
    scripts/fuzz.sh
fi

echo "== tests with real external programs: Kafka broker, kcat, Prometheus, Alertmanager"
started=""
if [ -z "${KAFKA_BOOTSTRAP:-}" ]; then
    export SALESPULSE_KAFKA_DIR=${SALESPULSE_KAFKA_DIR:-$(mktemp -d /tmp/salespulse-kafka.XXXXXX)}
    trap 'scripts/kafka.sh stop || true' EXIT
    KAFKA_BOOTSTRAP=$(scripts/kafka.sh start | tail -n 1)
    export KAFKA_BOOTSTRAP
    started=yes
fi
echo "Kafka at $KAFKA_BOOTSTRAP${started:+ (started for this run)}"
$CARGO test -p salespulse --features broker-tests --test broker --test alerting --test gateway --test browser
echo "== scale-out, crashes and a broker outage (real daemons killed with SIGKILL, a broker of its own)"
# One test at a time: each runs several daemons (and the outage test a second broker).
$CARGO test -p salespulse --features broker-tests --test scaling -- --test-threads=1
