#!/usr/bin/env bash
# Benchmark: `installer setup flannel` on lab nodes, first run (fresh lab) and no-change re-run,
# at 3 and 10 nodes (override with NODES="3 10 30"), RUNS repetitions each (default 3), median
# printed. Needs root and a release build (built here). Reproduce: sudo bench/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --locked --release -q
bin=$(realpath "${CARGO_TARGET_DIR:-target}")/release/installer
runs=${RUNS:-3}
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
secs() { local s e; s=$(date +%s.%N); "$@" >/dev/null 2>&1 || { echo "FAILED: $*" >&2; exit 1; }; e=$(date +%s.%N); awk -v s="$s" -v e="$e" 'BEGIN{printf "%.3f\n", e-s}'; }
printf '%-6s %-12s %-12s\n' nodes first_s rerun_s
sizes=(${NODES:-3 10}) firsts=() reruns=()
for n in "${sizes[@]}"; do
  first=(); rerun=()
  for _ in $(seq "$runs"); do
    "$bin" lab up --name bench --nodes "$n" >/dev/null
    inv=/run/installer-lab/bench/hosts cache=/run/installer-lab/bench/cache
    "$bin" fetch -i "$inv" --cache-dir "$cache" >/dev/null   # download outside the timing
    first+=("$(secs "$bin" setup flannel -i "$inv" --cache-dir "$cache")")
    rerun+=("$(secs "$bin" setup flannel -i "$inv" --cache-dir "$cache")")
    "$bin" lab down --name bench >/dev/null
  done
  f=$(printf '%s\n' "${first[@]}" | median) r=$(printf '%s\n' "${rerun[@]}" | median)
  firsts+=("$f") reruns+=("$r")
  printf '%-6s %-12.2f %-12.2f\n' "$n" "$f" "$r"
done
# Scaling: the largest size against the smallest (target: 30 nodes within 2x of 3 nodes).
if ((${#sizes[@]} > 1)); then
  last=$((${#sizes[@]} - 1))
  awk -v a="${sizes[0]}" -v b="${sizes[$last]}" -v f0="${firsts[0]}" -v f1="${firsts[$last]}" \
      -v r0="${reruns[0]}" -v r1="${reruns[$last]}" \
      'BEGIN {printf "scaling %s -> %s nodes: first run x%.2f, re-run x%.2f\n", a, b, f1/f0, r1/r0}'
fi
