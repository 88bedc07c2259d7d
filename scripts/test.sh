#!/usr/bin/env bash
# Runs every check and test of the workspace, installing what it needs first.
# This is the README's test command and what CI runs (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\n==> %s\n' "$*"; }

# Rust toolchain: the machine's rustup toolchain; components if missing.
if ! command -v cargo >/dev/null 2>&1; then
    echo "cargo not found: install Rust (https://rustup.rs) first" >&2
    exit 1
fi
if command -v rustup >/dev/null 2>&1; then
    rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt
    rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy
fi

say "format"
cargo fmt --all -- --check

say "lint"
cargo clippy --workspace --all-targets --locked -- -D warnings

say "tests"
cargo test --workspace --locked

say "benchmarks compile and run once"
cargo bench --locked -p dr-benches --bench decision_engine -- --test

say "main job: the paper's scenarios"
cargo run --locked --release -q -p drctl -- simulate examples/seed-scenarios.toml --human | tail -n 1
