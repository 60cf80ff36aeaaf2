#!/usr/bin/env bash
# Would a PACKET_MMAP receive ring or AF_XDP pay on small packets? One
# namespace floods 64-byte UDP datagrams out of a veth (sendmmsg, as fast as
# it can), the other drains the veth's peer with an AF_PACKET socket as the
# datapath does (PACKET_VNET_HDR, recvmmsg batches of 64), from a V2 ring (a
# 2 KiB frame each, signalled per frame), from a V3 ring (1 MiB blocks), or
# with an AF_XDP socket in copy mode (an XDP program attached to the veth in
# driver mode redirects every frame to it; detached when the receiver exits),
# in alternating rounds, and prints each round's rate and the receiver's CPU
# time per frame (vswitch/examples/rx_ring_bench/).
#   scripts/bench-ring.sh [seconds per round, default 5] [rounds, default 2]
# Needs root. Everything it creates is removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh
ensure_packages ip:iproute2
SECS=${1:-5}
ROUNDS=${2:-2}
cargo build --release -p vswitch --example rx_ring_bench >/dev/null
B=$PWD/target/release/examples/rx_ring_bench
tag=r$$
cleanup() { for ns in tx rx; do ip netns del "${tag}$ns" 2>/dev/null || true; done; }
trap cleanup EXIT
ip netns add "${tag}tx"; ip netns add "${tag}rx"
ip link add eth0 netns "${tag}tx" type veth peer name veth netns "${tag}rx"
ip -n "${tag}tx" addr add 10.99.0.1/24 dev eth0
ip -n "${tag}tx" link set eth0 up
ip -n "${tag}tx" neigh add 10.99.0.2 lladdr 02:00:00:00:00:02 dev eth0 nud permanent
ip -n "${tag}rx" link set veth up
for round in $(seq "$ROUNDS"); do
  for mode in mmsg ring2 ring xdp; do
    ip netns exec "${tag}rx" "$B" recv veth "$mode" "$((SECS + 1))" >"/tmp/$tag.rx" &
    rx=$!
    sleep 0.5
    sent=$(ip netns exec "${tag}tx" "$B" send 10.99.0.2 "$SECS")
    wait "$rx"
    echo "round $round, $(cat "/tmp/$tag.rx"); $sent"
    rm -f "/tmp/$tag.rx"
  done
done
