#!/usr/bin/env bash
# Benchmark: `installer render --dry-run` and `installer inventory --list` on a generated kubeasz
# inventory of HOSTS hosts (default 300: 3 masters, 297 nodes, 3 etcd), RUNS times (default 10),
# median wall time printed. No root, no lab. Reproduce: bench/render.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
# BIN=path uses that binary instead of building the release one.
if [ -z "${BIN:-}" ]; then cargo build --locked --release -q; fi
bin=${BIN:-$(realpath "${CARGO_TARGET_DIR:-target}")/release/installer}
hosts=${HOSTS:-300} runs=${RUNS:-10}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
inv=$work/hosts
{
  echo "[etcd]"
  for i in 1 2 3; do echo "10.1.0.$i NODE_NAME=etcd$i"; done
  echo; echo "[kube_master]"
  for i in 1 2 3; do echo "10.1.0.$i k8s_nodename=master-$i"; done
  echo; echo "[kube_node]"
  for ((i = 4; i <= hosts; i++)); do echo "10.1.$((i / 250)).$((i % 250 + 1)) k8s_nodename=node-$i"; done
  cat <<'VARS'

[all:vars]
CLUSTER_NETWORK="flannel"
CLUSTER_CIDR="172.20.0.0/16"
SERVICE_CIDR="10.68.0.0/16"
NODE_CIDR_LEN=24
bin_dir="/opt/kube/bin"
base_dir="/etc/kubeasz"
cluster_dir="{{ base_dir }}/clusters/bench"
VARS
} >"$inv"
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
ms() { local s e; s=$(date +%s%N); "$@" >/dev/null || { echo "FAILED: $*" >&2; exit 1; }; e=$(date +%s%N); echo $(((e - s) / 1000)) | awk '{printf "%.1f\n", $1/1000}'; }
outputs=$("$bin" render --dry-run -i "$inv" | grep -c '^# ==> ')
for what in "inventory --list" "render --dry-run"; do
  samples=()
  for _ in $(seq "$runs"); do
    # shellcheck disable=SC2086
    samples+=("$(ms "$bin" $what -i "$inv")")
  done
  printf '%-18s %4d hosts  median %8.1f ms  (%d runs%s)\n' "$what" "$hosts" \
    "$(printf '%s\n' "${samples[@]}" | median)" "$runs" \
    "$([ "$what" = "render --dry-run" ] && echo ", $outputs outputs")"
done
