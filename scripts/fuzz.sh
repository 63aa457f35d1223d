#!/usr/bin/env bash
# Fuzz smoke run of the decoders: builds every target of fuzz/Cargo.toml with cargo-fuzz
# (libFuzzer), replays the seeds and runs each target for a short bounded time.
#   scripts/fuzz.sh                 every target, SALESPULSE_FUZZ_SECONDS each (default 20)
#   scripts/fuzz.sh decode_json 600 one target, longer (a local hunt)
# cargo-fuzz is installed once into a cache (cargo install --locked; about 40 s on a fresh
# machine) unless it is on PATH. Only a stable toolchain is needed: RUSTC_BOOTSTRAP=1 lets it
# take the -Z flags cargo-fuzz passes; no sanitizer (the decoders are safe Rust: panics, hangs,
# runaway memory and failed round-trip assertions are what is looked for).
# The corpus grows in the cache between runs; a crash leaves its input in fuzz/artifacts/ and
# fails the script. Seeds (committed) are in fuzz/seeds/<target>/.
set -euo pipefail
cd "$(dirname "$0")/.."
CARGO=${CARGO:-cargo}
CARGO_FUZZ_VERSION=0.13.2
cache=${XDG_CACHE_HOME:-$HOME/.cache}/salespulse
seconds=${2:-${SALESPULSE_FUZZ_SECONDS:-20}}

if ! command -v cargo-fuzz >/dev/null 2>&1; then
    export PATH="$cache/cargo-fuzz/bin:$PATH"
    if ! command -v cargo-fuzz >/dev/null 2>&1; then
        echo "fuzz: installing cargo-fuzz $CARGO_FUZZ_VERSION into $cache/cargo-fuzz"
        started=$(date +%s)
        $CARGO install --locked --quiet cargo-fuzz --version "$CARGO_FUZZ_VERSION" --root "$cache/cargo-fuzz"
        echo "fuzz: cargo-fuzz installed in $(($(date +%s) - started)) s"
    fi
fi

if [ $# -ge 1 ]; then
    targets=("$1")
else
    mapfile -t targets < <(sed -n 's/^name = "\(.*\)"$/\1/p' fuzz/Cargo.toml | grep -v '^salespulse-fuzz$')
fi

export RUSTC_BOOTSTRAP=1
started=$(date +%s)
for target in "${targets[@]}"; do
    corpus="$cache/fuzz-corpus/$target"
    mkdir -p "$corpus" "fuzz/seeds/$target"
    echo "== fuzz $target for ${seconds}s"
    # -rss_limit_mb and -timeout turn runaway memory and hangs into failures; -max_len covers the
    # decoders' 1 MiB limit only partly, on purpose: huge payloads are in the corpus test.
    log="$cache/fuzz-$target.log"
    status=0
    (cd fuzz && cargo fuzz run --sanitizer none --debug-assertions "$target" "$corpus" "seeds/$target" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=65536 -print_final_stats=1) >"$log" 2>&1 ||
        status=$?
    grep -E '^(stat::number_of_executed_units|stat::new_units_added|Done|INFO: seed corpus)' "$log" || true
    if [ "$status" -ne 0 ]; then
        tail -n 40 "$log" >&2
        echo "fuzz: $target failed (exit $status); the input is in fuzz/artifacts/$target/" >&2
        exit 1
    fi
done
echo "fuzz: ${#targets[@]} targets in $(($(date +%s) - started)) s"
