#!/usr/bin/env bash
# Embedded agent figures on a 3-node lab: peak RSS (VmHWM), start -> subnet.env, and a joining
# node's start -> its route on both peers (p50/p99 over joins). Needs root and the lab packages
# (scripts/install-deps --lab). Usage: bench/agent.sh [--debug] [JOINS]. Also prints where agent 1's
# memory is (binary pages, other files, heap, stacks, threads); AGENT_BENCH_SMAPS=FILE keeps its smaps.
set -euo pipefail
cd "$(dirname "$0")/.."
profile=release
if [ "${1:-}" = "--debug" ]; then profile=debug; shift; fi
export AGENT_BENCH_JOINS="${1:-10}"
target="${CARGO_TARGET_DIR:-target}"
if [ "$profile" = release ]; then cargo build --release --bin installer; else cargo build --bin installer; fi
# a private copy: a concurrent build must not replace the binary under test
bin="$(mktemp -d)/installer"
cp "$target/$profile/installer" "$bin"
trap 'rm -rf "$(dirname "$bin")"' EXIT
INSTALLER_TEST_BIN="$bin" cargo test --test agent_lab_root -- --ignored --nocapture agent_bench_root 2>&1 \
  | grep -E '^agent bench|^  |test result'
