#!/usr/bin/env bash
# Checks the Prometheus recording and alerting rules in deploy/prometheus/ (syntax, PromQL, templates)
# and runs their unit tests (deploy/prometheus/tests/*.yml) with promtool. Exits non-zero on any
# failure. Needs promtool (Debian package `prometheus`; scripts/install-test-deps.sh installs it).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

if ! command -v promtool >/dev/null 2>&1; then
    echo "check-rules: promtool not found (install the Debian package prometheus, or run scripts/install-test-deps.sh)" >&2
    exit 1
fi

shopt -s nullglob
rules=(deploy/prometheus/*.yml)
tests=(deploy/prometheus/tests/*.yml)
if ((${#rules[@]} == 0)); then
    echo "check-rules: no rule files in deploy/prometheus/" >&2
    exit 1
fi
if ((${#tests[@]} == 0)); then
    echo "check-rules: no unit tests in deploy/prometheus/tests/" >&2
    exit 1
fi

echo "check-rules: $(promtool --version 2>&1 | head -1)"
promtool check rules "${rules[@]}"
promtool test rules "${tests[@]}"

echo "check-rules: OK: ${#rules[@]} rule files checked, ${#tests[@]} test files passed"
