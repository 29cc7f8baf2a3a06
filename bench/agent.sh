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
bins=(--bin installer --bin installer-node)
if [ "$profile" = release ]; then cargo build --release "${bins[@]}"; else cargo build "${bins[@]}"; fi
# a private copy: a concurrent build must not replace the binaries under test; setup pushes the
# node build (installer-node, next to installer) to the nodes
bin="$(mktemp -d)/installer"
cp "$target/$profile/installer" "$bin"
cp "$target/$profile/installer-node" "$(dirname "$bin")/installer-node"
trap 'rm -rf "$(dirname "$bin")"' EXIT
INSTALLER_TEST_NODE_BIN="$(dirname "$bin")/installer-node" cargo test --test agent_lab_root -- --ignored --nocapture agent_bench_root 2>&1 \
  | grep -E '^agent bench|^  |test result'
