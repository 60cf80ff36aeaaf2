#!/usr/bin/env bash
# Benchmark: new TCP connections per second and p99 connect latency from a
# client pod through a VIP with 3 members, beside the same client connecting
# straight to a member over the same router, in one run; prints the ratios.
#   scripts/bench-lb.sh [connections per path, default 3000]
# Needs root (or sudo). Everything it creates is removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh
ensure_packages protoc:protobuf-compiler /usr/include/google/protobuf/descriptor.proto:libprotobuf-dev ip:iproute2 curl:curl python3:python3
N=${1:-3000}
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
cargo build --release --bin plexus >/dev/null
P=$PWD/target/release/plexus
tag=l$$
work=$(mktemp -d)
pods=(c m1 m2 m3)
cleanup() {
  for p in "${pods[@]}"; do $SUDO ip netns del "${tag}$p" 2>/dev/null || true; done
  for p in "${pods[@]}"; do $SUDO ip link del "${tag}$p" 2>/dev/null || true; done
  [ -n "${servers:-}" ] && $SUDO kill $servers 2>/dev/null
  [ -n "${serve:-}" ] && $SUDO kill "$serve" 2>/dev/null && wait "$serve" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

$SUDO "$P" serve --data "$work/data" --listen 127.0.0.1:18498 --host-name "bench-$tag" --no-uplink >"$work/serve.log" 2>&1 &
serve=$!
for _ in $(seq 100); do curl -fs http://127.0.0.1:18498/healthz >/dev/null 2>&1 && break; sleep 0.1; done
export PLEXUS_API=http://127.0.0.1:18498 PLEXUS_TOKEN
PLEXUS_TOKEN=$($SUDO cat "$work/data/admin.token")
id() { python3 -c 'import sys,json; print(json.load(sys.stdin)["id"])'; }
host=$($P raw GET /v1/hosts | python3 -c 'import sys,json; print(json.load(sys.stdin)["items"][0]["id"])')
tenant=$($P raw POST /v1/tenants '{"name":"bench-lb"}' | id)
router=$($P raw POST /v1/routers "{\"tenant_id\":\"$tenant\",\"name\":\"r\"}" | id)
# Clients on 10.77.0.0/24, members on 10.77.1.0/24: both paths cross the router.
for net in 0 1; do
  bridge=$($P raw POST /v1/bridges "{\"tenant_id\":\"$tenant\",\"name\":\"n$net\"}" | id)
  rport=$($P raw POST "/v1/routers/$router/ports" "{\"address\":\"10.77.$net.1/24\"}" | id)
  bport=$($P raw POST "/v1/bridges/$bridge/ports" '{}' | id)
  $P raw PUT "/v1/ports/$rport/link" "{\"peer_id\":\"$bport\"}" >/dev/null
  eval "bridge$net=$bridge"
done
pod() { # NAME BRIDGE ADDRESS GATEWAY
  local ns="${tag}$1" mac port
  $SUDO ip netns add "$ns"
  $SUDO ip link add "${tag}$1" type veth peer name eth0 netns "$ns"
  $SUDO ip link set "${tag}$1" up
  $SUDO ip -n "$ns" link set lo up; $SUDO ip -n "$ns" link set eth0 up
  $SUDO ip -n "$ns" addr add "$3/24" dev eth0
  $SUDO ip -n "$ns" route add default via "$4"
  mac=$($SUDO ip netns exec "$ns" cat /sys/class/net/eth0/address)
  port=$($P raw POST "/v1/bridges/$2/ports" "{\"mac\":\"$mac\",\"allowed_addresses\":[{\"mac\":\"$mac\",\"ip\":\"$3/32\"}]}" | id)
  $P raw PUT "/v1/ports/$port/binding" "{\"host_id\":\"$host\",\"interface_name\":\"${tag}$1\"}" >/dev/null
}
pod c "$bridge0" 10.77.0.10 10.77.0.1
servers=""
for i in 1 2 3; do
  pod "m$i" "$bridge1" "10.77.1.2$i" 10.77.1.1
  $SUDO ip netns exec "${tag}m$i" python3 -c '
import socket
s=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)
s.bind(("0.0.0.0",8080));s.listen(4096)
while True:
  c,_=s.accept();c.close()' &
  servers="$servers $!"
done
lb=$($P raw POST /v1/load_balancers "{\"router_id\":\"$router\",\"name\":\"lb\"}" | id)
pool=$($P raw POST /v1/pools "{\"load_balancer_id\":\"$lb\",\"name\":\"p\"}" | id)
for i in 1 2 3; do
  $P raw POST /v1/members "{\"pool_id\":\"$pool\",\"address\":\"10.77.1.2$i\",\"port\":8080}" >/dev/null
done
$P raw POST /v1/vips "{\"load_balancer_id\":\"$lb\",\"name\":\"v\",\"pool_id\":\"$pool\",\"address\":\"10.96.0.10\",\"protocol\":\"tcp\",\"port\":80}" >/dev/null

connect() { # DST PORT -> "conns_per_s p99_ms"
  $SUDO ip netns exec "${tag}c" python3 -c '
import socket,struct,sys,time
dst,port,n=sys.argv[1],int(sys.argv[2]),int(sys.argv[3])
for _ in range(50):  # warm up: ARP, learned MACs
  s=socket.socket();s.settimeout(2)
  try: s.connect((dst,port))
  except OSError: time.sleep(0.1)
  s.close()
lat=[];start=time.perf_counter()
for _ in range(n):
  s=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_LINGER,struct.pack("ii",1,0))
  t=time.perf_counter();s.connect((dst,port));lat.append(time.perf_counter()-t);s.close()
total=time.perf_counter()-start;lat.sort()
print("%.0f %.3f"%(n/total,lat[int(len(lat)*0.99)]*1e3))
print("%s: slowest connect %.1f ms, %d over 100 ms"%(dst,lat[-1]*1e3,sum(1 for l in lat if l>0.1)),file=sys.stderr)' "$1" "$2" "$N"
}
sleep 1
read -r d_cps d_p99 < <(connect 10.77.1.21 8080)
read -r v_cps v_p99 < <(connect 10.96.0.10 80)
echo "datapath drops during the run:"
curl -fs "$PLEXUS_API/metrics" | grep '^plexus_datapath_drops_total' | sed 's/^/  /' || true
python3 - "$d_cps" "$d_p99" "$v_cps" "$v_p99" "$N" <<'EOF'
import sys
d_cps, d_p99, v_cps, v_p99, n = map(float, sys.argv[1:])
print(f"{int(n)} new TCP connections per path, one client, sequential")
print(f"{'path':<28}{'conn/s':>10}{'p99 connect ms':>16}")
print(f"{'client -> member (router)':<28}{d_cps:>10.0f}{d_p99:>16.3f}")
print(f"{'client -> VIP (3 members)':<28}{v_cps:>10.0f}{v_p99:>16.3f}")
print(f"ratio VIP/direct: conn/s {v_cps/d_cps:.2f}x, p99 latency {v_p99/d_p99:.2f}x")
EOF
