#!/usr/bin/env bash
# Benchmark: pod-to-pod TCP throughput (iperf3), ping RTT and 64-byte UDP
# packet rate through Plexus and through a Linux bridge, between the same
# kind of namespaces, in one run; prints each Plexus/bridge ratio, without
# and with a stateful rule chain (conntrack) on both pods' ports.
#   scripts/bench.sh [seconds per iperf3 run, default 10]
# Needs root. Everything it creates is removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh
ensure_packages protoc:protobuf-compiler /usr/include/google/protobuf/descriptor.proto:libprotobuf-dev iperf3:iperf3 ping:iputils-ping ip:iproute2 curl:curl python3:python3
SECS=${1:-10}
cargo build --release --bin plexus >/dev/null
P=$PWD/target/release/plexus
tag=b$$
work=$(mktemp -d)
cleanup() {
  for ns in "${tag}ka" "${tag}kb" "${tag}sw" "${tag}pa" "${tag}pb"; do ip netns del "$ns" 2>/dev/null || true; done
  ip link del "${tag}ha" 2>/dev/null || true
  ip link del "${tag}hb" 2>/dev/null || true
  [ -n "${serve:-}" ] && kill "$serve" 2>/dev/null && wait "$serve" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

# pods NS_A NS_B: two namespaces at 10.77.0.1 and .2, eth0 ends given as $3/$4 peers.
pod_ns() {
  local ns=$1 addr=$2
  ip -n "$ns" link set lo up; ip -n "$ns" link set eth0 up
  ip -n "$ns" addr add "$addr/24" dev eth0
}

measure() { # A_NS B_NS -> prints "tcp_gbps rtt_ms udp_kpps"
  local a=$1 b=$2
  ip netns exec "$b" iperf3 -s -D -p 5201 --pidfile "$work/iperf-$b.pid"
  sleep 0.5
  ip netns exec "$a" ping -n -c 3 -i 0.2 -W 1 10.77.0.2 >/dev/null
  local tcp rtt udp
  tcp=$(ip netns exec "$a" iperf3 -c 10.77.0.2 -p 5201 -t "$SECS" -J | python3 -c 'import sys,json; print(json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/1e9)')
  rtt=$(ip netns exec "$a" ping -n -c 50 -i 0.02 -q 10.77.0.2 | awk -F/ '/^rtt/ {print $5}')
  udp=$(ip netns exec "$a" iperf3 -c 10.77.0.2 -p 5201 -u -l 64 -b 0 -t "$SECS" -J | python3 -c 'import sys,json; e=json.load(sys.stdin)["end"]["sum"]; print(e["packets"]*(1-e["lost_percent"]/100)/e["seconds"]/1e3)')
  kill "$(cat "$work/iperf-$b.pid")" 2>/dev/null || true
  echo "$tcp $rtt $udp"
}

# --- kernel baseline: two namespaces through a Linux bridge
ip netns add "${tag}ka"; ip netns add "${tag}kb"; ip netns add "${tag}sw"
ip -n "${tag}sw" link add br0 type bridge; ip -n "${tag}sw" link set br0 up
for p in ka kb; do
  ip link add "${tag}${p}h" type veth peer name eth0 netns "${tag}${p}"
  ip link set "${tag}${p}h" netns "${tag}sw"
  ip -n "${tag}sw" link set "${tag}${p}h" master br0 up
done
pod_ns "${tag}ka" 10.77.0.1; pod_ns "${tag}kb" 10.77.0.2
read -r k_tcp k_rtt k_udp < <(measure "${tag}ka" "${tag}kb")

# --- Plexus: the same two namespaces on a Plexus bridge
$P serve --data "$work/data" --listen 127.0.0.1:18499 --host-name "bench-$tag" --no-uplink >"$work/serve.log" 2>&1 &
serve=$!
for _ in $(seq 100); do curl -fs http://127.0.0.1:18499/healthz >/dev/null 2>&1 && break; sleep 0.1; done
export PLEXUS_API=http://127.0.0.1:18499 PLEXUS_TOKEN
PLEXUS_TOKEN=$(cat "$work/data/admin.token")
id() { python3 -c 'import sys,json; print(json.load(sys.stdin)["id"])'; }
host=$($P raw GET /v1/hosts | python3 -c 'import sys,json; print(json.load(sys.stdin)["items"][0]["id"])')
tenant=$($P raw POST /v1/tenants '{"name":"bench"}' | id)
bridge=$($P raw POST /v1/bridges "{\"tenant_id\":\"$tenant\",\"name\":\"b\"}" | id)
ports=()
for p in a b; do
  ns="${tag}p$p"; ip netns add "$ns"
  ip link add "${tag}h$p" type veth peer name eth0 netns "$ns"; ip link set "${tag}h$p" up
  mac=$(ip netns exec "$ns" cat /sys/class/net/eth0/address)
  port=$($P raw POST "/v1/bridges/$bridge/ports" "{\"mac\":\"$mac\"}" | id)
  $P raw PUT "/v1/ports/$port/binding" "{\"host_id\":\"$host\",\"interface_name\":\"${tag}h$p\"}" >/dev/null
  ports+=("$port")
done
pod_ns "${tag}pa" 10.77.0.1; pod_ns "${tag}pb" 10.77.0.2
sleep 1
read -r p_tcp p_rtt p_udp < <(measure "${tag}pa" "${tag}pb")

# --- Plexus with a stateful chain on both ports (every packet tracked)
chain=$($P raw POST /v1/chains "{\"tenant_id\":\"$tenant\",\"name\":\"stateful\"}" | id)
$P raw POST "/v1/chains/$chain/rules" '{"position":1,"action":"accept","conn_state":["established","related"]}' >/dev/null
$P raw POST "/v1/chains/$chain/rules" '{"position":2,"action":"accept","conn_state":["new"]}' >/dev/null
for port in "${ports[@]}"; do
  $P raw PATCH "/v1/ports/$port" "{\"outbound_chain_id\":\"$chain\"}" >/dev/null
done
sleep 1
read -r c_tcp c_rtt c_udp < <(measure "${tag}pa" "${tag}pb")

python3 - "$k_tcp" "$k_rtt" "$k_udp" "$p_tcp" "$p_rtt" "$p_udp" "$c_tcp" "$c_rtt" "$c_udp" <<'PY'
import sys
k_tcp, k_rtt, k_udp, p_tcp, p_rtt, p_udp, c_tcp, c_rtt, c_udp = map(float, sys.argv[1:])
print(f"{'metric':<18}{'linux bridge':>13}{'plexus':>9}{'ratio':>8}{'plexus+conntrack':>18}{'ratio':>8}")
print(f"{'TCP (Gbit/s)':<18}{k_tcp:>13.2f}{p_tcp:>9.2f}{p_tcp/k_tcp:>8.2f}{c_tcp:>18.2f}{c_tcp/k_tcp:>8.2f}")
print(f"{'ping RTT (ms)':<18}{k_rtt:>13.3f}{p_rtt:>9.3f}{p_rtt/k_rtt:>8.2f}{c_rtt:>18.3f}{c_rtt/k_rtt:>8.2f}")
print(f"{'UDP 64B (kpps)':<18}{k_udp:>13.1f}{p_udp:>9.1f}{p_udp/k_udp:>8.2f}{c_udp:>18.1f}{c_udp/k_udp:>8.2f}")
PY
