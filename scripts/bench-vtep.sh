#!/usr/bin/env bash
# Benchmark a standard VTEP's stream into a pod: a kernel vxlan device in
# host A (the sender, 10.78.0.1 on VNI 42, MSS-sized datagrams on the
# underlay as a NIC that segments puts them on the wire) sends TCP to a pod
# in host B, and host B is either the kernel (vxlan device + Linux bridge)
# or Plexus (`plexus serve`, a VTEP port on the pod's bridge), with the
# software GRO on and off (PLEXUS_GRO=off). One run; prints the ratios.
#   scripts/bench-vtep.sh [seconds per iperf3 run, default 10]
# Needs root. Everything it creates is removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh
ensure_packages protoc:protobuf-compiler /usr/include/google/protobuf/descriptor.proto:libprotobuf-dev \
  iperf3:iperf3 ping:iputils-ping ip:iproute2 curl:curl python3:python3
SECS=${1:-10}
cargo build --release --bin plexus >/dev/null
P=$PWD/target/release/plexus
tag=v$$
work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
  for ns in ka kb kp pa pb pp; do ip netns del "${tag}$ns" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
fail() { tail -n 5 "$work"/*.log >&2; exit 1; }

# hosts A B: two namespaces joined by an underlay veth (192.168.100.1/.2);
# A is a kernel VTEP whose underlay carries one segment per packet.
. scripts/bench-lib.sh
hosts() {
  underlay_hosts "$1" "$2"
  ip -n "${tag}$1" link set ul0 gso_max_segs 1
  ip -n "${tag}$1" link add vx42 type vxlan id 42 dstport 4789 remote 192.168.100.2 local 192.168.100.1 dev ul0
  ip -n "${tag}$1" link set vx42 mtu 1450 up
  ip -n "${tag}$1" addr add 10.78.0.1/24 dev vx42
}
# pod HOST POD: a namespace with eth0 (10.78.0.2, MTU 1450), its peer veth in HOST.
pod() {
  ip netns add "${tag}$2"
  ip link add veth netns "${tag}$1" type veth peer name eth0 netns "${tag}$2"
  ip -n "${tag}$2" link set lo up
  ip -n "${tag}$2" link set eth0 mtu 1450 up
  ip -n "${tag}$2" addr add 10.78.0.2/24 dev eth0
  ip -n "${tag}$1" link set veth up
}
tcp() { # SENDER_NS POD_NS -> Gbit/s
  ip netns exec "$2" iperf3 -s -D -p 5201 --pidfile "$work/iperf.pid"
  sleep 0.5
  for _ in $(seq 50); do ip netns exec "$1" ping -n -c 1 -W 0.2 10.78.0.2 >/dev/null 2>&1 && break; done
  ip netns exec "$1" iperf3 -c 10.78.0.2 -p 5201 -t "$SECS" -J |
    python3 -c 'import sys,json; print(json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/1e9)'
  kill "$(cat "$work/iperf.pid")" 2>/dev/null || true
  sleep 0.5
}

# --- kernel baseline: host B has a vxlan device and a Linux bridge
hosts ka kb
pod kb kp
ip -n "${tag}kb" link add vx42 type vxlan id 42 dstport 4789 remote 192.168.100.1 local 192.168.100.2 dev ul0
ip -n "${tag}kb" link add br0 type bridge
ip -n "${tag}kb" link set vx42 master br0 up
ip -n "${tag}kb" link set veth master br0
ip -n "${tag}kb" link set br0 up
k_tcp=$(tcp "${tag}ka" "${tag}kp")

# --- Plexus in host B: the pod and a VTEP port on one bridge
hosts pa pb
pod pb pp
serve_pid=
serve() { # [ENV=VALUE...]: (re)starts the node on the same data
  if [ -n "$serve_pid" ]; then kill "$serve_pid"; wait "$serve_pid" 2>/dev/null || true; fi
  ip netns exec "${tag}pb" env "$@" "$P" serve --data "$work/data" --listen 127.0.0.1:18498 \
    --host-name "bench-$tag" --no-uplink --tunnel-ip 192.168.100.2 >>"$work/serve.log" 2>&1 &
  serve_pid=$!
  pids+=("$serve_pid")
  for _ in $(seq 100); do ip netns exec "${tag}pb" curl -fs http://127.0.0.1:18498/healthz >/dev/null 2>&1 && break; sleep 0.1; done
}
serve PLEXUS_GRO=on
token=$(cat "$work/data/admin.token")
api() { ip netns exec "${tag}pb" env PLEXUS_API=http://127.0.0.1:18498 PLEXUS_TOKEN="$token" "$P" raw "$@"; }
id() { python3 -c 'import sys,json; print(json.load(sys.stdin)["id"])'; }
host=$(api GET /v1/hosts | python3 -c 'import sys,json; print(json.load(sys.stdin)["items"][0]["id"])')
tenant=$(api POST /v1/tenants '{"name":"bench"}' | id)
bridge=$(api POST /v1/bridges "{\"tenant_id\":\"$tenant\",\"name\":\"b\"}" | id)
mac=$(ip netns exec "${tag}pp" cat /sys/class/net/eth0/address)
port=$(api POST "/v1/bridges/$bridge/ports" "{\"mac\":\"$mac\"}" | id)
api PUT "/v1/ports/$port/binding" "{\"host_id\":\"$host\",\"interface_name\":\"veth\"}" >/dev/null
vtep=$(api POST "/v1/bridges/$bridge/ports" '{"vtep":{"vni":42,"remote_ip":"192.168.100.1"}}' | id)
api PUT "/v1/ports/$vtep/binding" "{\"host_id\":\"$host\",\"interface_name\":\"vtep42\"}" >/dev/null
sleep 1
p_tcp=$(tcp "${tag}pa" "${tag}pp")
merged=$(ip netns exec "${tag}pb" curl -fs -H "Authorization: Bearer $token" http://127.0.0.1:18498/metrics |
  awk '/^plexus_tcp_segments_merged_total/ {print $2}' || true)
serve PLEXUS_GRO=off
p_off_tcp=$(tcp "${tag}pa" "${tag}pp")

python3 - "$k_tcp" "$p_tcp" "$p_off_tcp" "${merged:-0}" <<'PY'
import sys
k, p, off = map(float, sys.argv[1:4])
print("TCP from a kernel VTEP (MSS-sized datagrams) into a pod, Gbit/s")
print(f"{'receiving host':<34}{'Gbit/s':>8}{'ratio':>8}")
print(f"{'kernel vxlan + Linux bridge':<34}{k:>8.2f}{1:>8.2f}")
print(f"{'Plexus (software GRO)':<34}{p:>8.2f}{p / k:>8.2f}   segments merged: {sys.argv[4]}")
print(f"{'Plexus, PLEXUS_GRO=off':<34}{off:>8.2f}{off / k:>8.2f}")
PY
