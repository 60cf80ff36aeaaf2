#!/usr/bin/env bash
# Measures, from outside, what bound ports cost an agent: its resident
# memory per served port above its idle size, and how long it takes to stop
# on SIGTERM while serving them (issue 17).
#   scripts/bench-ports.sh [ports, default 500]
#   ETCD=1 scripts/bench-ports.sh [ports]: a plexus agent alone (no store, no
#   API) over an etcd, the API in a separate plexus api process.
# A `plexus serve` (embedded store, agent inside) runs in a namespace holding
# the veths' host ends; their other ends wait in a second namespace. Ports
# are created and bound through the API, 20 per bridge;
# once every port is served, each pod end sends one frame (flooded on its
# bridge), so every port has received and sent. PLEXUS_BIN overrides the
# binary (default: a release build). Needs root; everything it creates is
# removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh
ensure_packages ip:iproute2 python3:python3 curl:curl
N=${1:-500}
if [ -z "${PLEXUS_BIN:-}" ]; then
  cargo build --release --bin plexus >/dev/null
  PLEXUS_BIN=$PWD/target/release/plexus
fi
tag=s$$
sw=${tag}sw
pods=${tag}pods
work=$(mktemp -d)
serve=
others=()
cleanup() {
  set +e
  [ -n "$serve" ] && kill "$serve" 2>/dev/null && wait "$serve" 2>/dev/null
  # The API before etcd.
  for ((i = ${#others[@]} - 1; i >= 0; i--)); do
    kill "${others[i]}" 2>/dev/null && wait "${others[i]}" 2>/dev/null
  done
  ip netns del "$sw" 2>/dev/null
  ip netns del "$pods" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
now() { date +%s.%N; }

ip netns add "$sw"
ip netns add "$pods"
ip -n "$sw" link set lo up
for i in $(seq 0 $((N - 1))); do
  echo "link add h$i type veth peer name p$i netns $pods"
  echo "link set h$i up"
done >"$work/sw.batch"
ip -n "$sw" -batch "$work/sw.batch"
for i in $(seq 0 $((N - 1))); do echo "link set p$i up"; done >"$work/pods.batch"
ip -n "$pods" -batch "$work/pods.batch"

api=http://127.0.0.1:18500
if [ -n "${ETCD:-}" ]; then
  metrics=http://127.0.0.1:18501
  ip netns exec "$sw" etcd --data-dir "$work/etcd" --listen-client-urls http://127.0.0.1:23790 \
    --advertise-client-urls http://127.0.0.1:23790 --listen-peer-urls http://127.0.0.1:23800 \
    >"$work/etcd.log" 2>&1 &
  others+=($!)
  mkdir -p "$work/data"
  python3 -c 'import secrets; print(secrets.token_hex(24))' >"$work/data/admin.token"
  ip netns exec "$sw" "$PLEXUS_BIN" api --nsdb etcd://127.0.0.1:23790 --listen 127.0.0.1:18500 \
    --admin-token-file "$work/data/admin.token" >"$work/api.log" 2>&1 &
  others+=($!)
  ip netns exec "$sw" "$PLEXUS_BIN" agent --nsdb etcd://127.0.0.1:23790 --listen 127.0.0.1:18501 \
    --host-name "scale-$tag" >"$work/serve.log" 2>&1 &
  serve=$!
else
  metrics=$api
  ip netns exec "$sw" "$PLEXUS_BIN" serve --data "$work/data" --listen 127.0.0.1:18500 \
    --host-name "scale-$tag" --no-uplink >"$work/serve.log" 2>&1 &
  serve=$!
fi
for _ in $(seq 200); do
  ip netns exec "$sw" curl -fs "$api/healthz" >/dev/null 2>&1 &&
    ip netns exec "$sw" curl -fs "$metrics/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done
sleep 2
idle=$(rss_kb "$serve")

# Create and bind the ports, then wait until the agent serves them all.
ip netns exec "$sw" python3 - "$work/data/admin.token" "$N" "$serve" "$work/unbound" "$api" "$metrics" <<'EOF'
import json, sys, time, urllib.request
token = open(sys.argv[1]).read().strip()
n = int(sys.argv[2])
def rss_kb():
    for line in open(f"/proc/{sys.argv[3]}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
base, metrics = sys.argv[5], sys.argv[6]
def call(method, path, body=None):
    req = urllib.request.Request(base + path, method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": "Bearer " + token, "Content-Type": "application/json"})
    with urllib.request.urlopen(req) as r:
        data = r.read()
        return json.loads(data) if data else None
host = call("GET", "/v1/hosts")["items"][0]["id"]
tenant = call("POST", "/v1/tenants", {"name": "scale"})["id"]
ports = []
for i in range(n):
    if i % 20 == 0:
        bridge = call("POST", "/v1/bridges", {"tenant_id": tenant, "name": f"b{i}"})["id"]
    mac = "02:00:%02x:%02x:%02x:01" % (i >> 16 & 255, i >> 8 & 255, i & 255)
    ports.append(call("POST", f"/v1/bridges/{bridge}/ports", {"mac": mac})["id"])
# The same records unbound: what the store and topology cost, no port served.
time.sleep(2)
open(sys.argv[4], "w").write(str(rss_kb()))
for i, port in enumerate(ports):
    call("PUT", f"/v1/ports/{port}/binding", {"host_id": host, "interface_name": f"h{i}"})
deadline = time.time() + 600
while time.time() < deadline:
    with urllib.request.urlopen(metrics + "/metrics") as r:
        served = sum(1 for l in r.read().decode().splitlines()
                     if l.startswith("plexus_port_packets_total") and 'direction="rx"' in l)
    if served >= n:
        break
    time.sleep(0.2)
else:
    sys.exit(f"only {served} of {n} ports served")
EOF
sleep 2
bound=$(rss_kb "$serve")
# One frame from every pod end (an unknown ethertype to the broadcast MAC).
ip netns exec "$pods" python3 - "$N" <<'EOF'
import socket, sys
for i in range(int(sys.argv[1])):
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind((f"p{i}", 0))
    s.send(b"\xff" * 6 + s.getsockname()[4][:6].ljust(6, b"\0") + b"\x88\xb5" + b"\0" * 46)
    s.close()
EOF
sleep 3
served=$(rss_kb "$serve")
start=$(now)
kill -TERM "$serve"
wait "$serve" || true
stop=$(now)
serve=
python3 - "$N" "$idle" "$served" "$start" "$stop" "$(cat "$work/unbound")" "$bound" <<'EOF'
import sys
n, idle, served, start, stop = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
unbound, bound = int(sys.argv[6]), int(sys.argv[7])
print(f"ports                 {n}")
print(f"idle VmRSS            {idle} KB")
print(f"ports created, unbound {unbound} KB ({(unbound - idle) / n:.1f} KB per port)")
print(f"bound, served         {bound} KB ({(bound - idle) / n:.1f} KB per port)")
print(f"one frame each way    {served} KB")
print(f"per port above idle   {(served - idle) / n:.1f} KB")
print(f"stop on SIGTERM       {stop - start:.2f} s")
EOF
