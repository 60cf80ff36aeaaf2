#!/usr/bin/env bash
# Benchmark on one host: pod-to-pod TCP throughput (iperf3, one stream),
# ping RTT and 64-byte UDP packet rate through a Linux bridge, through Open
# vSwitch's userspace datapath (netdev, userspace TSO) and through Plexus
# (without and with a stateful rule chain on both pods' ports), between the
# same kind of namespaces, in one run; prints each figure, its ratio to the
# Linux bridge and the targets of issue 17. Then a two-flow run: two pod
# pairs at once through Plexus and through the bridge, the aggregate beside
# one flow's.
#   scripts/bench.sh [--ipv6] [seconds per iperf3 run, default 10]
# With --ipv6 the pods also get fd77::1..4/64 and every figure is measured
# over IPv6 (the Linux bridge still the baseline, in the same run).
# Runs as root, or re-runs itself with sudo. Each switch and its pods live
# in namespaces of their own (the Plexus node and OVS's daemons too);
# everything it creates is removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh
as_root "$@"
ensure_packages protoc:protobuf-compiler /usr/include/google/protobuf/descriptor.proto:libprotobuf-dev \
  iperf3:iperf3 ping:iputils-ping ip:iproute2 curl:curl python3:python3 ovs-vswitchd:openvswitch-switch
IPV6=0
if [ "${1:-}" = "--ipv6" ]; then IPV6=1; shift; fi
SECS=${1:-10}
# addr I: pod I's address in the family measured.
addr() { if [ "$IPV6" = 1 ]; then echo "fd77::$1"; else echo "10.77.0.$1"; fi; }
load_start=$(cut -d' ' -f1 /proc/loadavg)
release_build --bin plexus
P=$PWD/target/release/plexus
tag=b$$
work=$(mktemp -d)
pids=()
cleanup() {
  set +e
  for f in "$work"/*.pid; do [ -s "$f" ] && kill "$(cat "$f")" 2>/dev/null; done
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; done
  for ns in $(ip netns list | awk '{print $1}' | grep "^${tag}"); do ip netns del "$ns"; done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP
fail() { echo "bench: $*" >&2; tail -n 5 "$work"/*.log >&2 2>/dev/null; exit 1; }

# pods SW K N: pod namespaces ${tag}K1..N at 10.77.0.1..N/24, each eth0's
# peer named hI inside the switch namespace SW.
pods() {
  local sw=$1 k=$2 n=$3 i
  for i in $(seq "$n"); do
    ip netns add "${tag}$k$i"
    ip link add "h$i" netns "$sw" type veth peer name eth0 netns "${tag}$k$i"
    ip -n "${tag}$k$i" link set lo up
    ip -n "${tag}$k$i" link set eth0 up
    ip -n "${tag}$k$i" addr add "10.77.0.$i/24" dev eth0
    if [ "$IPV6" = 1 ]; then ip -n "${tag}$k$i" addr add "fd77::$i/64" dev eth0 nodad; fi
    ip -n "$sw" link set "h$i" up
  done
}
server() { ip netns exec "$1" iperf3 -s -D -p 5201 --pidfile "$work/iperf-$1.pid"; }
server_stop() { kill "$(cat "$work/iperf-$1.pid")" 2>/dev/null || true; rm -f "$work/iperf-$1.pid"; }
gbps() { python3 -c 'import sys,json; print(json.load(open(sys.argv[1]))["end"]["sum_received"]["bits_per_second"]/1e9)' "$1"; }
kpps() { python3 -c 'import sys,json; e=json.load(open(sys.argv[1]))["end"]["sum"]; print(e["packets"]*(1-e["lost_percent"]/100)/e["seconds"]/1e3)' "$1"; }
tcp_run() { ip netns exec "$1" iperf3 -c "$2" -p 5201 -t "$SECS" -J >"$3"; }
udp_run() { ip netns exec "$1" iperf3 -c "$2" -p 5201 -u -l 64 -b 0 -t "$SECS" -J >"$3"; }
reach() { # NS ADDR: answers within 5 s (ARP, learning, the agent's bindings)
  local _
  for _ in $(seq 25); do ip netns exec "$1" ping -n -c 1 -W 0.2 "$2" >/dev/null 2>&1 && return 0; done
  fail "$2 unreachable from $1"
}

measure() { # K: pod K1 -> K2, one flow: "tcp_gbps rtt_ms udp_kpps"
  local a=${tag}${1}1 b=${tag}${1}2 rtt
  server "$b"; sleep 0.5
  reach "$a" "$(addr 2)"
  tcp_run "$a" "$(addr 2)" "$work/tcp.json"
  rtt=$(ip netns exec "$a" ping -n -c 50 -i 0.02 -q "$(addr 2)" | awk -F/ '/^rtt/ {print $5}')
  udp_run "$a" "$(addr 2)" "$work/udp.json"
  server_stop "$b"
  echo "$(gbps "$work/tcp.json") $rtt $(kpps "$work/udp.json")"
}

measure2() { # K: pods K1 -> K2 and K3 -> K4 at once: "tcp_gbps udp_kpps", aggregates
  local k=$1 mode x y tcp udp
  server "${tag}${k}2"; server "${tag}${k}4"; sleep 0.5
  reach "${tag}${k}1" "$(addr 2)"; reach "${tag}${k}3" "$(addr 4)"
  for mode in tcp udp; do
    "${mode}_run" "${tag}${k}1" "$(addr 2)" "$work/${mode}1.json" & x=$!
    "${mode}_run" "${tag}${k}3" "$(addr 4)" "$work/${mode}2.json" & y=$!
    pids+=("$x" "$y"); wait "$x" "$y"
  done
  server_stop "${tag}${k}2"; server_stop "${tag}${k}4"
  tcp=$(python3 -c 'import sys; print(sum(map(float, sys.argv[1:])))' "$(gbps "$work/tcp1.json")" "$(gbps "$work/tcp2.json")")
  udp=$(python3 -c 'import sys; print(sum(map(float, sys.argv[1:])))' "$(kpps "$work/udp1.json")" "$(kpps "$work/udp2.json")")
  echo "$tcp $udp"
}

# --- kernel baseline: a Linux bridge in its own namespace, four pods
ip netns add "${tag}br"
ip -n "${tag}br" link add br0 type bridge
ip -n "${tag}br" link set br0 up
pods "${tag}br" k 4
for i in 1 2 3 4; do ip -n "${tag}br" link set "h$i" master br0; done
out=$(measure k); read -r k_tcp k_rtt k_udp <<<"$out"
out=$(measure2 k); read -r k2_tcp k2_udp <<<"$out"

# --- OVS userspace datapath (netdev) with userspace TSO, daemons in their own namespace
ovs=$work/ovs
mkdir -p "$ovs"
ip netns add "${tag}ovs"
ip -n "${tag}ovs" link set lo up
export OVS_RUNDIR=$ovs OVS_LOGDIR=$ovs OVS_DBDIR=$ovs OVS_SYSCONFDIR=$ovs
vsctl() { ovs-vsctl --db="unix:$ovs/db.sock" "$@"; }
ovsdb-tool create "$ovs/conf.db" /usr/share/openvswitch/vswitch.ovsschema
ip netns exec "${tag}ovs" ovsdb-server "$ovs/conf.db" --remote="punix:$ovs/db.sock" \
  --pidfile="$work/ovsdb-server.pid" --unixctl="$ovs/ovsdb-server.ctl" --log-file="$work/ovsdb-server.log" --detach 2>/dev/null
vsctl --no-wait init
vsctl --no-wait set Open_vSwitch . other_config:userspace-tso-enable=true
ip netns exec "${tag}ovs" ovs-vswitchd "unix:$ovs/db.sock" \
  --pidfile="$work/ovs-vswitchd.pid" --unixctl="$ovs/ovs-vswitchd.ctl" --log-file="$work/ovs-vswitchd.log" --detach 2>/dev/null
vsctl add-br br0 -- set bridge br0 datapath_type=netdev
pods "${tag}ovs" o 2
for i in 1 2; do vsctl add-port br0 "h$i"; done
grep -q "Userspace TCP Segmentation Offloading support enabled" "$work/ovs-vswitchd.log" || fail "OVS userspace TSO is off"
out=$(measure o); read -r o_tcp o_rtt o_udp <<<"$out"
# Stop OVS now: its poll loop must not share the CPUs with Plexus's run.
for d in ovs-vswitchd ovsdb-server; do kill "$(cat "$work/$d.pid")"; rm -f "$work/$d.pid"; done

# --- Plexus: the all-in-one node in its own namespace, four pods on one bridge
ip netns add "${tag}px"
ip -n "${tag}px" link set lo up
pods "${tag}px" p 4
# serve [ARGS]: (re)starts the Plexus node on the same data (same ports and bindings).
serve_pid=
serve() {
  if [ -n "$serve_pid" ]; then kill "$serve_pid"; wait "$serve_pid" 2>/dev/null || true; fi
  ip netns exec "${tag}px" "$P" serve --data "$work/data" --listen 127.0.0.1:18499 --host-name "bench-$tag" --no-uplink "$@" >>"$work/serve.log" 2>&1 &
  serve_pid=$!
  pids+=("$serve_pid")
  for _ in $(seq 100); do ip netns exec "${tag}px" curl -fs http://127.0.0.1:18499/healthz >/dev/null 2>&1 && break; sleep 0.1; done
}
serve
token=$(cat "$work/data/admin.token")
api() { ip netns exec "${tag}px" env PLEXUS_API=http://127.0.0.1:18499 PLEXUS_TOKEN="$token" "$P" raw "$@"; }
id() { python3 -c 'import sys,json; print(json.load(sys.stdin)["id"])'; }
host=$(api GET /v1/hosts | python3 -c 'import sys,json; print(json.load(sys.stdin)["items"][0]["id"])')
tenant=$(api POST /v1/tenants '{"name":"bench"}' | id)
bridge=$(api POST /v1/bridges "{\"tenant_id\":\"$tenant\",\"name\":\"b\"}" | id)
ports=()
for i in 1 2 3 4; do
  mac=$(ip netns exec "${tag}p$i" cat /sys/class/net/eth0/address)
  port=$(api POST "/v1/bridges/$bridge/ports" "{\"mac\":\"$mac\"}" | id)
  api PUT "/v1/ports/$port/binding" "{\"host_id\":\"$host\",\"interface_name\":\"h$i\"}" >/dev/null
  ports+=("$port")
done
out=$(measure p); read -r p_tcp p_rtt p_udp <<<"$out"
out=$(measure2 p); read -r p2_tcp p2_udp <<<"$out"

# --- Plexus with a live trace request in force that matches none of the
# traffic (UDP to port 9): what tracing costs the packets it does not trace
trace_request=$(api POST /v1/trace_requests '{"protocol":"udp","dst_port":9,"limit_seconds":3600}' | id)
sleep 1
out=$(measure p); read -r t_tcp t_rtt t_udp <<<"$out"
api DELETE "/v1/trace_requests/$trace_request" >/dev/null

# --- Plexus in poll mode (--poll-mode always: a thread polls every port,
# for hosts that give the agent a core): the ping RTT
serve --poll-mode always
reach "${tag}p1" "$(addr 2)"
poll_rtt=$(ip netns exec "${tag}p1" ping -n -c 50 -i 0.02 -q "$(addr 2)" | awk -F/ '/^rtt/ {print $5}')
serve

# --- Plexus with a stateful chain on the ports (every packet tracked)
chain=$(api POST /v1/chains "{\"tenant_id\":\"$tenant\",\"name\":\"stateful\"}" | id)
api POST "/v1/chains/$chain/rules" '{"position":1,"action":"accept","conn_state":["established","related"]}' >/dev/null
api POST "/v1/chains/$chain/rules" '{"position":2,"action":"accept","conn_state":["new"]}' >/dev/null
for port in "${ports[@]}"; do
  api PATCH "/v1/ports/$port" "{\"outbound_chain_id\":\"$chain\"}" >/dev/null
done
sleep 1
out=$(measure p); read -r c_tcp c_rtt c_udp <<<"$out"

python3 - "$IPV6" "$SECS" "$load_start" "$(cut -d' ' -f1 /proc/loadavg)" "$k_tcp" "$k_rtt" "$k_udp" "$o_tcp" "$o_rtt" "$o_udp" "$p_tcp" "$p_rtt" "$p_udp" \
  "$c_tcp" "$c_rtt" "$c_udp" "$k2_tcp" "$k2_udp" "$p2_tcp" "$p2_udp" "$t_tcp" "$t_rtt" "$t_udp" "$poll_rtt" <<'PY'
import os, sys
family = "IPv6" if sys.argv.pop(1) == "1" else "IPv4"
secs, load_start, load_end = sys.argv[1:4]
(k_tcp, k_rtt, k_udp, o_tcp, o_rtt, o_udp, p_tcp, p_rtt, p_udp,
 c_tcp, c_rtt, c_udp, k2_tcp, k2_udp, p2_tcp, p2_udp, t_tcp, t_rtt, t_udp, poll_rtt) = map(float, sys.argv[4:])
yes = lambda ok: "met" if ok else "NOT met"
print(f"one flow, pod to pod on one host over {family} ({secs} s per iperf3 run); ratio = to the Linux bridge")
print(f"load average (1 min) at the start and the end: {load_start}, {load_end} on {os.cpu_count()} CPUs"
      " (anything else running skews every figure)")
print(f"{'metric':<16}{'linux bridge':>13}{'ovs netdev':>11}{'ratio':>7}{'plexus':>9}{'ratio':>7}"
      f"{'plexus+ct':>11}{'ratio':>7}   target (plexus, issue 17)")
rows = [
    ("TCP (Gbit/s)", "{:.2f}", k_tcp, o_tcp, p_tcp, c_tcp, ">= 0.9x bridge", p_tcp / k_tcp >= 0.9, p_tcp > o_tcp),
    ("ping RTT (ms)", "{:.3f}", k_rtt, o_rtt, p_rtt, c_rtt, "<= 2.0x bridge", p_rtt / k_rtt <= 2.0, p_rtt < o_rtt),
    ("UDP 64B (kpps)", "{:.1f}", k_udp, o_udp, p_udp, c_udp, ">= 1.0x bridge", p_udp / k_udp >= 1.0, p_udp > o_udp),
]
for name, f, k, o, p, c, target, met, ahead in rows:
    print(f"{name:<16}{f.format(k):>13}{f.format(o):>11}{o / k:>7.2f}{f.format(p):>9}{p / k:>7.2f}"
          f"{f.format(c):>11}{c / k:>7.2f}   {target}: {yes(met)}; ahead of OVS: {'yes' if ahead else 'no'}")
print(f"{'ping RTT, poll':<16}{'':>13}{'':>11}{'':>7}{poll_rtt:>9.3f}{poll_rtt / k_rtt:>7.2f}"
      f"{'':>11}{'':>7}   <= 1.5x bridge (--poll-mode always): {yes(poll_rtt / k_rtt <= 1.5)}")
print()
print("two pod pairs at once (aggregate) beside one flow; scaling = aggregate / one flow")
print(f"{'metric':<24}{'linux bridge':>13}{'plexus':>9}   target (plexus, issue 17)")
for name, f, k1, k2, p1, p2 in [("TCP (Gbit/s)", "{:.2f}", k_tcp, k2_tcp, p_tcp, p2_tcp),
                                ("UDP 64B (kpps)", "{:.1f}", k_udp, k2_udp, p_udp, p2_udp)]:
    print(f"{name + ', 1 flow':<24}{f.format(k1):>13}{f.format(p1):>9}")
    print(f"{name + ', 2 flows':<24}{f.format(k2):>13}{f.format(p2):>9}")
    print(f"{'  scaling':<24}{k2 / k1:>13.2f}{p2 / p1:>9.2f}   >= 1.6x one flow: {yes(p2 / p1 >= 1.6)}")
print()
print("plexus with a live trace request in force that matches none of the traffic (issue 19)")
print(f"{'metric':<16}{'plexus':>9}{'+request':>10}{'ratio':>7}")
for name, f, p, t in [("TCP (Gbit/s)", "{:.2f}", p_tcp, t_tcp), ("ping RTT (ms)", "{:.3f}", p_rtt, t_rtt),
                      ("UDP 64B (kpps)", "{:.1f}", p_udp, t_udp)]:
    print(f"{name:<16}{f.format(p):>9}{f.format(t):>10}{t / p:>7.2f}")
PY
