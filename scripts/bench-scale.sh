#!/usr/bin/env bash
# Benchmark of one host at scale (issue 17): N ports (default 10,000) on
# bridges of a tenant, created through the API and bound to N veth pairs
# on this host, served by one agent. Prints, each beside its target:
#  - agent cold start to all ports served (a restart with every port bound:
#    the last "port attached" in the agent's log, checked against the
#    agent's /metrics, which has counters for each served port), and the
#    part after the NSDB read ("NSDB read done" in the log, and the
#    plexus_agent_nsdb_initial_read_* gauges of /metrics, to the last port);
#  - a route change reaching the datapath: from the PATCH of a route's next
#    hop to the first probe packet (one every 0.5 ms) that takes the new
#    next hop, p50/p99 over CHANGES changes (default 200), every port served;
#  - the agent's resident memory (VmRSS) per port above its idle size;
#  - the time the agent takes to stop on SIGTERM with every port.
#   scripts/bench-scale.sh [ports, default 10000] [route changes, default 200]
# NSDB=etcd (default): `plexus agent` and `plexus api` over an etcd, as on a
# multi-host deployment. NSDB=embedded: `plexus serve` (API and agent in one
# process on the embedded store); then memory and stop time are the whole
# node's. PER_BRIDGE (default 250): ports per bridge.
# Runs as root, or re-runs itself with sudo. etcd, the API, the agent, the
# veths and the probe pods live in namespaces it creates, removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh
as_root "$@"
NSDB=${NSDB:-etcd}
case "$NSDB" in
  etcd) ensure_packages etcd:etcd-server ;;
  embedded) ;;
  *) echo "NSDB is etcd or embedded" >&2; exit 2 ;;
esac
ensure_packages protoc:protobuf-compiler /usr/include/google/protobuf/descriptor.proto:libprotobuf-dev \
  ip:iproute2 curl:curl python3:python3
N=${1:-10000}
load_start=$(cut -d' ' -f1 /proc/loadavg)
CHANGES=${2:-200}
PER_BRIDGE=${PER_BRIDGE:-250}
release_build --bin plexus
P=$PWD/target/release/plexus
PY=$PWD/scripts/bench-scale.py
tag=s$$
H=${tag}h
work=$(mktemp -d)
pids=()
agent=""
cleanup() {
  set +e
  [ -n "$agent" ] && kill "$agent" 2>/dev/null && wait "$agent" 2>/dev/null
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; done
  for ns in $(ip netns list | awk '{print $1}' | grep "^${tag}"); do ip netns del "$ns"; done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP
fail() { echo "bench-scale: $*" >&2; exit 1; }
now() { date +%s.%N; }
since() { awk -v t="$1" -v n="$(now)" 'BEGIN { printf "%.3f\n", n - t }'; }
inh() { ip netns exec "$H" "$@"; }
up() { # URL: waits up to 10 s for it to answer
  local _
  for _ in $(seq 100); do inh curl -fs "$1" >/dev/null 2>&1 && return 0; sleep 0.1; done
  return 1
}
token=bench-$tag
export PLEXUS_API=http://127.0.0.1:18470 PLEXUS_TOKEN=$token BENCH_HOST=scale-$tag BENCH_PROBE_NS=${tag}ps
rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$agent/status"; }

# --- the host: a namespace holding the NSDB, the API, the agent and the ports' veths
ip netns add "$H"
ip -n "$H" link set lo up
inh sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
if [ "$NSDB" = etcd ]; then
  ip netns exec "$H" etcd --name s --data-dir "$work/etcd" --quota-backend-bytes 4294967296 \
    --listen-client-urls http://127.0.0.1:23790 --advertise-client-urls http://127.0.0.1:23790 \
    --listen-peer-urls http://127.0.0.1:23800 --initial-advertise-peer-urls http://127.0.0.1:23800 \
    --initial-cluster s=http://127.0.0.1:23800 --initial-cluster-state new >"$work/etcd.log" 2>&1 &
  pids+=($!)
  up http://127.0.0.1:23790/health || fail "etcd did not start"
  nsdb=etcd://127.0.0.1:23790/plexus/
  ip netns exec "$H" "$P" api --nsdb "$nsdb" --listen 127.0.0.1:18470 --admin-token "$token" --no-uplink >"$work/api.log" 2>&1 &
  pids+=($!)
  up http://127.0.0.1:18470/healthz || fail "the API did not start"
  metrics=http://127.0.0.1:8471/metrics
else
  metrics=http://127.0.0.1:18470/metrics
fi

# start_agent NAME: the agent (with NSDB=embedded, the whole node) in the
# host namespace, its log in $work/NAME.log; T0 = its start
start_agent() {
  T0=$(now)
  log=$work/$1.log
  if [ "$NSDB" = etcd ]; then
    (ulimit -n $((N + 4096)) && exec ip netns exec "$H" env NO_COLOR=1 "$P" agent --nsdb "$nsdb" \
      --host-name "scale-$tag" --tunnel-ip 127.0.0.1 --listen 127.0.0.1:8471) >"$log" 2>&1 &
  else
    (ulimit -n $((N + 4096)) && exec ip netns exec "$H" env NO_COLOR=1 "$P" serve --data "$work/data" \
      --listen 127.0.0.1:18470 --admin-token "$token" --host-name "scale-$tag" --tunnel-ip 127.0.0.1 --no-uplink) >"$log" 2>&1 &
  fi
  agent=$!
  up "${metrics%/metrics}/healthz" || fail "the agent did not start: $(tail -n 3 "$log")"
}
# stop_agent: SIGTERM; sets stopped_s to the seconds until the process has
# exited (polled every 10 ms; SIGKILL after 300 s)
stop_agent() {
  local t0=${EPOCHREALTIME/./} killed=""
  kill -TERM "$agent"
  while [ -e "/proc/$agent" ] && ! grep -q '^State:[[:space:]]*Z' "/proc/$agent/status" 2>/dev/null; do
    [ "${EPOCHREALTIME/./}" -ge $((t0 + 300000000)) ] && { killed=1; break; }
    sleep 0.01
  done
  stopped_s=$(awk -v us=$((${EPOCHREALTIME/./} - t0)) 'BEGIN { printf "%.2f\n", us / 1e6 }')
  [ -n "$killed" ] && stopped_s=">$stopped_s (SIGKILLed)"
  kill -KILL "$agent" 2>/dev/null || true
  wait "$agent" 2>/dev/null || true
  agent=""
}
# served COUNT TIMEOUT [SINCE]: waits until the agent serves COUNT ports; prints the seconds since SINCE (default T0)
served() { inh env BENCH_T0="${3:-$T0}" python3 "$PY" served "$metrics" "$1" "$2" "$log"; }

# --- probe pods S, X and Y (10.0.1.10, .20, .30); X and Y both answer for 172.20.0.1
for p in s x y; do
  ns=${tag}p$p
  ip netns add "$ns"
  ip link add "p$p" netns "$H" type veth peer name eth0 netns "$ns"
  ip -n "$H" link set "p$p" up
  ip -n "$ns" link set lo up
  ip -n "$ns" link set eth0 up
done
ip -n "${tag}ps" addr add 10.0.1.10/24 dev eth0
ip -n "${tag}ps" route add default via 10.0.1.1
for p in x y; do
  ns=${tag}p$p; me=$(echo "$p" | tr xy XY)
  ip -n "$ns" addr add "10.0.1.$([ "$p" = x ] && echo 20 || echo 30)/24" dev eth0
  ip -n "$ns" addr add 172.20.0.1/32 dev lo
  ip netns exec "$ns" python3 -c '
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("172.20.0.1", 9999))
me = sys.argv[1].encode()
while True:
    data, peer = s.recvfrom(64)
    s.sendto(me + data, peer)' "$me" &
  pids+=($!)
done

# --- idle: the agent with no port; then the probe topology (3 ports)
start_agent agent-idle
sleep 2
idle_kb=$(rss_kb)
inh python3 "$PY" setup "$work/state.json"
served 3 30 >/dev/null

# --- N veth pairs (host ends s<i>, peers s<i>p, all up), then N ports bound
# to them through the API while the agent runs
t=$(now)
for i in $(seq 0 $((N - 1))); do
  echo "link add s$i type veth peer name s${i}p"
done >"$work/veths.batch"
for i in $(seq 0 $((N - 1))); do
  echo "link set s$i up"; echo "link set s${i}p up"
done >>"$work/veths.batch"
ip -n "$H" -batch "$work/veths.batch"
veth_s=$(since "$t")
out=$(inh python3 "$PY" ports "$work/state.json" "$N" "$PER_BRIDGE")
read -r create_s bind_s <<<"$out"
t=$(now)
live_s=$(served $((N + 3)) 900 "$t")
sleep 2
live_kb=$(rss_kb)
stop_agent; live_stop=$stopped_s
who="the agent"; [ "$NSDB" = etcd ] || who="the node (plexus serve: API + agent)"
echo "one host, $N ports ($PER_BRIDGE per bridge) bound to veths; NSDB: $NSDB; $who"
echo "load average (1 min) at the start: $load_start on $(nproc) CPUs (anything else running skews every figure)"
awk -v n="$N" -v veth="$veth_s" -v create="$create_s" -v bind="$bind_s" -v live="$live_s" \
  -v idle="$idle_kb" -v kb="$live_kb" -v stop="$live_stop" 'BEGIN {
  printf "  setup: %d veth pairs in %.1f s; ports created in %.1f s (POST /v1/batch, 25 a batch),", n, veth, create
  printf " bound in %.1f s (%.0f/s, PUT binding, 8 at a time)\n", bind, n / (bind > 0 ? bind : 0.05)
  printf "  bound while running: all served %.1f s after the last binding; RSS %.1f MB (idle %.1f MB),", live, kb / 1024, idle / 1024
  printf " %.1f KB per port; stop on SIGTERM %s s\n", (kb - idle) / n, stop }'

# --- cold start with N + 3 ports bound
start_agent agent
cold_s=$(served $((N + 3)) 600)
read -r read_epoch read_took read_records <<<"$(inh python3 "$PY" nsdb-read "$metrics")"
read_m=$(awk -v e="$read_epoch" -v t0="$T0" 'BEGIN { if (e == "nan") print "nan"; else printf "%.3f\n", e - t0 }')
sleep 2
full_kb=$(rss_kb)
# Where the cold start's time went, as the agent logged it.
opened=$(sed 's/\x1b\[[0-9;]*m//g' "$log" | grep -a "port interfaces opened" | tail -n 1 | sed 's/.*port interfaces opened *//')
out=$(python3 - "$T0" "$log" <<'PY'
import datetime, re, sys
t0 = float(sys.argv[1])
started = read = first = last = None
for line in open(sys.argv[2], errors="replace"):
    line = re.sub(r"\x1b\[[0-9;]*m", "", line)
    m = re.match(r"(\d{4}-\d\d-\d\dT[\d:.]+Z)", line)
    if not m:
        continue
    t = datetime.datetime.fromisoformat(m.group(1).replace("Z", "+00:00")).timestamp() - t0
    if "agent started" in line and started is None:
        started = t
    if "NSDB read done" in line and read is None:
        read = t
    if "port attached" in line:
        first = t if first is None else first
        last = t
f = lambda v: "nan" if v is None else f"{v:.2f}"
print(f(started), f(read), f(first), f(last))
PY
)
read -r started_s read_s first_s last_s <<<"$out"

# --- route changes, with every port served (and the topologies built
# meanwhile, from the agent's counters)
read -r whole_n0 whole_s0 routes_n0 routes_s0 <<<"$(inh python3 "$PY" builds "$metrics")"
out=$(inh python3 "$PY" flips "$work/state.json" "$CHANGES")
read -r flip_p50 flip_p99 flip_max api_p50 flip_lost <<<"$out"
read -r whole_n1 whole_s1 routes_n1 routes_s1 <<<"$(inh python3 "$PY" builds "$metrics")"

# --- stop with every port
stop_agent; stop_s=$stopped_s

python3 - "$NSDB" "$N" "$PER_BRIDGE" "$CHANGES" "$veth_s" "$create_s" "$bind_s" "$live_s" "$cold_s" "$started_s" \
  "$first_s" "$last_s" "$idle_kb" "$live_kb" "$full_kb" "$flip_p50" "$flip_p99" "$flip_max" "$api_p50" "$flip_lost" \
  "$stop_s" "$live_stop" "$read_s" "$read_m" "$read_took" "$read_records" <<'PY'
import math, sys
a = sys.argv[1:]
mode, n, per_bridge, changes = a[0], int(a[1]), int(a[2]), int(a[3])
veth, create, bind, live, cold, started, first, last = map(float, a[4:12])
idle_kb, live_kb, full_kb = int(a[12]), int(a[13]), int(a[14])
p50, p99, mx, api50 = map(float, a[15:19])
lost = int(a[19])
stop, live_stop = a[20], a[21]
read_log, read_metrics, read_took, read_records = map(float, a[22:26])
yes = lambda ok: "met" if ok else "NOT met"
print(f"after a restart with every port bound (load average now: {open('/proc/loadavg').read().split()[0]})")
print(f"{'figure':<44}{'measured':>12}   target (issue 17)")
if math.isnan(last):
    last = cold
print(f"{'cold start to all ports served':<44}{last:>10.2f} s   (the last port attached, in the log)")
print(f"{'  seen in /metrics (polled every 0.1 s)':<44}{cold:>10.2f} s")
print(f"{'  registered (agent started)':<44}{started:>10.2f} s")
print(f"{'  NSDB read done (log)':<44}{read_log:>10.2f} s   (/metrics: {read_metrics:.2f} s; "
      f"{read_records:.0f} records read in {read_took:.2f} s)")
print(f"{'  first port attached':<44}{first:>10.2f} s")
if math.isnan(read_log):
    read_log = read_metrics
after_read = last - read_log
print(f"{'  after the NSDB read (to the last port)':<44}{after_read:>10.2f} s   <= 2 s: {yes(after_read <= 2)}")
print(f"{'    seen in /metrics':<44}{cold - read_metrics:>10.2f} s")
print(f"{'route change to first packet, p50':<44}{p50:>9.1f} ms")
print(f"{'route change to first packet, p99':<44}{p99:>9.1f} ms   <= 100 ms over {changes}: {yes(p99 <= 100 and lost == 0)}")
print(f"{'  max; the PATCH itself (p50); lost':<44}{mx:>9.1f} ms   {api50:.1f} ms; {lost} of {changes} not through within 5 s")
per_port = (full_kb - idle_kb) / n
print(f"{'RSS per port above idle':<44}{per_port:>9.1f} KB   <= 10 KB: {yes(per_port <= 10)}")
print(f"{'  idle; cold-started with every port':<44}{idle_kb / 1024:>9.1f} MB   {full_kb / 1024:.1f} MB")
stop_ok = not stop.startswith(">") and float(stop) <= 2
print(f"{'stop on SIGTERM with every port':<44}{stop:>10} s   <= 2 s: {yes(stop_ok)}")
PY
echo "  the cold start's port opening, as the agent logged it: ${opened:-(not logged)}"
python3 - "$whole_n0" "$whole_s0" "$routes_n0" "$routes_s0" "$whole_n1" "$whole_s1" "$routes_n1" "$routes_s1" <<'PY'
import sys
w0, ws0, r0, rs0, w1, ws1, r1, rs1 = map(float, sys.argv[1:])
mean = lambda s, n: f"{1000 * s / n:.2f} ms each" if n else "none"
print(f"  topologies built before the route changes: {w0:.0f} whole ({mean(ws0, w0)}), {r0:.0f} routes only ({mean(rs0, r0)})")
print(f"  during them: {w1 - w0:.0f} whole ({mean(ws1 - ws0, w1 - w0)}), {r1 - r0:.0f} routes only ({mean(rs1 - rs0, r1 - r0)})")
PY
