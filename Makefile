# salespulse — the commands a newcomer and CI run. See README.md.
CARGO ?= cargo
export CARGO_TERM_COLOR ?= never

.PHONY: run test test-deps build lint unit-test broker-test bench bench-quick bench-micro kafka-start kafka-stop fmt clean

## The daemon on an embedded default: in-process Kafka, a simulated team, metrics on localhost.
run:
	$(CARGO) run -p salespulse -- demo

## Installs what the tests need, then runs them all (lint, unit, CLI, real broker).
test: test-deps
	scripts/test.sh

## kcat and promtool from Debian, Apache Kafka from Maven Central (cached).
test-deps:
	scripts/install-test-deps.sh

build:
	$(CARGO) build --workspace --all-targets

lint:
	scripts/check-rules.sh
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --features salespulse/broker-tests -- -D warnings

## Hermetic tests only: no broker, no network.
unit-test:
	$(CARGO) test --workspace

## Real-broker tests against KAFKA_BOOTSTRAP, or a broker started for the run.
broker-test:
	scripts/test.sh broker

## End-to-end benchmark on a real broker against the kcat / kafka-consumer-perf-test ceiling
## (about 15 minutes); rewrites the generated section of docs/performance.md. See scripts/bench.py.
bench: test-deps
	$(CARGO) build --release -p salespulse
	python3 -m pip install --quiet --disable-pip-version-check matplotlib || echo "no matplotlib: no plot"
	scripts/bench.py $(BENCH_ARGS)

## The same harness on small topics, one run: checks that it works (about 2 minutes).
bench-quick: test-deps
	$(CARGO) build --release -p salespulse
	scripts/bench.py --quick

## Criterion micro-benchmarks of the window core (apply, scrape) and the memory report; see docs/performance.md.
bench-micro:
	$(CARGO) bench -p salespulse-engine -p salespulse-sources

kafka-start:
	scripts/kafka.sh start

kafka-stop:
	scripts/kafka.sh stop

fmt:
	$(CARGO) fmt --all

clean:
	$(CARGO) clean
