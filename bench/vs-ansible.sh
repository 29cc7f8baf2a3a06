#!/usr/bin/env bash
# Benchmark: `installer setup flannel` against Ansible doing the same host-side work
# (bench/ansible/flannel.yml) on the same lab hosts.
#
#   sudo bench/vs-ansible.sh                  # the full run: 3, 10 and 30 nodes, 5 runs each
#   sudo RUNS=1 SIZES=3 bench/vs-ansible.sh   # a quick check
#
# What it does, as root on a Debian machine:
#   1. installs the lab's packages (scripts/install-deps --lab), builds the release binary, and
#      creates bench/.venv with ansible-core $ANSIBLE_VERSION (default 2.14.4) from PyPI;
#   2. per lab size: `installer lab up`, fetches the CNI tarball into the lab's cache and
#      extracts its plugins once for Ansible (downloads are never timed);
#   3. RUNS times, rotating which tool goes first: for each of Ansible (forks 5, kubeasz's
#      ansible.cfg choices), installer (its default forks) and installer --forks 5: clean the
#      nodes (a kubeasz 10-default.conf put back, nothing of ours left), time the first run,
#      then time a no-change re-run. Every re-run must report changed=0 on every host, every
#      first run must change every host, and (in the first round of each size) each tool's
#      result is checked with the other tool in check mode: nothing may be left to change;
#   4. prints a Markdown table: median (min-max) seconds and the Ansible/installer ratio.
# Every run of Ansible starts with no SSH control master open (each tool starts cold).
# Both tools get FLANNEL_DATASTORE=kubernetes (kubeasz's default), so both also render the
# cluster manifest once on the deploy host; installer runs with --files-only (the lab has no
# API server to apply it to, and the Ansible playbook does not apply it either).
#
# Environment: RUNS (default 5), SIZES (default "3 10 30"), ANSIBLE_VERSION (2.14.4),
# LAB_NAME (vsans). Logs and raw samples: bench/.work/ (samples.tsv, results.md, logs/).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
runs=${RUNS:-5}
sizes=${SIZES:-3 10 30}
ansible_version=${ANSIBLE_VERSION:-2.14.4}
lab=${LAB_NAME:-vsans}
work=$root/bench/.work
venv=$root/bench/.venv
say() { printf '%s\n' "$*" >&2; }
die() { say "vs-ansible: $*"; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (the lab needs it): sudo bench/vs-ansible.sh"
[[ "$runs" =~ ^[1-9][0-9]*$ ]] || die "RUNS must be a positive number, got '$runs'"
for n in $sizes; do [[ "$n" =~ ^[1-9][0-9]*$ ]] || die "SIZES must be numbers, got '$n'"; done

# --- 1. dependencies, build, Ansible ----------------------------------------------------------
scripts/install-deps --lab
export PATH="$HOME/.cargo/bin:$PATH"
say "== building the release binary"
cargo build --locked --release -q
built=$(realpath "${CARGO_TARGET_DIR:-target}")/release/installer
[ -x "$built" ] || die "no release binary at $built"
[ -x "${built}-node" ] || die "no node build at ${built}-node"

python=$(command -v /usr/bin/python3 python3 | head -n1) || die "python3 is missing (apt-get install python3)"
ansible_has() { # the venv's ansible-core is the wanted version (read fully: grep -q would break the pipe)
  local v
  v=$("$venv/bin/ansible-playbook" --version 2>/dev/null) || return 1
  [[ "$v" == *"core $ansible_version]"* ]]
}
if ! ansible_has; then
  if ! "$python" -c 'import ensurepip, venv' 2>/dev/null; then
    say "== installing python3-venv"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
  fi
  say "== creating $venv with ansible-core $ansible_version"
  rm -rf "$venv"
  "$python" -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check "ansible-core==$ansible_version"
fi
ansible_has || die "$venv does not run ansible-core $ansible_version"

for f in "$HOME/.ansible.cfg" /etc/ansible/ansible.cfg; do
  [ -e "$f" ] && say "vs-ansible: warning: $f exists; installer reads its forks/host key settings"
done

rm -rf "$work"
mkdir -p "$work/logs"
# A private copy: a rebuild of the target directory during the run cannot change what is pushed.
# installer pushes the node build next to it (installer-node); Ansible is given the same file.
bin=$work/installer
cp "$built" "$bin"
node_bin=$work/installer-node
cp "${built}-node" "$node_bin"
cp_dir=$(mktemp -d /tmp/vs-ansible-cp.XXXXXX)   # Ansible's ControlPath sockets (short path)
samples=$work/samples.tsv
printf 'nodes\ttool\tphase\trun\tseconds\tload1\n' >"$samples"

lab_state=""
close_masters() {
  local s
  for s in "$cp_dir"/*; do
    [ -S "$s" ] && ssh -O exit -o ControlPath="$s" lab-node >/dev/null 2>&1 || true
  done
}
cleanup() {
  close_masters
  rm -rf "$cp_dir"
  [ -n "$lab_state" ] && "$bin" lab down --name "$lab" >/dev/null 2>&1 || true
}
trap cleanup EXIT

# --- helpers ----------------------------------------------------------------------------------
ansible_env=(env ANSIBLE_CONFIG="$root/bench/ansible/ansible.cfg" ANSIBLE_SSH_CONTROL_PATH_DIR="$cp_dir"
             ANSIBLE_NOCOLOR=1)
# installer must not pick up the benchmark's ansible.cfg (forks = 5): unset ANSIBLE_CONFIG.
installer_env=(env -u ANSIBLE_CONFIG)
extra=(-e FLANNEL_DATASTORE=kubernetes)

# The command of a tool; "check" gives its check mode (changes nothing, reports what would change).
tool_cmd() {
  local tool=$1 mode=${2:-}
  case $tool in
    ansible)
      cmd=("${ansible_env[@]}" "$venv/bin/ansible-playbook" -i "$inv" "$root/bench/ansible/flannel.yml"
           -e "bench_plugin_dir=$plugins" -e "bench_node_binary=$node_bin" "${extra[@]}")
      [ "$mode" = check ] && cmd+=(--check) ;;
    installer|installer-f5)
      cmd=("${installer_env[@]}" "$bin" setup flannel --files-only -i "$inv" --cache-dir "$cache" "${extra[@]}")
      [ "$tool" = installer-f5 ] && cmd+=(--forks 5)
      [ "$mode" = check ] && cmd+=(--check) ;;
  esac
  return 0
}

# Put every node back to "before the network step": none of our files, kubeasz's
# 10-default.conf present; and no manifest on the deploy host.
clean_nodes() {
  local n
  for n in "$lab_state"/nodes/*/root; do
    rm -rf "$n"/opt/kube/* "$n"/etc/cni/net.d "$n"/etc/kube-flannel/* \
           "$n"/etc/systemd/system/flannel-agent.service
    mkdir -p "$n"/etc/cni/net.d
    printf '%s\n' '{"cniVersion":"0.3.1","name":"mynet","type":"bridge","bridge":"mynet0"}' \
      >"$n"/etc/cni/net.d/10-default.conf
  done
  rm -f "$manifest"
}

# The host lines of a PLAY RECAP (same shape for Ansible and installer).
recap_lines() { grep -E '^198\.18\.[0-9.]+ +: ok=' "$1" || true; }

# Check a log's recap: one line per lab node, nothing failed or unreachable, and every host
# changed (want=changed) or no host changed (want=unchanged).
check_recap() {
  local log=$1 want=$2 lines count
  lines=$(recap_lines "$log")
  count=$(printf '%s' "$lines" | grep -c . || true)
  [ "$count" = "$nodes" ] || die "$log: recap has $count hosts, expected $nodes"
  printf '%s\n' "$lines" | grep -qvE 'unreachable=0[[:space:]].*failed=0([[:space:]]|$)' \
    && die "$log: a host failed or was unreachable"
  case $want in
    changed) printf '%s\n' "$lines" | grep -q 'changed=0[[:space:]]' && die "$log: a host did not change on a first run" ;;
    unchanged) printf '%s\n' "$lines" | grep -qv 'changed=0[[:space:]]' && die "$log: a host changed on a re-run / check" ;;
  esac
  return 0
}

# Run a tool once, timed (wall clock of the whole command), and record the sample.
timed_run() {
  local tool=$1 phase=$2 run=$3 log s e secs load rc=0
  log=$work/logs/$nodes-$tool-$phase-$run.log
  tool_cmd "$tool"
  [ "$tool" = ansible ] && close_masters
  load=$(cut -d' ' -f1 /proc/loadavg)
  s=$(date +%s.%N)
  "${cmd[@]}" >"$log" 2>&1 || rc=$?
  e=$(date +%s.%N)
  [ "$rc" = 0 ] || { tail -n 30 "$log" >&2; die "$tool $phase run failed (exit $rc); log: $log"; }
  check_recap "$log" "$([ "$phase" = first ] && echo changed || echo unchanged)"
  secs=$(awk -v s="$s" -v e="$e" 'BEGIN { printf "%.3f", e - s }')
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$nodes" "$tool" "$phase" "$run" "$secs" "$load" >>"$samples"
  printf ' %s %s %ss' "$tool" "$phase" "$secs" >&2
}

# The other tool in check mode must find nothing to change: both wrote the same state.
cross_check() {
  local made_by=$1 checker=$2 log
  log=$work/logs/$nodes-check-$checker-after-$made_by.log
  tool_cmd "$checker" check
  "${cmd[@]}" >"$log" 2>&1 || { tail -n 30 "$log" >&2; die "$checker --check failed; log: $log"; }
  check_recap "$log" unchanged
  printf ' [%s --check after %s: nothing to change]' "$checker" "$made_by" >&2
}

# --- 2./3. every lab size ---------------------------------------------------------------------
tools=(ansible installer installer-f5)
loads=()
started=$(date +%s)
for nodes in $sizes; do
  say "== $nodes nodes: lab up"
  "$bin" lab down --name "$lab" >/dev/null 2>&1 || true
  lab_state=pending   # from here on, the exit trap takes the lab down
  up=$("$bin" lab up --name "$lab" --nodes "$nodes")
  inv=$(printf '%s\n' "$up" | awk '$1 == "inventory:" { print $2 }')
  [ -f "$inv" ] || die "lab up printed no inventory path:"$'\n'"$up"
  lab_state=$(dirname "$inv")
  [ -d "$lab_state/nodes" ] || die "no node views under $lab_state"
  cache=$lab_state/cache
  plugins=$lab_state/bench-plugins
  first_host=$(awk '/^\[kube_node\]/ { f = 1; next } /^\[/ { f = 0 } f && NF && !/^#/ { print $1; exit }' "$inv")
  cluster_dir=$("$bin" vars -i "$inv" --host "$first_host" cluster_dir -o json "${extra[@]}" \
                | "$venv/bin/python" -c 'import json, sys; print(json.load(sys.stdin)["cluster_dir"]["value"])')
  manifest=$cluster_dir/yml/flannel.yaml
  "$bin" fetch -i "$inv" --cache-dir "$cache" >/dev/null
  mkdir -p "$plugins"
  tar -xzf "$cache"/*.tgz -C "$plugins"
  for p in bridge host-local loopback portmap; do
    [ -x "$plugins/$p" ] || die "the CNI tarball in $cache has no $p"
  done
  loads+=("$nodes nodes: $(cut -d' ' -f1-3 /proc/loadavg)")
  for run in $(seq "$runs"); do
    printf '  run %s/%s:' "$run" "$runs" >&2
    shift_by=$(( (run - 1) % ${#tools[@]} ))
    order=("${tools[@]:shift_by}" "${tools[@]:0:shift_by}")
    for tool in "${order[@]}"; do
      clean_nodes
      timed_run "$tool" first "$run"
      timed_run "$tool" rerun "$run"
      if [ "$run" = 1 ] && [ "$tool" != installer-f5 ]; then
        # installer's check is cheap everywhere; Ansible's only at the first size.
        if [ "$tool" = ansible ]; then cross_check ansible installer
        elif [ "$nodes" = "${sizes%% *}" ]; then cross_check installer ansible; fi
      fi
    done
    say ""
  done
  close_masters
  "$bin" lab down --name "$lab" >/dev/null
  lab_state=""
done
elapsed=$(( $(date +%s) - started ))

# --- 4. the table -----------------------------------------------------------------------------
stats() { # nodes tool phase -> "median min max"
  awk -F'\t' -v n="$1" -v t="$2" -v p="$3" '$1 == n && $2 == t && $3 == p { print $5 }' "$samples" \
    | sort -g | awk '{ a[NR] = $1 } END { if (!NR) exit 1
        m = (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2
        printf "%.3f %.3f %.3f\n", m, a[1], a[NR] }'
}
cell() { awk -v m="$1" -v lo="$2" -v hi="$3" 'BEGIN { printf "%.2f s (%.2f–%.2f)", m, lo, hi }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f×", a / b }'; }
{
  printf '| nodes | run | Ansible %s, forks 5 | installer (forks 50) | Ansible ÷ installer | installer --forks 5 | Ansible ÷ installer -f5 |\n' "$ansible_version"
  printf '|---:|---|---:|---:|---:|---:|---:|\n'
  for nodes in $sizes; do
    for phase in first rerun; do
      read -r am alo ahi < <(stats "$nodes" ansible "$phase")
      read -r im ilo ihi < <(stats "$nodes" installer "$phase")
      read -r fm flo fhi < <(stats "$nodes" installer-f5 "$phase")
      printf '| %s | %s | %s | %s | **%s** | %s | %s |\n' "$nodes" \
        "$([ "$phase" = first ] && echo first || echo 're-run, no change')" \
        "$(cell "$am" "$alo" "$ahi")" "$(cell "$im" "$ilo" "$ihi")" "$(ratio "$am" "$im")" \
        "$(cell "$fm" "$flo" "$fhi")" "$(ratio "$am" "$fm")"
    done
  done
  printf '\nMedian of %s runs per cell, (min–max) in brackets; wall clock of the whole command.\n' "$runs"
  printf '\n- date: %s\n' "$(date -u '+%Y-%m-%d %H:%M UTC')"
  printf -- '- machine: %s, %s CPUs, %s GiB RAM, kernel %s, %s\n' \
    "$(lscpu 2>/dev/null | awk -F: '/Model name/ { gsub(/^ +/, "", $2); print $2; exit }')" "$(nproc)" \
    "$(awk '/MemTotal/ { printf "%d", $2 / 1048576 }' /proc/meminfo)" "$(uname -r)" \
    "$(. /etc/os-release && echo "$PRETTY_NAME")"
  printf -- '- 1-min load average at the start of each timed run: %s\n' \
    "$(awk -F'\t' 'NR > 1 { print $6 }' "$samples" | sort -g | awk '{ a[NR] = $1 } END {
        printf "median %s (min %s, max %s)", a[int((NR + 1) / 2)], a[1], a[NR] }')"
  printf -- '- load average (1/5/15 min) when each size started: %s; at the end: %s\n' \
    "$(IFS=';'; echo "${loads[*]}" | sed 's/;/; /g')" "$(cut -d' ' -f1-3 /proc/loadavg)"
  printf -- '- installer %s (commit %s, %s bytes), ansible-core %s on Python %s, %s\n' \
    "$("$bin" --version 2>/dev/null | awk '{ print $NF }')" "$(git rev-parse --short HEAD 2>/dev/null || echo '?')" \
    "$(stat -c %s "$bin")" "$ansible_version" "$("$venv/bin/python" -c 'import platform; print(platform.python_version())')" \
    "$(ssh -V 2>&1 | cut -d, -f1)"
  printf -- '- total benchmark time: %dm%02ds\n' $((elapsed / 60)) $((elapsed % 60))
} >"$work/results.md"
cat "$work/results.md"
say "raw samples: $samples; logs: $work/logs"
