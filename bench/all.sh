#!/usr/bin/env bash
# Every benchmark of docs/benchmarks.md from one command, on a fresh Debian machine, as root:
#   sudo bench/all.sh              # 3, 10 and 30 lab nodes; 5 runs against Ansible
#   sudo QUICK=1 bench/all.sh      # 3 nodes, 1 run each: checks that everything works (minutes)
# It installs what it needs (scripts/install-deps --lab; ansible-core in bench/.venv via
# vs-ansible.sh), builds the release binaries (installer, installer-node), runs each bench script in turn on an otherwise idle
# machine, and writes every output plus the machine's description to bench/.work/all/ and the
# summary to bench/.work/all/summary.md.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
if [ "$(id -u)" != 0 ]; then echo "bench/all.sh: run as root (the lab needs network namespaces)" >&2; exit 1; fi
scripts/install-deps --lab
cargo build --locked --release -q
bin=$(realpath "${CARGO_TARGET_DIR:-target}")/release/installer
out=bench/.work/all
mkdir -p "$out"
if [ -n "${QUICK:-}" ]; then sizes="3" runs=1; else sizes="3 10 30" runs=5; fi

{
  echo "date: $(date -u +%Y-%m-%dT%H:%MZ)"
  echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  echo "cpu: $(nproc) × $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)"
  echo "memory: $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
  echo "kernel: $(uname -r); $(. /etc/os-release && echo "$PRETTY_NAME")"
  echo "load at start: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "installer: $(stat -c %s "$bin") bytes; node binary (installer-node): $(stat -c %s "${bin}-node") bytes (release, stripped)"
} | tee "$out/machine.txt" bench/.machine.txt

step() {
  local name=$1; shift
  echo "== $name: $*"
  local s e
  s=$(date +%s)
  local status=ok
  mkdir -p "$out"   # vs-ansible.sh renews bench/.work
  "$@" 2>&1 | tee "$out/$name.txt" || status=FAILED
  e=$(date +%s)
  echo "   ($name: $status, $((e - s)) s)"
}
step vs-ansible env SIZES="$sizes" RUNS="$runs" bench/vs-ansible.sh
step agent bench/agent.sh 20
step render env RUNS=10 bench/render.sh
step setup env NODES="$sizes" RUNS=3 bench/setup.sh
step verify env NODES="$sizes" RUNS=3 bench/verify.sh

mkdir -p "$out"
cp bench/.machine.txt "$out/machine.txt" 2>/dev/null || true
{
  echo "# Benchmark run"
  echo
  sed 's/^/    /' "$out/machine.txt"
  for f in render agent setup verify; do
    echo; echo "## $f"; echo; sed 's/^/    /' "$out/$f.txt"
  done
  echo; echo "## vs-ansible"; echo
  if [ -f bench/.work/results.md ]; then cat bench/.work/results.md; else sed 's/^/    /' "$out/vs-ansible.txt"; fi
} >"$out/summary.md"
echo "summary: $out/summary.md"
