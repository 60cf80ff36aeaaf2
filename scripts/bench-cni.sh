#!/usr/bin/env bash
# Benchmark: CNI ADD latency of plexus-cni beside the reference bridge +
# host-local plugins (containernetworking-plugins), in one run: p50/p99 of
# 100 sequential ADDs each, then the wall time of 100 parallel ADDs (and
# the DELs after each). The reference plugins run inside a scratch "node"
# namespace so their bridge and sysctls stay out of the host's.
#   scripts/bench-cni.sh [count, default 100]
# Needs root. Everything it creates is removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh
ensure_packages protoc:protobuf-compiler /usr/include/google/protobuf/descriptor.proto:libprotobuf-dev \
  /usr/lib/cni/bridge:containernetworking-plugins ip:iproute2 curl:curl python3:python3
N=${1:-100}
cargo build --release --bin plexus --bin plexus-cni >/dev/null
P=$PWD/target/release/plexus
CNI=$PWD/target/release/plexus-cni
tag=c$$
work=$(mktemp -d)
cleanup() {
  for ns in $(ip netns list | awk '{print $1}' | grep "^${tag}" || true); do ip netns del "$ns" 2>/dev/null || true; done
  for link in $(ip -o link show | awk -F': ' '{print $2}' | cut -d@ -f1 | grep '^plx' || true); do
    case "$(cat "/sys/class/net/$link/ifalias" 2>/dev/null)" in cni:${tag}*) ip link del "$link" 2>/dev/null || true ;; esac
  done
  [ -n "${serve:-}" ] && kill "$serve" 2>/dev/null && wait "$serve" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

sandboxes() { # PREFIX: N+1 container namespaces (0..N-1 and the warm-up "w")
  for i in $(seq 0 $((N - 1))) w; do ip netns add "$1$i"; done
}
drop_sandboxes() {
  for i in $(seq 0 $((N - 1))) w; do ip netns del "$1$i" 2>/dev/null || true; done
}

# --- reference: bridge + host-local inside the node namespace
ip netns add "${tag}node"
cat >"$work/bridge.json" <<JSON
{"cniVersion":"1.0.0","name":"${tag}ref","type":"bridge","bridge":"cni0","isGateway":true,
 "ipam":{"type":"host-local","subnet":"10.99.0.0/16","dataDir":"$work/host-local"}}
JSON
sandboxes "${tag}r"
read -r ref_p50 ref_p99 ref_del < <(python3 scripts/bench-cni.py /usr/lib/cni/bridge "$work/bridge.json" "${tag}node" "${tag}r" "$N" seq)
read -r ref_par ref_par_del < <(python3 scripts/bench-cni.py /usr/lib/cni/bridge "$work/bridge.json" "${tag}node" "${tag}r" "$N" par)
drop_sandboxes "${tag}r"

# --- plexus-cni against plexus serve (embedded store, agent in-process)
$P serve --data "$work/data" --listen 127.0.0.1:18498 --host-name "bench-$tag" --no-uplink >"$work/serve.log" 2>&1 &
serve=$!
for _ in $(seq 100); do curl -fs http://127.0.0.1:18498/healthz >/dev/null 2>&1 && break; sleep 0.1; done
cat >"$work/plexus.json" <<JSON
{"cniVersion":"1.1.0","name":"${tag}","type":"plexus-cni","api":"http://127.0.0.1:18498",
 "token_file":"$work/data/admin.token","host":"bench-$tag","tenant":"bench"}
JSON
sandboxes "${tag}p"
read -r px_p50 px_p99 px_del < <(python3 scripts/bench-cni.py "$CNI" "$work/plexus.json" - "${tag}p" "$N" seq)
read -r px_par px_par_del < <(python3 scripts/bench-cni.py "$CNI" "$work/plexus.json" - "${tag}p" "$N" par)
drop_sandboxes "${tag}p"

printf '\n%-26s %10s %10s %14s %16s %16s\n' "$N ADDs" "p50 ms" "p99 ms" "seq DELs s" "parallel ADD s" "parallel DEL s"
printf '%-26s %10s %10s %14s %16s %16s\n' "bridge + host-local" "$ref_p50" "$ref_p99" "$ref_del" "$ref_par" "$ref_par_del"
printf '%-26s %10s %10s %14s %16s %16s\n' "plexus-cni" "$px_p50" "$px_p99" "$px_del" "$px_par" "$px_par_del"
