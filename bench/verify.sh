#!/usr/bin/env bash
# Benchmark: `installer verify ping-mesh` on lab nodes with flannel's host-gw datapath (set up by
# hand: subnet.env + peer routes; `setup --files-only` keeps the agent from starting), at 3 and
# 10 nodes (override with
# NODES="3 10 30"), RUNS repetitions each (default 3); the median wall time and the median of
# each phase are printed. Needs root and a release build (built here). Reproduce:
#   sudo bench/verify.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --locked --release -q
bin=$(realpath "${CARGO_TARGET_DIR:-target}")/release/installer
runs=${RUNS:-3}
name=bench-verify
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
trap '"$bin" lab down --name "$name" >/dev/null 2>&1 || true' EXIT

# host-gw by hand: FLANNEL_SUBNET = the (i+1)-th /24 of CLUSTER_CIDR for node i, routes to every
# peer's subnet via the peer's node address.
hostgw() {
  python3 - "/run/installer-lab/$name/state.json" <<'EOF'
import ipaddress, json, subprocess, sys
lab = json.load(open(sys.argv[1]))
cidr = ipaddress.ip_network(lab["cluster_cidr"])
subnets = list(cidr.subnets(new_prefix=24))[1:len(lab["nodes"]) + 1]
for node, net in zip(lab["nodes"], subnets):
    with open(node["dir"] + "/root/run/flannel/subnet.env", "w") as f:
        f.write(f"FLANNEL_NETWORK={cidr}\nFLANNEL_SUBNET={net[1]}/24\nFLANNEL_MTU=1500\nFLANNEL_IPMASQ=true\n")
for node in lab["nodes"]:
    for peer, net in zip(lab["nodes"], subnets):
        if peer is not node:
            subprocess.run(["ip", "netns", "exec", node["netns"], "ip", "route", "replace",
                            str(net), "via", peer["ip"]], check=True)
EOF
}

printf '%-6s %-8s %-9s %-9s %-9s %-9s %-9s\n' nodes pairs total_s connect_s probes_s ping_s cleanup_s
for n in ${NODES:-3 10}; do
  total=(); connect=(); probes=(); ping=(); cleanup=(); pairs=0
  "$bin" lab up --name "$name" --nodes "$n" >/dev/null
  inv=/run/installer-lab/$name/hosts cache=/run/installer-lab/$name/cache
  "$bin" setup flannel -e FLANNEL_BACKEND=host-gw --files-only -i "$inv" --cache-dir "$cache" >/dev/null 2>&1 \
    || { echo "setup failed at $n nodes" >&2; exit 1; }
  hostgw
  for _ in $(seq "$runs"); do
    out=$(mktemp)
    s=$(date +%s.%N)
    "$bin" verify ping-mesh -e FLANNEL_BACKEND=host-gw -i "$inv" -o json >"$out" \
      || { echo "FAILED at $n nodes:" >&2; cat "$out" >&2; exit 1; }
    e=$(date +%s.%N)
    total+=("$(awk -v s="$s" -v e="$e" 'BEGIN{printf "%.3f\n", e-s}')")
    read -r c p g d pairs < <(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); ph=d["phases"]
print(ph["connect"], ph["probes"], ph["ping"], ph["cleanup"], d["summary"]["pairs"])' "$out")
    connect+=("$c"); probes+=("$p"); ping+=("$g"); cleanup+=("$d")
    rm -f "$out"
  done
  "$bin" lab down --name "$name" >/dev/null
  m() { printf '%s\n' "$@" | median; }
  printf '%-6s %-8s %-9.2f %-9.2f %-9.2f %-9.2f %-9.2f\n' "$n" "$pairs" \
    "$(m "${total[@]}")" "$(m "${connect[@]}")" "$(m "${probes[@]}")" "$(m "${ping[@]}")" "$(m "${cleanup[@]}")"
done
