#!/usr/bin/env bash
# Measures, from outside, what bound ports cost an agent: its resident
# memory per served port above its idle size, and how long it takes to stop
# on SIGTERM while serving them (issue 17).
#   scripts/bench-ports.sh [ports, default 500]
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
cleanup() {
  if [ -n "$serve" ]; then kill "$serve" 2>/dev/null && wait "$serve" 2>/dev/null; fi
  ip netns del "$sw" 2>/dev/null || true
  ip netns del "$pods" 2>/dev/null || true
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

ip netns exec "$sw" "$PLEXUS_BIN" serve --data "$work/data" --listen 127.0.0.1:18500 \
  --host-name "scale-$tag" --no-uplink >"$work/serve.log" 2>&1 &
serve=$!
for _ in $(seq 200); do
  ip netns exec "$sw" curl -fs http://127.0.0.1:18500/healthz >/dev/null 2>&1 && break
  sleep 0.1
done
sleep 2
idle=$(rss_kb "$serve")

# Create and bind the ports, then wait until the agent serves them all.
ip netns exec "$sw" python3 - "$work/data/admin.token" "$N" <<'EOF'
import json, sys, time, urllib.request
token = open(sys.argv[1]).read().strip()
n = int(sys.argv[2])
base = "http://127.0.0.1:18500"
def call(method, path, body=None):
    req = urllib.request.Request(base + path, method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": "Bearer " + token, "Content-Type": "application/json"})
    with urllib.request.urlopen(req) as r:
        data = r.read()
        return json.loads(data) if data else None
host = call("GET", "/v1/hosts")["items"][0]["id"]
tenant = call("POST", "/v1/tenants", {"name": "scale"})["id"]
for i in range(n):
    if i % 20 == 0:
        bridge = call("POST", "/v1/bridges", {"tenant_id": tenant, "name": f"b{i}"})["id"]
    mac = "02:00:%02x:%02x:%02x:01" % (i >> 16 & 255, i >> 8 & 255, i & 255)
    port = call("POST", f"/v1/bridges/{bridge}/ports", {"mac": mac})["id"]
    call("PUT", f"/v1/ports/{port}/binding", {"host_id": host, "interface_name": f"h{i}"})
deadline = time.time() + 600
while time.time() < deadline:
    with urllib.request.urlopen(base + "/metrics") as r:
        served = sum(1 for l in r.read().decode().splitlines()
                     if l.startswith("plexus_port_packets_total") and 'direction="rx"' in l)
    if served >= n:
        break
    time.sleep(0.2)
else:
    sys.exit(f"only {served} of {n} ports served")
EOF
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
python3 - "$N" "$idle" "$served" "$start" "$stop" <<'EOF'
import sys
n, idle, served, start, stop = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
print(f"ports                 {n}")
print(f"idle VmRSS            {idle} KB")
print(f"served VmRSS          {served} KB")
print(f"per port above idle   {(served - idle) / n:.1f} KB")
print(f"stop on SIGTERM       {stop - start:.2f} s")
EOF
