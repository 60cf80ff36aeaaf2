#!/usr/bin/env bash
# The Plexus demo: with `plexus serve` running (PLEXUS_API, PLEXUS_TOKEN set),
# create a tenant with a router and two bridges, put three namespace "pods"
# on them, and show that they ping each other across the router; then
# initialise a second tenant's network in one step (`plexus tenant init`),
# and show its pod and the host reaching each other through the provider
# uplink without NAT (each sees the other's own address).
# Everything it creates (namespaces, veths) is removed on exit.
set -euo pipefail
P=${PLEXUS_BIN:-target/release/plexus}
tag=$$
pods=()
cleanup() {
  for pod in "${pods[@]}"; do
    ip link del "h-$pod" 2>/dev/null || true
    ip netns del "$pod" 2>/dev/null || true
  done
}
trap cleanup EXIT

id() { python3 -c 'import sys,json; print(json.load(sys.stdin)["id"])'; }
host=$($P raw GET /v1/hosts | python3 -c 'import sys,json; print([h for h in json.load(sys.stdin)["items"] if h["alive"]][0]["id"])')
tenant=$($P raw POST /v1/tenants "{\"name\":\"demo-$tag\"}" | id)
router=$($P raw POST /v1/routers "{\"tenant_id\":\"$tenant\",\"name\":\"edge\"}" | id)

# pod NAME BRIDGE IP/24 GATEWAY: sets $port to the new bridge port. (Not
# called in $(...): a subshell would lose the cleanup list.)
pod() {
  local name=$1 bridge=$2 addr=$3 gw=$4 ns="demo$tag-$1"
  ns=${ns:0:15}
  ip netns add "$ns"; pods+=("$ns")
  ip link add "h-$ns" type veth peer name eth0 netns "$ns"
  ip link set "h-$ns" up
  ip -n "$ns" link set lo up; ip -n "$ns" link set eth0 up
  ip -n "$ns" addr add "$addr" dev eth0; ip -n "$ns" route add default via "$gw"
  local mac; mac=$(ip netns exec "$ns" cat /sys/class/net/eth0/address)
  port=$($P raw POST "/v1/bridges/$bridge/ports" \
    "{\"mac\":\"$mac\",\"allowed_addresses\":[{\"mac\":\"$mac\",\"ip\":\"${addr%/*}/32\"}]}" | id)
  $P raw PUT "/v1/ports/$port/binding" "{\"host_id\":\"$host\",\"interface_name\":\"h-$ns\"}" >/dev/null
}

for n in 1 2; do
  bridge=$($P raw POST /v1/bridges "{\"tenant_id\":\"$tenant\",\"name\":\"net$n\"}" | id)
  rport=$($P raw POST "/v1/routers/$router/ports" "{\"address\":\"10.0.$n.1/24\"}" | id)
  bport=$($P raw POST "/v1/bridges/$bridge/ports" '{}' | id)
  $P raw PUT "/v1/ports/$rport/link" "{\"peer_id\":\"$bport\"}" >/dev/null
  eval "bridge$n=$bridge"
done
pod a "$bridge1" 10.0.1.10/24 10.0.1.1
port_a=$port
pod b "$bridge1" 10.0.1.11/24 10.0.1.1
pod c "$bridge2" 10.0.2.10/24 10.0.2.1
sleep 1

$P topology --tenant "demo-$tag"
echo
for target in 10.0.1.11 10.0.1.1 10.0.2.10; do
  echo "== pod a pings $target"
  ip netns exec "${pods[0]}" ping -n -c 3 -i 0.2 -W 1 "$target" | tail -n 2
done
echo
$P trace --port "$port_a" --dst-ip 10.0.2.10

# A tenant network in one step: router linked to the provider router,
# masquerade toward the outside, no NAT between the host and the pods,
# default bridge and pod subnet.
echo
init_out=$($P tenant init "demo-$tag-net")
echo "$init_out"
net=$(echo "$init_out" | sed -n '1s/.*(\(.*\))$/\1/p')
read -r nbridge ngw ncidr < <($P raw GET "/v1/tenants/$net/network" | python3 -c 'import sys,json; n=json.load(sys.stdin); print(n["bridge"]["id"], n["gateway"], n["pod_cidr"])')
naddr=$(python3 -c "import ipaddress,sys; n=ipaddress.ip_network('$ncidr'); print(f'{n[10]}/{n.prefixlen}')")
pod d "$nbridge" "$naddr" "$ngw"
uplink_gw=$($P raw GET /v1/provider | python3 -c 'import sys,json; print(json.load(sys.stdin).get("uplink_gateway") or "")')
sleep 1
if [ -n "$uplink_gw" ]; then
  echo "== pod d (${naddr%/*}, tenant demo-$tag-net) pings the host at $uplink_gw through the provider uplink"
  ip netns exec "${pods[3]}" ping -n -c 3 -i 0.2 -W 1 "$uplink_gw" | tail -n 2
  echo "== the host pings pod d directly"
  ping -n -c 3 -i 0.2 -W 1 "${naddr%/*}" | tail -n 2
fi
