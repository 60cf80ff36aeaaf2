#!/usr/bin/env bash
# Benchmark across hosts: pod-to-pod TCP throughput (iperf3), ping RTT and
# 64-byte UDP rate between two "hosts" (namespaces joined by an underlay
# veth), through Plexus's VXLAN tunnel and through the kernel's own vxlan
# device + Linux bridge (flannel-style), in one run; prints the ratios.
# Then two pod pairs at once (A1 -> B1 and A2 -> B2), TCP and UDP 64 B, the
# aggregate beside one flow's figure: does the path scale over the cores?
# Last, the ping RTT with both agents in poll mode (--poll-mode always).
#   scripts/bench-multihost.sh [seconds per iperf3 run, default 10]
# The agents take PLEXUS_* settings from the environment (for instance
# PLEXUS_TUNNEL_SOCKETS=1 for a single tunnel socket).
# Needs root. Everything it creates is removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh
ensure_packages protoc:protobuf-compiler /usr/include/google/protobuf/descriptor.proto:libprotobuf-dev \
  iperf3:iperf3 ping:iputils-ping ip:iproute2 etcd:etcd-server curl:curl python3:python3
SECS=${1:-10}
cargo build --release --bin plexus >/dev/null
P=$PWD/target/release/plexus
tag=m$$
work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
  for ns in ka kb kpa kpb kpa2 kpb2 pa pb ppa ppb ppa2 ppb2; do ip netns del "${tag}$ns" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
fail() { tail -n 5 "$work"/*.log >&2; exit 1; }

. scripts/bench-lib.sh
# pod HOST POD ADDR [IFNAME]: a namespace with eth0 (MTU 1450), its peer
# IFNAME (default veth) in HOST.
pod() {
  local ifname=${4:-veth}
  ip netns add "${tag}$2"
  ip link add "$ifname" netns "${tag}$1" type veth peer name eth0 netns "${tag}$2"
  ip -n "${tag}$2" link set lo up
  ip -n "${tag}$2" link set eth0 mtu 1450 up
  ip -n "${tag}$2" addr add "$3/24" dev eth0
  ip -n "${tag}$1" link set "$ifname" up
}
measure() { # A_NS B_NS -> "tcp_gbps rtt_ms udp_kpps"
  local a=$1 b=$2
  ip netns exec "$b" iperf3 -s -D -p 5201 --pidfile "$work/iperf-$b.pid"
  sleep 0.5
  ip netns exec "$a" ping -n -c 3 -i 0.2 -W 1 10.78.0.2 >/dev/null
  local tcp rtt udp
  tcp=$(ip netns exec "$a" iperf3 -c 10.78.0.2 -p 5201 -t "$SECS" -J | python3 -c 'import sys,json; print(json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/1e9)')
  rtt=$(ip netns exec "$a" ping -n -c 50 -i 0.02 -q 10.78.0.2 | awk -F/ '/^rtt/ {print $5}')
  udp=$(ip netns exec "$a" iperf3 -c 10.78.0.2 -p 5201 -u -l 64 -b 0 -t "$SECS" -J | python3 -c 'import sys,json; e=json.load(sys.stdin)["end"]["sum"]; print(e["packets"]*(1-e["lost_percent"]/100)/e["seconds"]/1e3)')
  kill "$(cat "$work/iperf-$b.pid")" 2>/dev/null || true
  echo "$tcp $rtt $udp"
}
# measure2 A1 B1 A2 B2: A1 -> B1 (10.78.0.2) and A2 -> B2 (10.78.0.4) at once:
# "tcp_gbps udp_kpps", aggregates.
measure2() {
  local b
  for b in "$2:10.78.0.2" "$4:10.78.0.4"; do
    ip netns exec "${b%%:*}" iperf3 -s -D -p 5201 --pidfile "$work/iperf-${b%%:*}.pid"
  done
  sleep 0.5
  ip netns exec "$1" ping -n -c 3 -i 0.2 -W 1 10.78.0.2 >/dev/null
  ip netns exec "$3" ping -n -c 3 -i 0.2 -W 1 10.78.0.4 >/dev/null
  local x y
  ip netns exec "$1" iperf3 -c 10.78.0.2 -p 5201 -t "$SECS" -J >"$work/tcp1.json" & x=$!
  ip netns exec "$3" iperf3 -c 10.78.0.4 -p 5201 -t "$SECS" -J >"$work/tcp2.json" & y=$!
  wait "$x" "$y"
  ip netns exec "$1" iperf3 -c 10.78.0.2 -p 5201 -u -l 64 -b 0 -t "$SECS" -J >"$work/udp1.json" & x=$!
  ip netns exec "$3" iperf3 -c 10.78.0.4 -p 5201 -u -l 64 -b 0 -t "$SECS" -J >"$work/udp2.json" & y=$!
  wait "$x" "$y"
  kill "$(cat "$work/iperf-$2.pid")" "$(cat "$work/iperf-$4.pid")" 2>/dev/null || true
  python3 - "$work" <<'PY'
import json, sys
w = sys.argv[1]
tcp = sum(json.load(open(f"{w}/tcp{i}.json"))["end"]["sum_received"]["bits_per_second"] / 1e9 for i in (1, 2))
def kpps(path):
    e = json.load(open(path))["end"]["sum"]
    return e["packets"] * (1 - e["lost_percent"] / 100) / e["seconds"] / 1e3
print(tcp, sum(kpps(f"{w}/udp{i}.json") for i in (1, 2)))
PY
}

# --- kernel baseline: vxlan device + Linux bridge on each host
underlay_hosts ka kb
pod ka kpa 10.78.0.1; pod kb kpb 10.78.0.2
pod ka kpa2 10.78.0.3 veth2; pod kb kpb2 10.78.0.4 veth2
for h in ka kb; do
  self=192.168.100.1; other=192.168.100.2
  [ "$h" = kb ] && { self=192.168.100.2; other=192.168.100.1; }
  ip -n "${tag}$h" link add vx42 type vxlan id 42 dstport 4789 remote "$other" local "$self" dev ul0
  ip -n "${tag}$h" link add br0 type bridge
  ip -n "${tag}$h" link set vx42 master br0 up
  ip -n "${tag}$h" link set veth master br0
  ip -n "${tag}$h" link set veth2 master br0
  ip -n "${tag}$h" link set br0 up
done
read -r k_tcp k_rtt k_udp < <(measure "${tag}kpa" "${tag}kpb")
read -r k2_tcp k2_udp < <(measure2 "${tag}kpa" "${tag}kpb" "${tag}kpa2" "${tag}kpb2")

# --- Plexus: etcd and the API in host A, one agent per host
underlay_hosts pa pb
pod pa ppa 10.78.0.1; pod pb ppb 10.78.0.2
pod pa ppa2 10.78.0.3 veth2; pod pb ppb2 10.78.0.4 veth2
ip netns exec "${tag}pa" etcd --name b --data-dir "$work/etcd" \
  --listen-client-urls http://192.168.100.1:23790 --advertise-client-urls http://192.168.100.1:23790 \
  --listen-peer-urls http://127.0.0.1:23800 --initial-advertise-peer-urls http://127.0.0.1:23800 \
  --initial-cluster b=http://127.0.0.1:23800 --initial-cluster-state new >"$work/etcd.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
  ip netns exec "${tag}pa" curl -fs http://192.168.100.1:23790/health >/dev/null 2>&1 && break; sleep 0.1
done
nsdb=etcd://192.168.100.1:23790/plexus/
token=bench-$tag
ip netns exec "${tag}pa" "$P" api --nsdb "$nsdb" --listen 127.0.0.1:18470 --admin-token "$token" >"$work/api.log" 2>&1 &
pids+=($!)
# agents [ARGS]: (re)starts one agent per host (same host names: same records).
agent_pids=()
agents() {
  local h ip pid
  for pid in "${agent_pids[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
  agent_pids=()
  for h in a b; do
    ip=192.168.100.1; [ "$h" = b ] && ip=192.168.100.2
    ip netns exec "${tag}p$h" "$P" agent --nsdb "$nsdb" --host-name "host-$h" --tunnel-ip "$ip" "$@" >>"$work/agent-$h.log" 2>&1 &
    pids+=($!); agent_pids+=($!)
  done
}
agents
api() { ip netns exec "${tag}pa" env PLEXUS_API=http://127.0.0.1:18470 PLEXUS_TOKEN="$token" "$P" raw "$@"; }
id() { python3 -c 'import sys,json; print(json.load(sys.stdin)["id"])'; }
for _ in $(seq 100); do
  n=$(api GET /v1/hosts 2>/dev/null | python3 -c 'import sys,json; print(sum(h["alive"] for h in json.load(sys.stdin)["items"]))' 2>/dev/null || echo 0)
  [ "$n" = 2 ] && break; sleep 0.2
done
[ "$n" = 2 ] || fail
tenant=$(api POST /v1/tenants '{"name":"bench"}' | id)
bridge=$(api POST /v1/bridges "{\"tenant_id\":\"$tenant\",\"name\":\"b\"}" | id)
# Each host's two ports bound one after the other (consecutive tunnel lanes).
for h in a b; do
  host=$(api GET /v1/hosts | python3 -c "import sys,json; print([x['id'] for x in json.load(sys.stdin)['items'] if x['name']=='host-$h'][0])")
  for pod in "pp$h:veth" "pp${h}2:veth2"; do
    mac=$(ip netns exec "${tag}${pod%%:*}" cat /sys/class/net/eth0/address)
    port=$(api POST "/v1/bridges/$bridge/ports" "{\"mac\":\"$mac\"}" | id)
    api PUT "/v1/ports/$port/binding" "{\"host_id\":\"$host\",\"interface_name\":\"${pod##*:}\"}" >/dev/null
  done
done
sleep 1
read -r p_tcp p_rtt p_udp < <(measure "${tag}ppa" "${tag}ppb")
read -r p2_tcp p2_udp < <(measure2 "${tag}ppa" "${tag}ppb" "${tag}ppa2" "${tag}ppb2")
# What the agents dropped during the run (a lossy tunnel shows here first).
for h in a b; do
  ip netns exec "${tag}p$h" curl -fs http://127.0.0.1:8471/metrics 2>/dev/null |
    awk -v h="host-$h" '/^plexus_datapath_drops_total/ && $NF > 0 {print h ": " $0}' >&2 || true
done

# Both agents in poll mode (--poll-mode always: each keeps a core polling
# its ports and tunnel sockets): the ping RTT.
agents --poll-mode always
for _ in $(seq 50); do
  ip netns exec "${tag}ppa" ping -n -c 1 -W 0.2 10.78.0.2 >/dev/null 2>&1 && break
done
p_poll_rtt=$(ip netns exec "${tag}ppa" ping -n -c 50 -i 0.02 -q 10.78.0.2 | awk -F/ '/^rtt/ {print $5}')
python3 - "$k_tcp" "$k_rtt" "$k_udp" "$p_tcp" "$p_rtt" "$p_udp" "$k2_tcp" "$k2_udp" "$p2_tcp" "$p2_udp" "$p_poll_rtt" <<'PY'
import sys
k_tcp, k_rtt, k_udp, p_tcp, p_rtt, p_udp, k2_tcp, k2_udp, p2_tcp, p2_udp, p_poll_rtt = map(float, sys.argv[1:])
print(f"{'across two hosts':<18}{'kernel vxlan':>13}{'plexus':>9}{'ratio':>8}")
print(f"{'TCP (Gbit/s)':<18}{k_tcp:>13.2f}{p_tcp:>9.2f}{p_tcp/k_tcp:>8.2f}")
print(f"{'ping RTT (ms)':<18}{k_rtt:>13.3f}{p_rtt:>9.3f}{p_rtt/k_rtt:>8.2f}")
print(f"{'UDP 64B (kpps)':<18}{k_udp:>13.1f}{p_udp:>9.1f}{p_udp/k_udp:>8.2f}")
print(f"{'ping RTT, poll':<18}{k_rtt:>13.3f}{p_poll_rtt:>9.3f}{p_poll_rtt/k_rtt:>8.2f}   (both agents --poll-mode always)")
print()
print("two pod pairs at once (aggregate) beside one flow; scaling = aggregate / one flow")
print(f"{'across two hosts':<24}{'kernel vxlan':>13}{'plexus':>9}{'ratio':>8}")
for name, f, k1, k2, p1, p2 in [("TCP (Gbit/s)", "{:.2f}", k_tcp, k2_tcp, p_tcp, p2_tcp),
                                ("UDP 64B (kpps)", "{:.1f}", k_udp, k2_udp, p_udp, p2_udp)]:
    print(f"{name + ', 2 flows':<24}{f.format(k2):>13}{f.format(p2):>9}{p2 / k2:>8.2f}")
    print(f"{'  scaling':<24}{k2 / k1:>13.2f}{p2 / p1:>9.2f}")
PY
