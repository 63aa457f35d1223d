#!/usr/bin/env bash
# Installs what `make test` needs beyond Rust: kcat, promtool and prometheus (package prometheus),
# prometheus-alertmanager (Debian), Apache Kafka (Maven Central jars, cached by scripts/kafka.sh),
# chromium and node (Debian), playwright-core (npm), openapi-spec-validator (PyPI).
# Idempotent: does nothing for what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v kcat >/dev/null 2>&1 || missing+=(kcat)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
command -v prometheus-alertmanager >/dev/null 2>&1 || missing+=(prometheus-alertmanager)
command -v java >/dev/null 2>&1 || missing+=(default-jre-headless)
command -v mvn >/dev/null 2>&1 || missing+=(maven)
# For scripts/check-deploy.sh: the compose file and the Kubernetes manifests are validated offline.
command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
# The live page's tests: Debian's chromium, driven by playwright-core (npm) on node.
command -v chromium >/dev/null 2>&1 || missing+=(chromium fonts-dejavu-core)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
# For the TLS test of the metrics listener: a self-signed certificate, and a client that checks it.
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
command -v curl >/dev/null 2>&1 || missing+=(curl)
if ((${#missing[@]})); then
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null 2>&1 || { echo "install-test-deps: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
        sudo=sudo
    fi
    echo "install-test-deps: installing ${missing[*]} from Debian"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The python3 on PATH (which may not be Debian's) needs PyYAML for the manifest checks.
python3 -c "import yaml" >/dev/null 2>&1 || python3 -m pip install --quiet pyyaml
# Kubernetes manifests are checked against the schemas this PyPI package bundles.
command -v kubernetes-validate >/dev/null 2>&1 || python3 -m pip install --quiet kubernetes-validate
# The OpenAPI file is validated, and live API responses checked against it (tests/browser).
python3 -c "import openapi_spec_validator, openapi_schema_validator" >/dev/null 2>&1 \
    || python3 -m pip install --quiet openapi-spec-validator
# playwright-core from the committed lock file; it drives /usr/bin/chromium (no browser download).
[ -d tests/browser/node_modules/playwright-core ] \
    || PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --prefix tests/browser --no-audit --no-fund --silent
scripts/kafka.sh install
echo "install-test-deps: kcat $(kcat -V 2>/dev/null | head -1 | awk '{print $2}'), $(promtool --version 2>&1 | head -1)"
