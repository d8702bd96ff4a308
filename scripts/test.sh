#!/usr/bin/env bash
# The whole test suite, from nothing: set this machine up (packages, dockerd, local base images),
# then run the runtime servers' tests and every Rust test (unit and integration).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

echo "==> set-up"
bash tests/support/setup.sh
command -v cargo >/dev/null || { echo "cargo is needed: install Rust (rustup) first" >&2; exit 1; }

echo "==> runtime servers (node --test, python -m unittest)"
bash runtimes/test.sh

echo "==> benchmark smoke runs (bench/run --smoke and bench/runtimes --smoke, debug build)"
cargo build --quiet
FNBUILD_BENCH_BINARY=debug python3 bench/run --smoke
FNBUILD=target/debug/fnbuild python3 bench/runtimes --smoke

echo "==> cargo test (with tests/e2e_cluster.rs: end to end on a real single-node Kubernetes, tests/cluster/up)"
cargo test --all-targets -- --test-threads 2
